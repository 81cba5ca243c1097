"""razarctl: the operator's command line for razard.

Every control command is one operation of razard's control interface,
``client.call(Op.<operation>, ...)`` (the operations are defined once, in
:mod:`razard.control`); this module only parses arguments and formats what
comes back. One exception: ``rollback`` with razard stopped works on the
files directly, through the same patch engine and under the same lock.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shlex
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table
from rich.text import Text

from razard import storage
from razard.control import (
    BUSES,
    DEFAULT_CALL_TIMEOUT,
    HEAL_CALL_TIMEOUT,
    ControlClient,
    RazardNotRunning,
)
from razard.control import SupervisorControl as Op  # the operations, each one D-Bus method
from razard.errors import ConfigError, ControlError, RazarError, UnknownComponent
from razard.fleet.ctl import register as register_fleet
from razard.layers import LAYERS
from razard.layout import DEFAULT_CONFIG, LOG_FILE, STATE_LOCK
from razard.triage import (
    OUTPUTS,
    PRIORITIES,
    Entry,
    LogQuery,
    TriageError,
    load_incident,
    parse_time,
    summary,
)
from razard.triage import markdown as incident_markdown

if TYPE_CHECKING:  # razarctl starts faster without what its common commands never use
    from razard.config import Config

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_UNKNOWN_COMPONENT = 2
EXIT_INTERRUPTED = 130
"""Ctrl+C while waiting for razard (128 + SIGINT, as a shell reports it)."""

COMPONENT_KEYS = (
    "name",
    "unit",
    "layer",
    "priority",
    "state",
    "healthy",
    "restarts",
    "quarantined",
    "last_error",
    "since",
)
"""The keys of each component in ``status --json``, always all present."""

QUARANTINE_KEYS = ("component", "reason", "last_error", "attempts", "time")

STATE_STYLES = {
    "healthy": "green",
    "restarting": "yellow",
    "unhealthy": "yellow",
    "escalating": "yellow",
    "starting": "cyan",
    "quarantined": "red",
    "failed": "red",
}

PATCH_KEYS = ("time", "patch_id", "agent", "status", "files", "reason")
"""The columns of ``patches``, in order."""

PATCH_STYLES = {
    "applied": "cyan",
    "kept": "green",
    "reverted": "yellow",
    "refused": "red",
    "aborted": "red",
}

# A table piped into grep or a file should not be folded to 80 columns.
_PIPE_WIDTH = 200


# --- pure helpers (unit-tested) -------------------------------------------------


def sorted_components(components: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Components with exactly :data:`COMPONENT_KEYS`, by priority then name."""
    rows = [{key: c.get(key) for key in COMPONENT_KEYS} for c in components]

    def order(row: Mapping[str, Any]) -> tuple[int, str]:
        priority = row["priority"]
        return (priority if isinstance(priority, int) else sys.maxsize, str(row["name"]))

    return sorted(rows, key=order)


def status_json(status: Mapping[str, Any]) -> dict[str, Any]:
    """What ``status --json`` prints: razard's own state and the stable component rows."""
    return {
        "summary": status.get("summary", ""),
        "ready": bool(status.get("ready", False)),
        "pid": status.get("pid"),
        "version": status.get("version"),
        "components": sorted_components(status.get("components", [])),
    }


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _since(value: object) -> str:
    """An ISO-8601 time as local ``YYYY-MM-DD HH:MM:SS``; anything else as it is."""
    if not isinstance(value, str):
        return _cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def status_table(status: Mapping[str, Any]) -> Table:
    """The ``status`` table: one row per component, state coloured."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("component", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("layer", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("health", no_wrap=True)
    table.add_column("restarts", justify="right", no_wrap=True)
    table.add_column("last error", overflow="fold")
    table.add_column("since", no_wrap=True)
    for row in sorted_components(status.get("components", [])):
        state = _cell(row["state"])
        healthy = row["healthy"]
        if healthy is None:
            health = Text("-")
        else:
            health = Text("yes", style="green") if healthy else Text("no", style="red")
        table.add_row(
            _cell(row["name"]),
            _cell(row["unit"]),
            _cell(row["layer"]),
            Text(state, style=STATE_STYLES.get(state, "")),
            health,
            _cell(row["restarts"]),
            _cell(row["last_error"]),
            _since(row["since"]),
        )
    return table


def quarantine_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The ``quarantine list`` table."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for key, header in zip(
        QUARANTINE_KEYS, ("component", "reason", "last error", "attempts", "time"), strict=True
    ):
        table.add_column(header, overflow="fold", no_wrap=key in ("component", "time"))
    for record in sorted(records, key=lambda r: str(r.get("component"))):
        table.add_row(
            *(
                _since(record.get(key)) if key == "time" else _cell(record.get(key))
                for key in QUARANTINE_KEYS
            )
        )
    return table


def _yes_no(value: object) -> Text:
    return Text("yes", style="green") if value else Text("no", style="red")


def ladder_table(ladder: Mapping[str, Any]) -> Table:
    """The ``ladder`` table: one row per rung, in the order razard tries them."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("agent", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("configured", no_wrap=True)
    table.add_column("skip reason", overflow="fold")
    table.add_column("max attempts", justify="right", no_wrap=True)
    table.add_column("takes over", no_wrap=True)
    for order, rung in enumerate(ladder.get("roster", []), start=1):
        after = rung.get("takes_over_after")
        table.add_row(
            str(order),
            _cell(rung.get("name")),
            _cell(rung.get("kind")),
            _yes_no(rung.get("configured")),
            _cell(rung.get("skip_reason")),
            _cell(rung.get("max_attempts")),
            "-" if after is None else f"after {after} attempts",
        )
    return table


def ladder_summary(ladder: Mapping[str, Any]) -> list[str]:
    """The lines under the ``ladder`` table: the thresholds and modes in force."""
    thresholds = ladder.get("thresholds", {})
    rstar = thresholds.get("rstar")
    warning = thresholds.get("escalation_warning")
    remote = ladder.get("remote_attempts")
    parts = [
        "rStar disabled" if not rstar else f"rStar threshold {rstar} attempts",
        "escalation warning " + ("off" if warning is None else f"after {warning} escalations"),
        "remote attempts " + ("unbounded" if remote is None else str(remote)),
        "long task " + ("on" if ladder.get("long_task") else "off"),
    ]
    lines = ["; ".join(parts)]
    restarts = ladder.get("restart_attempts") or {}
    if restarts:
        lines.append(
            "restart attempts before the ladder: "
            + ", ".join(f"{name} {restarts[name]}" for name in sorted(restarts))
        )
    skipped = ladder.get("no_artifacts") or []
    if skipped and ladder.get("roster"):
        lines.append(
            "repair agents never asked about (no artifacts to patch): " + ", ".join(skipped)
        )
    return lines


_LAYER_STYLE = {"up": "green", "down": "bold red", "unconfigured": "dim", "disabled": "dim"}


def _age(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def chakra_table(layers: Sequence[Mapping[str, Any]]) -> Table:
    """The ``chakra`` table: one row per layer, bottom (root) to top (crown)."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name, kw in (
        ("layer", {"no_wrap": True}),
        ("state", {"no_wrap": True}),
        ("last beat", {"no_wrap": True}),
        ("hz", {"justify": "right", "no_wrap": True}),
        ("window", {"justify": "right", "no_wrap": True}),
        ("sensor", {"overflow": "fold"}),
        ("sources", {"overflow": "fold"}),
        ("healer runs", {"no_wrap": True}),
        ("last heal", {"overflow": "fold"}),
    ):
        table.add_column(name, **kw)
    for layer in layers:
        state = str(layer.get("state", "?"))
        sensor = layer.get("sensor") or {}
        sources = [
            f"{s.get('name')}{' (stale)' if s.get('stale') else ''}"
            for s in layer.get("sources", [])
            if s.get("judged")
        ]
        runs = layer.get("healer_runs") or {}
        heal = layer.get("last_heal") or {}
        hz = layer.get("hz")
        table.add_row(
            _cell(layer.get("layer")),
            Text(
                state + (" (healing)" if layer.get("healing") else ""),
                style=_LAYER_STYLE.get(state, ""),
            ),
            _age(layer.get("pulse_age_s")),
            "-" if hz is None else f"{hz:.3g}",
            f"{layer.get('window_s', 0):g}s",
            _cell(sensor.get("summary"))
            if sensor
            else ("-" if not layer.get("has_sensor") else "no reading yet"),
            ", ".join(sources) or "-",
            ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(runs.items())) or "-",
            f"{heal.get('result', '').replace('_', ' ')}: {heal.get('reason', '')}"
            if heal
            else "-",
        )
    return table


def heal_layer_line(record: Mapping[str, Any]) -> str:
    """One line for ``razarctl chakra heal``'s outcome."""
    by = f" by {record['healed_by']}" if record.get("healed_by") else ""
    dry = " (dry run)" if (record.get("report") or {}).get("dry_run") else ""
    return (
        f"{record.get('layer')}: {record.get('healer')} "
        f"{str(record.get('result', '?')).replace('_', ' ')}{by}{dry}: {record.get('reason', '')}"
    )


def patches_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The ``patches`` table, in the order given (oldest first), status coloured."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for key, header in zip(
        PATCH_KEYS, ("time", "patch", "agent", "status", "files", "reason"), strict=True
    ):
        table.add_column(header, overflow="fold", no_wrap=key in ("time", "patch_id", "status"))
    for record in records:
        status = _cell(record.get("status"))
        files = record.get("files") or []
        table.add_row(
            _since(record.get("time")),
            _cell(record.get("patch_id")),
            _cell(record.get("agent")),
            Text(status, style=PATCH_STYLES.get(status, "")),
            ", ".join(str(f) for f in files) if isinstance(files, list) else _cell(files),
            _cell(record.get("reason")),
        )
    return table


def rollback_line(component: str, record: Mapping[str, Any]) -> str:
    """One line saying what a rollback reverted: the patch(es) and the files."""
    undone = [str(u) for u in record.get("undone") or [] if u != record.get("patch_id")]
    files = record.get("files") or []
    line = f"rolled back {component}: reverted patch {_cell(record.get('patch_id'))}"
    if undone:
        line += f" (and later {', '.join(undone)})"
    return line + f"; files: {', '.join(str(f) for f in files) if files else '-'}"


def rollback_restart_line(component: str, record: Mapping[str, Any]) -> str:
    """What razard did with the unit after a rollback (``restarted`` in the record, if told)."""
    restarted = record.get("restarted")
    if restarted is True:
        return f"razard restarted {component}"
    if restarted is False:
        return (
            f"razard did not restart {component} (it is quarantined): "
            f"`razarctl quarantine release {component}` starts it"
        )
    return f"razard restarts {component} unless it is quarantined"


def heal_line(component: str, outcome: Mapping[str, Any]) -> str:
    """The outcome of ``heal`` in one line."""
    attempts = outcome.get("attempts", 0)
    if not outcome.get("healed"):
        return f"{component}: not healed after {attempts} attempts"
    line = f"{component}: healed"
    if outcome.get("agent"):
        line += f" by {outcome['agent']}"
    if outcome.get("patch_id"):
        line += f" (patch {outcome['patch_id']})"
    return line


# --- plumbing -------------------------------------------------------------------


def _stdout() -> Console:
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=_PIPE_WIDTH)
    return console


def _fail(error: RazarError) -> NoReturn:
    Console(stderr=True).print(Text(f"razarctl: {error}", style="red"), soft_wrap=True)
    sys.exit(EXIT_UNKNOWN_COMPONENT if isinstance(error, UnknownComponent) else EXIT_ERROR)


def _say(message: str) -> None:
    click.echo(message)


_LAZY_COMMANDS = {
    # scrapes the exporters: agents.monitoring and what it loads only for this command
    "verify-monitoring": ("agents.monitoring", "command"),
}
"""Commands defined elsewhere, loaded when named (or listed in ``--help``)."""


class _Group(click.Group):
    """A click group that reports razard's errors as one red line, no traceback,
    and loads :data:`_LAZY_COMMANDS` only when they are used."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RazarError as error:
            _fail(error)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in _LAZY_COMMANDS and name not in self.commands:
            module, attribute = _LAZY_COMMANDS[name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, name)
        return super().get_command(ctx, name)


def _call(ctx: click.Context, action: Callable[[ControlClient], Awaitable[T]]) -> T:
    """Connect as the global options say, run ``action``, disconnect."""
    opts: dict[str, Any] = ctx.find_root().obj

    async def run() -> T:
        client = await ControlClient.connect(
            opts["bus"], opts["address"], deadline_s=opts["timeout"]
        )
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(run())


# --- commands -------------------------------------------------------------------


@click.group(
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Exit status: 0 done; 1 razard refused or could not be reached (or heal did not "
        "heal); 2 unknown component (or a usage error); 130 interrupted by Ctrl+C."
    ),
)
@click.option(
    "--bus",
    type=click.Choice(BUSES),
    default=lambda: os.environ.get("RAZAR_BUS", "system"),
    show_default="$RAZAR_BUS, else system",
    help="The D-Bus bus razard serves on.",
)
@click.option(
    "--address",
    metavar="ADDR",
    default=None,
    help="A D-Bus address to use instead of the bus's usual one (unix:path=...).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_CALL_TIMEOUT,
    show_default=True,
    help="Seconds to wait for razard to answer.",
)
@click.version_option(package_name="razar", prog_name="razarctl")
@click.pass_context
def main(ctx: click.Context, bus: str, address: str | None, timeout: float) -> None:
    """Control razard, the self-healing supervisor: status, start/stop, quarantine, repairs."""
    given = ctx.get_parameter_source("timeout") is not ParameterSource.DEFAULT
    ctx.obj = {"bus": bus, "address": address, "timeout": timeout, "timeout_given": given}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every component's state and health."""
    result = _call(ctx, lambda c: c.call(Op.status))
    if as_json:
        click.echo(json.dumps(status_json(result), indent=2))
        return
    console = _stdout()
    console.print(Text(str(result.get("summary", ""))), soft_wrap=True)
    console.print(status_table(result))


@main.command()
@click.argument("component")
@click.pass_context
def start(ctx: click.Context, component: str) -> None:
    """Start COMPONENT (also undoes `razarctl stop`)."""
    _call(ctx, lambda c: c.call(Op.start_component, component))
    _say(f"started {component}")


@main.command(short_help="Stop COMPONENT; razard leaves it stopped.")
@click.argument("component")
@click.pass_context
def stop(ctx: click.Context, component: str) -> None:
    """Stop COMPONENT and keep razard from healing it (until `start`)."""
    _call(ctx, lambda c: c.call(Op.stop_component, component))
    status = _call(ctx, lambda c: c.call(Op.status))
    state = next(
        (x.get("state") for x in status.get("components", []) if x.get("name") == component), None
    )
    if state == "quarantined":  # a no-op: quarantine already stopped it
        _say(f"{component} is quarantined: its unit is already stopped; nothing to do")
        return
    _say(f"stopped {component}; razard will not restart it until `razarctl start {component}`")


@main.command()
@click.argument("component")
@click.pass_context
def restart(ctx: click.Context, component: str) -> None:
    """Restart COMPONENT."""
    _call(ctx, lambda c: c.call(Op.restart_component, component))
    _say(f"restarted {component}")


@main.group()
def quarantine() -> None:
    """List or release quarantined components."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Show the quarantined components and why."""
    records = _call(ctx, lambda c: c.call(Op.quarantined))
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        _say("no component is quarantined")
        return
    _stdout().print(quarantine_table(records))


@quarantine.command("release")
@click.argument("component")
@click.pass_context
def quarantine_release(ctx: click.Context, component: str) -> None:
    """Release COMPONENT from quarantine; razard supervises it again."""
    _call(ctx, lambda c: c.call(Op.release, component))
    _say(f"released {component} from quarantine")


@main.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read razard's config (an invalid one changes nothing)."""
    _call(ctx, lambda c: c.call(Op.reload))
    _say("razard reloaded its config")


@main.command(short_help="Show razard's journal, filtered (a component, layer, event, ...).")
@click.argument("component", required=False)
@click.option("--component", "component_opt", metavar="NAME", help="Same as COMPONENT.")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    type=click.Choice(LAYERS),
    help="Records about this layer (repeat for several).",
)
@click.option(
    "--event",
    "events",
    multiple=True,
    metavar="EVENT",
    help="Only this event (RAZAR_EVENT, e.g. probe_failed, state_quarantined); repeatable.",
)
@click.option(
    "-p",
    "--priority",
    type=click.Choice(PRIORITIES),
    help="This priority and more severe (journalctl -p).",
)
@click.option("--since", metavar="TEXT", help='From ("1h ago", "today", an ISO time in UTC).')
@click.option("--until", metavar="TEXT", help="Up to (same forms as --since).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(list(OUTPUTS)),
    default="short",
    show_default=True,
    help="short (ISO times), json (one record a line), cat (messages only).",
)
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Show only the last N lines.")
@click.option(
    "--print-command",
    is_flag=True,
    help="Print the journalctl command instead of running it (it works on its own).",
)
@click.pass_context
def logs(
    ctx: click.Context,
    component: str | None,
    component_opt: str | None,
    layers: tuple[str, ...],
    events: tuple[str, ...],
    priority: str | None,
    since: str | None,
    until: str | None,
    follow: bool,
    output: str,
    lines: int | None,
    print_command: bool,
) -> None:
    """Show razard's journal: COMPONENT's records and its unit's output, or every record
    razard wrote, narrowed by --layer, --event, --priority and --since/--until.

    Runs journalctl with RAZAR_* field matches, so the same query works with
    journalctl directly (--print-command shows it). With a component, razarctl asks
    razard for its unit; if razard cannot be reached, only razard's records
    (RAZAR_COMPONENT=COMPONENT) are matched. --since/--until take the times `incident`
    takes, in UTC; journalctl gets them as @<unix time>, so its own reading (local
    time) never applies.
    """
    if component and component_opt and component != component_opt:
        raise click.BadParameter(
            f"two components given ({component!r} and {component_opt!r})", param_hint="--component"
        )
    component = component or component_opt
    now = datetime.now(UTC)  # relative times count from one moment, checked and passed on
    _when(since or None, "--since", now)  # "" is no bound, as journalctl had it
    _when(until or None, "--until", now)
    unit: str | None = None
    if component and not layers and not events:
        unit = _unit_of(ctx, component)
    argv = LogQuery(
        component=component,
        unit=unit,
        layers=layers,
        events=events,
        priority=priority,
        since=since,
        until=until,
        follow=follow,
        output=output,
        lines=lines,
        now=now,
    ).argv()
    if print_command:
        click.echo(shlex.join(argv))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise ControlError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def _unit_of(ctx: click.Context, component: str) -> str | None:
    """The component's unit, from razard; None (with a warning) when razard is not there."""
    try:
        result = _call(ctx, lambda c: c.call(Op.status))
    except UnknownComponent:
        raise
    except ControlError as error:
        Console(stderr=True).print(
            Text(f"razarctl: {error}; showing razard's records for {component} only"),
            style="yellow",
            soft_wrap=True,
        )
        return None
    match = [c for c in result.get("components", []) if c.get("name") == component]
    if not match:
        raise UnknownComponent(component)
    return match[0].get("unit") or None


# --- repairs --------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def ladder(ctx: click.Context, as_json: bool) -> None:
    """Show the repair roster, which rungs are configured, and the thresholds."""
    result = _call(ctx, lambda c: c.call(Op.ladder))
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    console = _stdout()
    console.print(ladder_table(result))
    for line in ladder_summary(result):
        console.print(Text(line), soft_wrap=True)


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def chakra(ctx: click.Context, as_json: bool) -> None:
    """Show each layer agent: state, last beat, pulse (hz), sensor reading, healer runs."""
    if ctx.invoked_subcommand is not None:
        return
    layers = _call(ctx, lambda c: c.call(Op.chakra))
    if as_json:
        click.echo(json.dumps(layers, indent=2, sort_keys=True))
        return
    _stdout().print(chakra_table(layers))
    for line in chakra_actions(layers):
        click.echo(line)


def chakra_actions(layers: Sequence[Mapping[str, Any]]) -> list[str]:
    """Which healer actions work on this host, e.g. ``heart: memory_high no (...)``."""
    out = []
    for layer in layers:
        actions = layer.get("actions") or {}
        if actions:
            said = "; ".join(
                f"{a} {str(v).replace(': ', ' (', 1)})" for a, v in sorted(actions.items())
            )
            out.append(f"{layer.get('layer')} actions on this host: {said}")
    return out


@chakra.command("heal")
@click.argument("layer", type=click.Choice(LAYERS))
@click.option("--dry-run", is_flag=True, help="Print the healer's plan; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the healer's whole record.")
@click.pass_context
def chakra_heal(ctx: click.Context, layer: str, dry_run: bool, as_json: bool) -> None:
    """Run LAYER's healer now; exit 0 healed, 1 not healed, 2 not applicable here."""
    record = _call(ctx, lambda c: c.call(Op.heal_layer, layer, dry_run))
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        _say(heal_layer_line(record))
        steps = (record.get("report") or {}).get("steps") or []
        for step in steps:
            mark = "ok " if step.get("ok") else "bad"
            click.echo(f"  [{mark}] {step.get('step')}: {step.get('detail', '')}")
        for line in (record.get("report") or {}).get("plan") or []:
            click.echo(f"  would: {line}")
    ctx.exit({"healed": 0, "not_applicable": 2}.get(str(record.get("result")), 1))


@main.command()
@click.argument("component")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def patches(ctx: click.Context, component: str, as_json: bool) -> None:
    """List COMPONENT's patch records, oldest first (refused ones too)."""
    records = _call(ctx, lambda c: c.call(Op.patches, component))
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        _say(f"no patch records for {component}")
        return
    _stdout().print(patches_table(records))


@main.command()
@click.argument("component")
@click.argument("patch", required=False)
@click.pass_context
def diff(ctx: click.Context, component: str, patch: str | None) -> None:
    """Show the diff of PATCH of COMPONENT (default: the latest applied patch)."""
    text = _call(ctx, lambda c: c.call(Op.diff, component, patch))
    console = Console()
    if console.is_terminal:
        from rich.syntax import Syntax  # pygments: only for a diff shown on a terminal

        console.print(Syntax(text, "diff", background_color="default", word_wrap=True))
    else:
        click.echo(text, nl=not text.endswith("\n"))


@main.command(short_help="Undo COMPONENT's last kept patch (or back to --to).")
@click.argument("component")
@click.option(
    "--to",
    "to",
    metavar="PATCH",
    default=None,
    help="Roll back to before this kept patch (undoing every later one too).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="razard's config, used only when razard is not running.",
)
@click.pass_context
def rollback(ctx: click.Context, component: str, to: str | None, config_path: Path) -> None:
    """Restore COMPONENT's artifacts as they were before its last kept patch.

    Through razard when it runs (it restarts the unit). When razard is not
    running, the files are restored directly, under the same lock, using
    --config to find the component and the state directory; the unit is then
    NOT restarted.
    """
    try:
        record = _call(ctx, lambda c: c.call(Op.rollback, component, to))
    except RazardNotRunning as error:
        _rollback_offline(error, component, to, config_path)
        return
    _say(rollback_line(component, record))
    _say(rollback_restart_line(component, record))


def _rollback_offline(
    error: RazardNotRunning, component: str, to: str | None, config_path: Path
) -> None:
    """``rollback`` with razard down: the patch engine directly, then say how to restart."""
    # Imported here: every other command only talks to razard.
    from razard.config import load_config
    from razard.repair.patch import PatchEngine

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise ControlError(
            f"{error}; rolling back without it needs razard's config (--config FILE), "
            f"which cannot be used:\n{exc}"
        ) from None
    comp = cfg.component(component)
    if comp is None:
        raise UnknownComponent(component)
    Console(stderr=True).print(
        Text(f"razarctl: {error}; rolling back {component}'s files directly", style="yellow"),
        soft_wrap=True,
    )
    # a razard that is alive but not on the bus (starting, reconnecting) holds this lock:
    # recovering now would undo the patch it is verifying
    lock_path = cfg.daemon.state_dir / STATE_LOCK
    if storage.is_locked(lock_path):
        raise ControlError(
            f"razard is running (it holds {lock_path}) but is not answering on the "
            "bus yet; try again in a moment"
        )
    engine = PatchEngine(cfg.daemon.state_dir)
    with engine.lock():
        for line in engine.recover([comp]):
            _say(line)
        record = engine.rollback(comp, to)
    _say(rollback_line(component, record))
    systemctl = "systemctl --user" if cfg.daemon.bus == "user" else "systemctl"
    _say(
        f"razard is not running: {comp.unit} was NOT restarted. Start razard "
        f"(it starts {component}), or restart the unit yourself: {systemctl} restart {comp.unit}"
    )


@main.command(short_help="Run the repair ladder for COMPONENT now.")
@click.argument("component")
@click.option(
    "--long-task",
    is_flag=True,
    help="Keep asking for patches until COMPONENT is healthy (waits until then or Ctrl+C).",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Plain restarts to try before the repair agents (default: none).",
)
@click.option(
    "--remote-attempts",
    type=click.IntRange(min=0),
    default=None,
    help="Bound on remote agent attempts for this run (default: razard's).",
)
@click.pass_context
def heal(
    ctx: click.Context,
    component: str,
    long_task: bool,
    retries: int | None,
    remote_attempts: int | None,
) -> None:
    """Re-run the handover flow for COMPONENT; exit 0 when healed, 1 when not.

    Waits up to an hour for razard's answer (with --long-task: for as long as
    it takes), unless the global --timeout is given. Ctrl+C only stops
    razarctl waiting (exit 130): razard goes on with the repair, a long task
    until the component is healthy or razard is stopped.
    """
    opts: dict[str, Any] = ctx.find_root().obj
    deadline: float | None
    if opts["timeout_given"]:
        deadline = opts["timeout"]
    else:
        deadline = None if long_task else HEAL_CALL_TIMEOUT
    try:
        outcome = _call(
            ctx,
            lambda c: c.call_within(
                deadline, Op.heal, component, long_task, retries, remote_attempts
            ),
        )
    except KeyboardInterrupt:
        Console(stderr=True).print(
            Text(
                f"razarctl: interrupted; razard goes on healing {component} "
                "(Ctrl+C here does not abort it; see `razarctl status`)",
                style="yellow",
            ),
            soft_wrap=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    _say(heal_line(component, outcome))
    if not outcome.get("healed"):
        sys.exit(EXIT_ERROR)


# --- triage ---------------------------------------------------------------------

KIND_STYLES = {
    "state": "cyan",
    "probe": "yellow",
    "restart": "yellow",
    "healer": "magenta",
    "chakra": "magenta",
    "agent": "blue",
    "patch": "blue",
    "quarantine": "red",
    "alert": "red",
    "operator": "green",
}
CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="razard's config: where its state directory (the logs) is.",
)


def _load_config(config_path: Path) -> Config:
    from razard.config import load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise ControlError(f"cannot read razard's config (--config FILE):\n{exc}") from None


def _when(text: str | None, option: str, now: datetime | None = None) -> float | None:
    """``text`` read by `parse_time` (the one grammar of every --since/--until); a usage
    error naming ``option`` if it cannot be read."""
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except TriageError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def incident_table(entries: Sequence[Entry]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("TIME (UTC)", "KIND", "EVENT", "DETAIL"):
        table.add_column(header, overflow="fold")
    for e in entries:
        table.add_row(
            e.time.replace("T", " ").removesuffix("Z"),
            Text(e.kind, style=KIND_STYLES.get(e.kind, "")),
            e.event,
            e.message,
        )
    return table


@main.command(short_help="One timeline of COMPONENT's incident.")
@click.argument("component")
@click.option("--since", metavar="TEXT", help='From ("2h ago", "today", an ISO time in UTC).')
@click.option("--until", metavar="TEXT", help="Up to (same forms as --since).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (summary and entries).")
@click.option("--markdown", is_flag=True, help="Print Markdown for an incident ticket.")
@CONFIG_OPTION
def incident(
    component: str,
    since: str | None,
    until: str | None,
    as_json: bool,
    markdown: bool,
    config_path: Path,
) -> None:
    """Everything that happened to COMPONENT, oldest first: state changes, probe failures,
    restarts, healer runs, agent invocations, patches applied and reverted, quarantine and
    alerts, from the journal (razar.log where the journal has none), patch_history.jsonl and
    operator_escalations.jsonl. Needs no running razard."""
    if as_json and markdown:
        raise click.UsageError("--json and --markdown are alternatives; give one")
    cfg = _load_config(config_path)
    comp = cfg.component(component)
    if comp is None:
        raise UnknownComponent(component)

    state_dir = cfg.daemon.state_dir
    entries = load_incident(
        component,
        comp.layer,
        state_dir,
        state_dir / LOG_FILE,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
    )
    if as_json:
        body = {
            "component": component,
            "layer": comp.layer,
            "summary": summary(entries),
            "entries": [e.as_dict() for e in entries],
        }
        click.echo(json.dumps(body, indent=2, default=str))
    elif markdown:
        click.echo(incident_markdown(component, entries), nl=False)
    elif not entries:
        _say(f"nothing recorded for {component}" + (f" since {since}" if since else ""))
    else:
        _stdout().print(incident_table(entries))


def escalations_table(records: Sequence[Mapping[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in ("TIME (UTC)", "COMPONENT", "REASON", "COUNT", "TARGETS", "DELIVERED", "WHAT"):
        table.add_column(header, overflow="fold")
    for r in records:
        raw = r.get("targets")
        targets: dict[str, Any] = raw if isinstance(raw, dict) else {}
        delivered = bool(r.get("delivered"))
        table.add_row(
            str(r.get("time", "-")).replace("T", " ").split(".")[0].removesuffix("Z"),
            _cell(r.get("component")),
            _cell(r.get("reason")),
            _cell(r.get("count")),
            ", ".join(f"{k}: {v}" for k, v in sorted(targets.items())) or "-",
            Text("yes" if delivered else "no", style="green" if delivered else "red"),
            _cell(r.get("sample") or r.get("signature")),
        )
    return table


@main.command(short_help="Recent operator escalations and whether they were delivered.")
@click.option("--component", metavar="NAME", help="Only this component's.")
@click.option("--since", metavar="TEXT", help='From ("24h ago", "today", an ISO time in UTC).')
@click.option("--undelivered", is_flag=True, help="Only those not delivered to every target.")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@CONFIG_OPTION
def escalations(
    component: str | None,
    since: str | None,
    undelivered: bool,
    lines: int,
    as_json: bool,
    config_path: Path,
) -> None:
    """Escalations from operator_escalations.jsonl, newest last: component, reason, how
    often the failure recurred, and the delivery state per target (outbox included)."""
    from razard.escalation.history import read_escalations

    cfg = _load_config(config_path)
    records = read_escalations(cfg.daemon.state_dir, since=_when(since, "--since"))
    if component:
        records = [r for r in records if r.get("component") == component]
    if undelivered:
        records = [r for r in records if not r.get("delivered")]
    records = records[-lines:]
    if as_json:
        click.echo(json.dumps(records, indent=2, default=str))
    elif not records:
        _say("no escalations")
    else:
        _stdout().print(escalations_table(records))


register_fleet(main, _stdout)

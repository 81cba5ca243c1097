"""razarctl: the operator's command line for razard.

Every command is one call on razard's control interface (see
:mod:`razard.control`); this module only parses arguments and formats what
comes back.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from razard.control import BUSES, DEFAULT_CALL_TIMEOUT, ControlClient
from razard.errors import ControlError, RazarError, UnknownComponent

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_UNKNOWN_COMPONENT = 2

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

JOURNAL_OUTPUTS = {"short": "short-iso", "json": "json", "cat": "cat"}
"""``logs -o`` choices and the journalctl output mode each means."""

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


def journal_argv(
    name: str,
    unit: str | None,
    since: str | None,
    follow: bool,
    output: str,
    lines: int | None,
) -> list[str]:
    """The journalctl command line showing ``name``'s journal.

    Matches razard's own records about the component (``RAZAR_COMPONENT``) OR
    the unit's output, whether it runs under the system or a user manager;
    ``+`` is journalctl's OR between match groups. Options come before the
    matches. Without ``unit`` only razard's records match.
    """
    if output not in JOURNAL_OUTPUTS:
        raise ValueError(f"unknown output {output!r}: expected one of {', '.join(JOURNAL_OUTPUTS)}")
    argv = ["journalctl", "--no-pager", "-o", JOURNAL_OUTPUTS[output]]
    if since:
        argv += ["--since", since]
    if lines is not None:
        argv += ["-n", str(lines)]
    if follow:
        argv.append("-f")
    argv.append(f"RAZAR_COMPONENT={name}")
    if unit:
        argv += ["+", f"_SYSTEMD_UNIT={unit}", "+", f"_SYSTEMD_USER_UNIT={unit}"]
        if unit.startswith("razar-") and unit.endswith(".service"):
            # units razard writes log under this identifier, even where journald
            # cannot tell which unit a stream belongs to (containers, sandboxes)
            argv += ["+", f"SYSLOG_IDENTIFIER={unit.removesuffix('.service')}"]
    return argv


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


class _Group(click.Group):
    """A click group that reports razard's errors as one red line, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RazarError as error:
            _fail(error)


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
        "Exit status: 0 done; 1 razard refused or could not be reached; "
        "2 unknown component (or a usage error)."
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
    """Control razard, the self-healing supervisor: status, start/stop, quarantine, logs."""
    ctx.obj = {"bus": bus, "address": address, "timeout": timeout}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every component's state and health."""
    result = _call(ctx, lambda c: c.status())
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
    _call(ctx, lambda c: c.start(component))
    _say(f"started {component}")


@main.command(short_help="Stop COMPONENT; razard leaves it stopped.")
@click.argument("component")
@click.pass_context
def stop(ctx: click.Context, component: str) -> None:
    """Stop COMPONENT and keep razard from healing it (until `start`)."""
    _call(ctx, lambda c: c.stop(component))
    _say(f"stopped {component}; razard will not restart it until `razarctl start {component}`")


@main.command()
@click.argument("component")
@click.pass_context
def restart(ctx: click.Context, component: str) -> None:
    """Restart COMPONENT."""
    _call(ctx, lambda c: c.restart(component))
    _say(f"restarted {component}")


@main.group()
def quarantine() -> None:
    """List or release quarantined components."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Show the quarantined components and why."""
    records = _call(ctx, lambda c: c.quarantine_list())
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
    _call(ctx, lambda c: c.quarantine_release(component))
    _say(f"released {component} from quarantine")


@main.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read razard's config (an invalid one changes nothing)."""
    _call(ctx, lambda c: c.reload())
    _say("razard reloaded its config")


@main.command(short_help="Show COMPONENT's journal.")
@click.argument("component")
@click.option("--since", metavar="TEXT", help='Start time, as journalctl takes it ("1h ago").')
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(list(JOURNAL_OUTPUTS)),
    default="short",
    show_default=True,
    help="short (ISO times), json (one record a line), cat (messages only).",
)
@click.option("-n", "--lines", type=click.IntRange(min=0), help="Show only the last N lines.")
@click.pass_context
def logs(
    ctx: click.Context,
    component: str,
    since: str | None,
    follow: bool,
    output: str,
    lines: int | None,
) -> None:
    """Show COMPONENT's journal (its unit's output and razard's records).

    Runs journalctl; if razard cannot be reached, only razard's records
    (RAZAR_COMPONENT=COMPONENT) are matched.
    """
    unit: str | None = None
    try:
        result = _call(ctx, lambda c: c.status())
    except UnknownComponent:
        raise
    except ControlError as error:
        Console(stderr=True).print(
            Text(f"razarctl: {error}; showing razard's records for {component} only"),
            style="yellow",
            soft_wrap=True,
        )
    else:
        match = [c for c in result.get("components", []) if c.get("name") == component]
        if not match:
            raise UnknownComponent(component)
        unit = match[0].get("unit") or None
    argv = journal_argv(component, unit, since, follow, output, lines)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise ControlError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None

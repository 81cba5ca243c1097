"""``razarctl ladder``, ``chakra``, ``patches``, ``diff``, ``rollback`` and ``heal``: the
repair ladder and what it changed.

``rollback`` with razard stopped works on the files directly, through the same patch
engine and under the same lock (`_rollback_offline`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from razard import storage
from razard.controlapi import HEAL_CALL_TIMEOUT, RazardNotRunning
from razard.controlapi import SupervisorControl as Op  # the operations, each one D-Bus method
from razard.ctl.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    call,
    cell,
    local_time,
    say,
    stdout,
    warn,
)
from razard.errors import ConfigError, ControlError, UnknownComponent
from razard.layers import LAYERS
from razard.layout import DEFAULT_CONFIG, STATE_LOCK

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

PATCH_KEYS = ("time", "patch_id", "agent", "status", "files", "reason")
"""The columns of ``patches``, in order."""

PATCH_STYLES = {
    "applied": "cyan",
    "kept": "green",
    "reverted": "yellow",
    "refused": "red",
    "aborted": "red",
}


def _yes_no(value: object) -> Text:
    from rich.text import Text

    return Text("yes", style="green") if value else Text("no", style="red")


def ladder_table(ladder: Mapping[str, Any]) -> Table:
    """The ``ladder`` table: one row per rung, in the order razard tries them."""
    from rich.table import Table

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
            cell(rung.get("name")),
            cell(rung.get("kind")),
            _yes_no(rung.get("configured")),
            cell(rung.get("skip_reason")),
            cell(rung.get("max_attempts")),
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
    from rich.table import Table
    from rich.text import Text

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
            cell(layer.get("layer")),
            Text(
                state + (" (healing)" if layer.get("healing") else ""),
                style=_LAYER_STYLE.get(state, ""),
            ),
            _age(layer.get("pulse_age_s")),
            "-" if hz is None else f"{hz:.3g}",
            f"{layer.get('window_s', 0):g}s",
            cell(sensor.get("summary"))
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
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for key, header in zip(
        PATCH_KEYS, ("time", "patch", "agent", "status", "files", "reason"), strict=True
    ):
        table.add_column(header, overflow="fold", no_wrap=key in ("time", "patch_id", "status"))
    for record in records:
        status = cell(record.get("status"))
        files = record.get("files") or []
        table.add_row(
            local_time(record.get("time")),
            cell(record.get("patch_id")),
            cell(record.get("agent")),
            Text(status, style=PATCH_STYLES.get(status, "")),
            ", ".join(str(f) for f in files) if isinstance(files, list) else cell(files),
            cell(record.get("reason")),
        )
    return table


def rollback_line(component: str, record: Mapping[str, Any]) -> str:
    """One line saying what a rollback reverted: the patch(es) and the files."""
    undone = [str(u) for u in record.get("undone") or [] if u != record.get("patch_id")]
    files = record.get("files") or []
    line = f"rolled back {component}: reverted patch {cell(record.get('patch_id'))}"
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


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def ladder(ctx: click.Context, as_json: bool) -> None:
    """Show the repair roster, which rungs are configured, and the thresholds."""
    result = call(ctx, lambda c: c.call(Op.ladder))
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    from rich.text import Text

    console = stdout()
    console.print(ladder_table(result))
    for line in ladder_summary(result):
        console.print(Text(line), soft_wrap=True)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def chakra(ctx: click.Context, as_json: bool) -> None:
    """Show each layer agent: state, last beat, pulse (hz), sensor reading, healer runs."""
    if ctx.invoked_subcommand is not None:
        return
    layers = call(ctx, lambda c: c.call(Op.chakra))
    if as_json:
        click.echo(json.dumps(layers, indent=2, sort_keys=True))
        return
    stdout().print(chakra_table(layers))
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
    record = call(ctx, lambda c: c.call(Op.heal_layer, layer, dry_run))
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    else:
        say(heal_layer_line(record))
        steps = (record.get("report") or {}).get("steps") or []
        for step in steps:
            mark = "ok " if step.get("ok") else "bad"
            click.echo(f"  [{mark}] {step.get('step')}: {step.get('detail', '')}")
        for line in (record.get("report") or {}).get("plan") or []:
            click.echo(f"  would: {line}")
    ctx.exit({"healed": 0, "not_applicable": 2}.get(str(record.get("result")), 1))


@click.command()
@click.argument("component")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def patches(ctx: click.Context, component: str, as_json: bool) -> None:
    """List COMPONENT's patch records, oldest first (refused ones too)."""
    records = call(ctx, lambda c: c.call(Op.patches, component))
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        say(f"no patch records for {component}")
        return
    stdout().print(patches_table(records))


@click.command()
@click.argument("component")
@click.argument("patch", required=False)
@click.pass_context
def diff(ctx: click.Context, component: str, patch: str | None) -> None:
    """Show the diff of PATCH of COMPONENT (default: the latest applied patch)."""
    text = call(ctx, lambda c: c.call(Op.diff, component, patch))
    from rich.console import Console

    console = Console()
    if console.is_terminal:
        from rich.syntax import Syntax  # pygments: only for a diff shown on a terminal

        console.print(Syntax(text, "diff", background_color="default", word_wrap=True))
    else:
        click.echo(text, nl=not text.endswith("\n"))


@click.command(short_help="Undo COMPONENT's last kept patch (or back to --to).")
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
        record = call(ctx, lambda c: c.call(Op.rollback, component, to))
    except RazardNotRunning as error:
        _rollback_offline(error, component, to, config_path)
        return
    say(rollback_line(component, record))
    say(rollback_restart_line(component, record))


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
    warn(f"razarctl: {error}; rolling back {component}'s files directly", "yellow")
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
            say(line)
        record = engine.rollback(comp, to)
    say(rollback_line(component, record))
    systemctl = "systemctl --user" if cfg.daemon.bus == "user" else "systemctl"
    say(
        f"razard is not running: {comp.unit} was NOT restarted. Start razard "
        f"(it starts {component}), or restart the unit yourself: {systemctl} restart {comp.unit}"
    )


@click.command(short_help="Run the repair ladder for COMPONENT now.")
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
        outcome = call(
            ctx,
            lambda c: c.call_within(
                deadline, Op.heal, component, long_task, retries, remote_attempts
            ),
        )
    except KeyboardInterrupt:
        warn(
            f"razarctl: interrupted; razard goes on healing {component} "
            "(Ctrl+C here does not abort it; see `razarctl status`)",
            "yellow",
        )
        sys.exit(EXIT_INTERRUPTED)
    say(heal_line(component, outcome))
    if not outcome.get("healed"):
        sys.exit(EXIT_ERROR)

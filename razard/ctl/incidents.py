"""``razarctl logs``, ``incident`` and ``escalations``: what happened, from the journal and
razard's records. ``incident`` and ``escalations`` need no running razard (they read the
state directory that --config names); ``logs`` runs journalctl.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from razard.controlapi import SupervisorControl as Op  # the operations, each one D-Bus method
from razard.ctl.app import call, cell, say, stdout, warn
from razard.errors import ConfigError, ControlError, UnknownComponent
from razard.layers import LAYERS
from razard.layout import DEFAULT_CONFIG, LOG_FILE
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
    from rich.table import Table

    from razard.config import Config


@click.command(short_help="Show razard's journal, filtered (a component, layer, event, ...).")
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
        result = call(ctx, lambda c: c.call(Op.status))
    except UnknownComponent:
        raise
    except ControlError as error:
        warn(f"razarctl: {error}; showing razard's records for {component} only", "yellow")
        return None
    match = [c for c in result.get("components", []) if c.get("name") == component]
    if not match:
        raise UnknownComponent(component)
    return match[0].get("unit") or None


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
    from rich.table import Table
    from rich.text import Text

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


@click.command(short_help="One timeline of COMPONENT's incident.")
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
        say(f"nothing recorded for {component}" + (f" since {since}" if since else ""))
    else:
        stdout().print(incident_table(entries))


def escalations_table(records: Sequence[Mapping[str, Any]]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False)
    for header in ("TIME (UTC)", "COMPONENT", "REASON", "COUNT", "TARGETS", "DELIVERED", "WHAT"):
        table.add_column(header, overflow="fold")
    for r in records:
        raw = r.get("targets")
        targets: dict[str, Any] = raw if isinstance(raw, dict) else {}
        delivered = bool(r.get("delivered"))
        table.add_row(
            str(r.get("time", "-")).replace("T", " ").split(".")[0].removesuffix("Z"),
            cell(r.get("component")),
            cell(r.get("reason")),
            cell(r.get("count")),
            ", ".join(f"{k}: {v}" for k, v in sorted(targets.items())) or "-",
            Text("yes" if delivered else "no", style="green" if delivered else "red"),
            cell(r.get("sample") or r.get("signature")),
        )
    return table


@click.command(short_help="Recent operator escalations and whether they were delivered.")
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
        say("no escalations")
    else:
        stdout().print(escalations_table(records))

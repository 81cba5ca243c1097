"""``razarctl status``, ``start``, ``stop``, ``restart``, ``reload`` and ``quarantine``.

``status`` is the command operators and scripts run most, so its path is lean: piped
(not a terminal) its table is laid out here as plain text, column for column what
rich prints, one line per component however long the line (grep sees every row
whole); rich, with colours and the terminal's width, only on a terminal, and there
too the table is laid out here (`status_text`) when it fits, as rich's own table
would show it, which costs a quarter of a second at 500 rows (issue 18).
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from razard.controlapi import SupervisorControl as Op  # the operations, each one D-Bus method
from razard.ctl.app import call, cell, is_terminal, local_time, say, stdout

if TYPE_CHECKING:
    from rich.table import Table
    from rich.text import Text

    from razard.controlsync import SyncControlClient

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

HEALTH_STYLES = {"yes": "green", "no": "red"}

STATUS_COLUMNS = (
    ("component", "left"),
    ("unit", "left"),
    ("layer", "left"),
    ("state", "left"),
    ("health", "left"),
    ("restarts", "right"),
    ("last error", "left"),
    ("since", "left"),
)
"""The ``status`` table's headers and how each column is justified."""


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


def _health(healthy: object) -> str:
    return "-" if healthy is None else ("yes" if healthy else "no")


def status_rows(status: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The ``status`` table's cells, one tuple per component (:data:`STATUS_COLUMNS`)."""
    return [
        (
            cell(row["name"]),
            cell(row["unit"]),
            cell(row["layer"]),
            cell(row["state"]),
            _health(row["healthy"]),
            cell(row["restarts"]),
            cell(row["last_error"]),
            local_time(row["since"]),
        )
        for row in sorted_components(status.get("components", []))
    ]


def status_table(status: Mapping[str, Any]) -> Table:
    """The ``status`` table for a terminal: one row per component, state coloured."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, justify in STATUS_COLUMNS:
        if header == "last error":
            table.add_column(header, overflow="fold")
        else:
            right = justify == "right"
            table.add_column(header, justify="right" if right else "left", no_wrap=True)
    for name, unit, layer, state, health, restarts, error, since in status_rows(status):
        table.add_row(
            name,
            unit,
            layer,
            Text(state, style=STATE_STYLES.get(state, "")),
            Text(health, style=HEALTH_STYLES.get(health, "")),
            restarts,
            error,
            since,
        )
    return table


def _printable(text: str) -> str:
    """One line of a plain table: whitespace as a space, other control characters as "?"."""
    if text.isprintable():
        return text
    return "".join(
        ch
        if ch.isprintable()
        else " "
        if ch in "\t\n\r"
        else "?"
        if unicodedata.category(ch) == "Cc"
        else ch
        for ch in text
    )


def _width(text: str) -> int:
    """Terminal cells ``text`` takes (wide East Asian characters two, combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(
        0
        if unicodedata.combining(ch)
        else 2
        if unicodedata.east_asian_width(ch) in ("W", "F")
        else 1
        for ch in text
    )


def plain_table(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[str]]) -> list[str]:
    """A table laid out as rich lays out ``Table(box=None, pad_edge=False)`` (two spaces
    between columns, each cell padded to its column), never folded: one line per row."""
    cells = [[_printable(c) for c in row] for row in rows]
    headers = [header for header, _ in columns]
    widths = [_width(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], _width(c))

    def line(values: Sequence[str]) -> str:
        out = []
        for (_, justify), width, value in zip(columns, widths, values, strict=True):
            pad = " " * (width - _width(value))
            out.append(pad + value if justify == "right" else value + pad)
        return "  ".join(out)

    return [line(headers), *(line(row) for row in cells)]


def status_lines(status: Mapping[str, Any]) -> list[str]:
    """What a piped ``razarctl status`` prints: the summary, then the table."""
    return [
        _printable(str(status.get("summary", ""))),
        *plain_table(STATUS_COLUMNS, status_rows(status)),
    ]


_EMOJI_CODE = re.compile(r":[^\s:]*[A-Za-z][^\s:]*:")
"""What rich would read as an emoji code (``:warning:``) in a str cell."""


def _as_rich_prints(cell: str) -> bool:
    """Whether rich prints the str ``cell`` as it is: plain ASCII (cell width its length),
    no markup (``[``), no emoji code, no control character."""
    return (
        cell.isascii() and cell.isprintable() and "[" not in cell and not _EMOJI_CODE.search(cell)
    )


def status_text(status: Mapping[str, Any], width: int) -> Text | None:
    """The ``status`` table for a terminal ``width`` cells wide, as :func:`status_table`
    shows it (bold headers, coloured state and health), laid out here: rich's table
    measures and renders every cell, ~0.5 ms a row (a quarter of a second at 500).

    None when rich would lay it out otherwise: the table wider than the terminal (rich
    folds the last error and crops), or a cell rich reads (markup, emoji codes,
    non-ASCII, control characters); then :func:`status_table` prints it.
    """
    from rich.text import Span, Text

    rows = status_rows(status)
    if not all(_as_rich_prints(c) for row in rows for c in row):
        return None
    headers = [header for header, _ in STATUS_COLUMNS]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    if sum(widths) + 2 * (len(widths) - 1) > width:
        return None
    justify = [j for _, j in STATUS_COLUMNS]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if j == "right" else c.ljust(w)
            for c, w, j in zip(cells, widths, justify, strict=True)
        )

    # One Text and its spans (all ASCII: a character is a cell): far cheaper than a
    # Text per cell. Each style covers the cell padded to its column, as in rich's table.
    starts = [sum(widths[:i]) + 2 * i for i in range(len(widths))]
    lines = [line(headers)]
    spans = [Span(0, len(lines[0]), "bold")]
    offset = len(lines[0]) + 1
    for row in rows:
        for i, styles in ((3, STATE_STYLES), (4, HEALTH_STYLES)):
            if style := styles.get(row[i]):
                spans.append(Span(offset + starts[i], offset + starts[i] + widths[i], style))
        lines.append(line(row))
        offset += len(lines[-1]) + 1
    return Text("\n".join(lines), spans=spans, end="")


def quarantine_table(records: Sequence[Mapping[str, Any]]) -> Table:
    """The ``quarantine list`` table."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for key, header in zip(
        QUARANTINE_KEYS, ("component", "reason", "last error", "attempts", "time"), strict=True
    ):
        table.add_column(header, overflow="fold", no_wrap=key in ("component", "time"))
    for record in sorted(records, key=lambda r: str(r.get("component"))):
        table.add_row(
            *(
                local_time(record.get(key)) if key == "time" else cell(record.get(key))
                for key in QUARANTINE_KEYS
            )
        )
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show every component's state and health."""
    result = call(ctx, lambda c: c.call(Op.status))
    if as_json:
        click.echo(json.dumps(status_json(result), indent=2))
        return
    if not is_terminal(sys.stdout):
        click.echo("\n".join(status_lines(result)))
        return
    from rich.text import Text

    console = stdout()
    console.print(Text(str(result.get("summary", ""))), soft_wrap=True)
    fast = status_text(result, console.width)
    console.print(status_table(result) if fast is None else fast, soft_wrap=fast is not None)


@click.command()
@click.argument("component")
@click.pass_context
def start(ctx: click.Context, component: str) -> None:
    """Start COMPONENT (also undoes `razarctl stop`)."""
    call(ctx, lambda c: c.call(Op.start_component, component))
    say(f"started {component}")


@click.command(short_help="Stop COMPONENT; razard leaves it stopped.")
@click.argument("component")
@click.pass_context
def stop(ctx: click.Context, component: str) -> None:
    """Stop COMPONENT and keep razard from healing it (until `start`)."""

    def stop_then_status(c: SyncControlClient) -> dict[str, Any]:
        c.call(Op.stop_component, component)
        return c.call(Op.status)

    status = call(ctx, stop_then_status)  # one connection for both calls
    state = next(
        (x.get("state") for x in status.get("components", []) if x.get("name") == component), None
    )
    if state == "quarantined":  # a no-op: quarantine already stopped it
        say(f"{component} is quarantined: its unit is already stopped; nothing to do")
        return
    say(f"stopped {component}; razard will not restart it until `razarctl start {component}`")


@click.command()
@click.argument("component")
@click.pass_context
def restart(ctx: click.Context, component: str) -> None:
    """Restart COMPONENT."""
    call(ctx, lambda c: c.call(Op.restart_component, component))
    say(f"restarted {component}")


@click.group()
def quarantine() -> None:
    """List or release quarantined components."""


@quarantine.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def quarantine_list(ctx: click.Context, as_json: bool) -> None:
    """Show the quarantined components and why."""
    records = call(ctx, lambda c: c.call(Op.quarantined))
    if as_json:
        click.echo(json.dumps(records, indent=2, sort_keys=True))
        return
    if not records:
        say("no component is quarantined")
        return
    stdout().print(quarantine_table(records))


@quarantine.command("release")
@click.argument("component")
@click.pass_context
def quarantine_release(ctx: click.Context, component: str) -> None:
    """Release COMPONENT from quarantine; razard supervises it again."""
    call(ctx, lambda c: c.call(Op.release, component))
    say(f"released {component} from quarantine")


@click.command()
@click.pass_context
def reload(ctx: click.Context) -> None:
    """Re-read razard's config (an invalid one changes nothing)."""
    call(ctx, lambda c: c.call(Op.reload))
    say("razard reloaded its config")

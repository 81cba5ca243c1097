"""``razarctl fleet ...``: the fleet as etcd holds it, read (and the breaker reset) straight
from etcd with the node's ``[fleet]`` config; no running razard needed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from razard.errors import ConfigError, ControlError
from razard.fleet.config import FleetConfig
from razard.layout import DEFAULT_CONFIG

if TYPE_CHECKING:  # the etcd client (and httpx) load only when a fleet command runs
    from razard.fleet.core import Fix, FleetStore

T = TypeVar("T")


def plain(value: object, limit: int = 200) -> str:
    """A value read from etcd (anyone with access may have written it) as one line of
    text: control characters (terminal escapes, newlines) shown as "?"."""
    text = "-" if value is None or value == "" else str(value)
    return "".join("?" if ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 else ch for ch in text[:limit])


def _cell(value: object, style: str = "") -> Text:
    """A table cell: plain text, never Rich markup."""
    return Text(plain(value), style=style)


def _when(ts: object) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "-"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "-"


def fleet_config(config_path: Path) -> FleetConfig:
    from razard.config import load_config

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        raise ControlError(f"cannot read razard's config (--config FILE):\n{exc}") from None
    if not cfg.fleet.enabled:
        raise ControlError(f"{config_path} has no [fleet] table: this node is in no fleet")
    return cfg.fleet


def run_store(config_path: Path, action: Callable[[FleetStore], Awaitable[T]]) -> T:
    from razard.fleet.core import FleetStore
    from razard.fleet.etcd import EtcdError

    store = FleetStore(fleet_config(config_path))

    async def run() -> T:
        try:
            return await action(store)
        except EtcdError as exc:
            raise ControlError(f"fleet: {exc}") from None
        finally:
            await store.close()

    return asyncio.run(run())


def status_lines(status: Mapping[str, Any]) -> list[str]:
    b = status["breaker"]
    budget = status["budget"]
    lines = [
        f"fleet {plain(status['prefix'])}: {len(status['nodes'])} node(s), "
        f"budget {budget['held']}/{budget['slots']} slot(s) held "
        f"(configured {budget['configured']})",
    ]
    if b.get("tripped"):
        lines.append(f"breaker: TRIPPED since {_when(b.get('since'))}: {plain(b.get('reason'))}")
        lines.append("  reset with: razarctl fleet breaker reset")
    else:
        lines.append("breaker: closed")
    for s in b.get("signatures", []):
        lines.append(
            f"AI patching stopped for signature {plain(s['signature'] or s['hash'])!r} "
            f"(on {plain(', '.join(s['nodes']) or '?')}, since {_when(s['since'])})"
        )
    fixes = status["fixes"]
    lines.append(f"shared fixes: {fixes['total']} ({fixes['withdrawn']} withdrawn)")
    if status["invalid_keys"]:
        lines.append(
            f"ignored {len(status['invalid_keys'])} key(s) under the prefix razar did not write"
        )
    return lines


def nodes_table(nodes: Sequence[Mapping[str, Any]], slots: Sequence[Mapping[str, Any]]) -> Table:
    holding: dict[str, list[str]] = {}
    for s in slots:
        holding.setdefault(str(s["node"]), []).append(f"{s['action']} since {_when(s['since'])}")
    table = Table(box=None, pad_edge=False)
    for header in (
        "NODE",
        "VERSION",
        "HEALTHY",
        "RESTARTING",
        "QUARANTINED",
        "CHAKRA",
        "SLOT",
        "LAST ALERT",
    ):
        table.add_column(header, overflow="fold")
    for n in nodes:
        q = int(n["quarantined"])
        table.add_row(
            _cell(n["node"]),
            _cell(n["version"]),
            _cell(n["healthy"]),
            _cell(n["restarting"]),
            _cell(q, "red" if q else ""),
            _cell(n["chakra"]),
            _cell("; ".join(holding.pop(str(n["node"]), []))),
            _cell(n["last_alert"]),
        )
    for node, held in holding.items():  # a slot whose node record is gone (lease ending)
        table.add_row(
            _cell(node),
            *(_cell("") for _ in range(5)),
            _cell("; ".join(held)),
            _cell("(no record)"),
        )
    return table


def fixes_table(fixes: Sequence[Fix]) -> Table:
    table = Table(box=None, pad_edge=False)
    for header in (
        "ID",
        "COMPONENT",
        "SIGNATURE",
        "ARTIFACT",
        "BY",
        "PUBLISHED",
        "KEPT",
        "FAILED",
        "STATE",
    ):
        table.add_column(header, overflow="fold")
    for f in fixes:
        table.add_row(
            _cell(f.id[:12]),
            _cell(f.component),
            _cell(f.signature[:80]),
            _cell(f.artifact_hash[:12]),
            _cell(f.node),
            _cell(_when(f.published)),
            _cell(", ".join(f.kept)),
            _cell(", ".join(f.failures)),
            Text("withdrawn", style="red") if f.withdrawn else Text("offered", style="green"),
        )
    return table


def register(main: click.Group, _console: Callable[[], Console]) -> None:
    """Add ``razarctl fleet`` to ``main``; tables print on ``_console()`` (razarctl's
    console: wide enough when piped)."""
    config_option = click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_CONFIG,
        show_default=True,
        help="razard's config: its [fleet] table says where etcd is.",
    )

    @main.group()
    def fleet() -> None:
        """The fleet in etcd ([fleet] in razard.toml): nodes, budget, breaker, shared fixes."""

    @fleet.command("status")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @config_option
    def fleet_status(as_json: bool, config_path: Path) -> None:
        """Every node and its counts, who holds budget slots since when, the breaker."""
        status = run_store(config_path, lambda s: s.status())
        if as_json:
            click.echo(json.dumps(status, indent=2))
            return
        for line in status_lines(status):
            click.echo(line)
        _console().print(nodes_table(status["nodes"], status["slots"]))

    @fleet.command("fixes")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (diffs included).")
    @config_option
    def fleet_fixes(as_json: bool, config_path: Path) -> None:
        """Fixes shared through the fleet, oldest first; withdrawn ones included."""
        fixes = run_store(config_path, lambda s: s.list_fixes())
        if as_json:
            click.echo(json.dumps([f.as_dict() for f in fixes], indent=2))
        elif not fixes:
            click.echo("no shared fixes")
        else:
            _console().print(fixes_table(fixes))

    @fleet.group("breaker")
    def breaker() -> None:
        """The fleet's circuit breaker."""

    @breaker.command("reset")
    @config_option
    def breaker_reset(config_path: Path) -> None:
        """Close the breaker (and every stopped signature) and start a fresh window."""
        cleared = run_store(config_path, lambda s: s.reset_breaker())
        if cleared["breaker_keys"]:
            click.echo(
                f"breaker reset: {cleared['breaker_keys']} trip(s) cleared, "
                f"{cleared['events']} event(s) of the window forgotten"
            )
        else:
            click.echo("breaker was not tripped; the window's events were cleared")

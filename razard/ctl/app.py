"""razarctl's group, its global options and the plumbing every command shares.

``main`` (the click group: --bus, --address, --timeout), `call` (connect, run one
operation of razard's control interface, disconnect), how errors and lines are
printed, and the cell formats the tables share. rich is imported only where a table
or a coloured line is printed on a terminal: a piped ``razarctl status`` never loads
it; and razard is reached through the blocking client, without asyncio or dbus-fast's
buses (issue 18: razarctl's start-to-exit).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from collections.abc import Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from razard.controlapi import BUSES, DEFAULT_CALL_TIMEOUT
from razard.errors import RazarError, UnknownComponent

if TYPE_CHECKING:
    from rich.console import Console

    from razard.controlsync import SyncControlClient

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_UNKNOWN_COMPONENT = 2
EXIT_INTERRUPTED = 130
"""Ctrl+C while waiting for razard (128 + SIGINT, as a shell reports it)."""

# A table piped into grep or a file should not be folded to 80 columns.
PIPE_WIDTH = 200


def cell(value: object) -> str:
    """A table cell: "-" for nothing."""
    return "-" if value is None or value == "" else str(value)


def local_time(value: object) -> str:
    """An ISO-8601 time as local ``YYYY-MM-DD HH:MM:SS``; anything else as it is."""
    if not isinstance(value, str):
        return cell(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def is_terminal(stream: IO[str]) -> bool:
    """Whether rich would treat ``stream`` as a terminal (colours, its width), decided
    without importing rich: a TTY, or FORCE_COLOR / TTY_COMPATIBLE asking for one."""
    env = os.environ
    if env.get("TTY_COMPATIBLE") == "0":
        return False
    if env.get("FORCE_COLOR") or env.get("TTY_COMPATIBLE") == "1":
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def stdout() -> Console:
    """rich's console on stdout; wide enough not to fold a table piped into a file."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=PIPE_WIDTH)
    return console


def warn(message: str, style: str) -> None:
    """One line on stderr, in ``style`` on a terminal (plain text otherwise, never markup)."""
    if is_terminal(sys.stderr):
        from rich.console import Console
        from rich.text import Text

        Console(stderr=True).print(Text(message, style=style), soft_wrap=True)
    else:
        click.echo(message, err=True)


def fail(error: RazarError) -> NoReturn:
    warn(f"razarctl: {error}", "red")
    sys.exit(EXIT_UNKNOWN_COMPONENT if isinstance(error, UnknownComponent) else EXIT_ERROR)


def say(message: str) -> None:
    click.echo(message)


def _command(module: str, attribute: str) -> click.Command:
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command)
    return command


def _fleet_command() -> click.Command:
    from razard.fleet.ctl import register

    holder = click.Group()
    register(holder, stdout)
    return holder.commands["fleet"]


_IN = {
    "razard.ctl.components": ("status", "start", "stop", "restart", "reload", "quarantine"),
    "razard.ctl.repairs": ("ladder", "chakra", "patches", "diff", "rollback", "heal"),
    "razard.ctl.incidents": ("logs", "incident", "escalations"),
}

COMMANDS: dict[str, Callable[[], click.Command]] = {
    **{
        name: functools.partial(_command, module, name)
        for module, names in _IN.items()
        for name in names
    },
    # scrapes the exporters: agents.monitoring and what it loads only for this command
    "verify-monitoring": functools.partial(_command, "agents.monitoring", "command"),
    # etcd: its client and httpx
    "fleet": _fleet_command,
}
"""Every command of ``razarctl``, each loaded when named (or listed in ``--help``): a
command imports only its own module (``status`` neither the journal reader nor the
patch engine's helpers, nor etcd's client)."""


SUMMARIES: dict[str, tuple[str, bool]] = {
    "chakra": (
        "Show each layer agent: state, last beat, pulse (hz), sensor reading, healer runs.",
        False,
    ),
    "diff": ("Show the diff of PATCH of COMPONENT (default: the latest applied patch).", False),
    "escalations": ("Recent operator escalations and whether they were delivered.", True),
    "fleet": (
        "The fleet in etcd ([fleet] in razard.toml): nodes, budget, breaker, shared fixes.",
        False,
    ),
    "heal": ("Run the repair ladder for COMPONENT now.", True),
    "incident": ("One timeline of COMPONENT's incident.", True),
    "ladder": ("Show the repair roster, which rungs are configured, and the thresholds.", False),
    "logs": ("Show razard's journal, filtered (a component, layer, event, ...).", True),
    "patches": ("List COMPONENT's patch records, oldest first (refused ones too).", False),
    "quarantine": ("List or release quarantined components.", False),
    "reload": ("Re-read razard's config (an invalid one changes nothing).", False),
    "restart": ("Restart COMPONENT.", False),
    "rollback": ("Undo COMPONENT's last kept patch (or back to --to).", True),
    "start": ("Start COMPONENT (also undoes `razarctl stop`).", False),
    "status": ("Show every component's state and health.", False),
    "stop": ("Stop COMPONENT; razard leaves it stopped.", True),
    "verify-monitoring": (
        "Scrape the node's exporters (razard, node_exporter, the GPU exporter, cAdvisor, "
        "custom ones) and report unreachable endpoints, missing metric families and stale "
        "readings.",
        False,
    ),
}
"""What ``razarctl --help`` lists for each of :data:`COMMANDS` without loading it: the
command's ``short_help`` (True) or the first sentence of its help (False).
``tests/unit/test_ctl.py`` checks each against the command itself."""


def summary_stub(name: str) -> click.Command:
    """A stand-in for command ``name`` that lists in ``--help`` as the command does."""
    text, short = SUMMARIES[name]
    return click.Command(name, short_help=text) if short else click.Command(name, help=text)


class _Group(click.Group):
    """A click group that reports razard's errors as one red line, no traceback,
    and loads each of :data:`COMMANDS` only when it is used."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RazarError as error:
            fail(error)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, from :data:`SUMMARIES` for the commands not
        loaded (listing them loads none of their modules)."""
        rows = [
            (name, self.commands.get(name) or summary_stub(name))
            for name in self.list_commands(ctx)
        ]
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in rows])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in COMMANDS and name not in self.commands:
            self.add_command(COMMANDS[name](), name)
        return super().get_command(ctx, name)


def call(ctx: click.Context, action: Callable[[SyncControlClient], T]) -> T:
    """Connect as the global options say, run ``action``, disconnect.

    The blocking client: no event loop, nor dbus-fast's asyncio bus, to start.
    """
    from razard.controlsync import SyncControlClient

    opts: dict[str, Any] = ctx.find_root().obj
    with SyncControlClient.connect(
        opts["bus"], opts["address"], deadline_s=opts["timeout"]
    ) as client:
        return action(client)


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

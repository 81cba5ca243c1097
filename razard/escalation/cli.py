"""The notifier outside razard: ``--once`` (the timer), ``--follow`` (a service).

razard runs the notifier itself when its config has an ``[escalation]``
table; this entry point is for nodes where razard is stopped, or to run it on
its own. Both hold the same lock, so while razard's notifier is active a run
here says so and exits 0.

Exit status: 0 done (or razard's notifier is active), 1 the journal or the
state directory could not be used, 2 the config is invalid.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

import click

from razard import clirun
from razard.config import load_config
from razard.errors import ConfigError, RazarError
from razard.escalation.classify import RAZARD_IDENTIFIER
from razard.escalation.notifier import EscalationNotifier, NotifierBusy, PassResult
from razard.journal import EventLog
from razard.layout import DEFAULT_CONFIG

IDENTIFIER = "razar-notifier"


PROG = "escalation_notifier.py"


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Read razard's journal and repair logs; raise and deliver operator alerts.",
    epilog="Exit status: 0 done (or razard's notifier is active), 1 the journal or the "
    "state directory could not be used, 2 the config is invalid or a usage error.",
)
@click.option(
    "--config",
    "config_path",
    default=str(DEFAULT_CONFIG),
    show_default=True,
    metavar="PATH",
    help="razard's config.",
)
@click.option("--once", is_flag=True, help="Read what is new, deliver, exit (the default).")
@click.option("--follow", is_flag=True, help="Keep running until SIGTERM.")
@click.option(
    "--journal-arg",
    "journal_args",
    multiple=True,
    metavar="ARG",
    help="Extra journalctl option, e.g. --journal-arg=--directory=/var/log/journal (repeatable).",
)
@click.option(
    "--identifier",
    default=RAZARD_IDENTIFIER,
    show_default=True,
    help="razard's SYSLOG_IDENTIFIER in the journal.",
)
@click.pass_context
def command(
    ctx: click.Context,
    config_path: str,
    once: bool,
    follow: bool,
    journal_args: tuple[str, ...],
    identifier: str,
) -> None:
    """The notifier's command line; exits with :func:`notify`'s status."""
    if once and follow:
        raise click.UsageError("--once and --follow are alternatives; give one", ctx)
    ctx.exit(notify(config_path, follow=follow, journal_args=journal_args, identifier=identifier))


def main(argv: Sequence[str] | None = None) -> int:
    """``escalation_notifier.py [--config PATH] [--once | --follow] ...``; the exit status."""
    return clirun.run(command, argv, prog_name=PROG)


def notify(config_path: str, *, follow: bool, journal_args: Sequence[str], identifier: str) -> int:
    """One pass (or, with ``follow``, run until SIGTERM); the exit status."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        print(f"escalation_notifier: {e}", file=sys.stderr)
        return 2
    cfg = config.escalation
    if not cfg.enabled:
        print(
            f"escalation_notifier: {config.source} has no enabled [escalation] table; nothing to do"
        )
        return 0
    if journal_args:
        cfg = replace(cfg, journal_args=(*cfg.journal_args, *journal_args))
    events = EventLog(
        None, identifier=IDENTIFIER, mirror_to_stderr="JOURNAL_STREAM" not in os.environ
    )
    notifier = EscalationNotifier(
        cfg,
        config.daemon.state_dir,
        lambda: config.components,
        events,
        identifier=identifier,
    )
    try:
        notifier.lock()
    except NotifierBusy as e:
        print(f"escalation_notifier: razard's notifier is active, nothing to do ({e})")
        return 0
    except RazarError as e:
        print(f"escalation_notifier: {e}", file=sys.stderr)
        return 1
    try:
        if follow:
            asyncio.run(_follow(notifier))
            return 0
        result = asyncio.run(_once(notifier))
    except RazarError as e:
        print(f"escalation_notifier: {e}", file=sys.stderr)
        return 1
    finally:
        notifier.unlock()
    print(
        f"escalation_notifier: {result.entries} journal entries, {result.records} log records; "
        f"{len(result.raised)} raised, {len(result.resolved)} resolved; "
        f"{result.delivered} delivered, {result.failed} failed, {result.outbox} in the outbox"
    )
    return 0


async def _once(notifier: EscalationNotifier) -> PassResult:
    total = PassResult()
    async with notifier.client() as client:
        while True:
            r = await notifier.run_once(client)
            total.entries += r.entries
            total.records += r.records
            total.raised += r.raised
            total.resolved += r.resolved
            total.delivered += r.delivered
            total.failed += r.failed
            total.outbox = r.outbox
            if not r.full:
                return total


async def _follow(notifier: EscalationNotifier) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await notifier.run()
    except asyncio.CancelledError:
        pass

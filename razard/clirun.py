"""Run a click command as a function that returns its exit status.

razar's command lines are click commands. Those that are also called as
functions (``agents.monitoring.main``, a healer's ``run``, the escalation
notifier's ``main``: tests and scripts call them with an argv) go through
:func:`run`, which gives back the exit status instead of leaving the process:
0 or what the command passed to ``ctx.exit``; 2 for a usage error (click's
message on stderr); 0 after ``--help``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


def run(
    command: click.Command,
    argv: Sequence[str] | None = None,
    *,
    prog_name: str | None = None,
    obj: Any = None,
) -> int:
    """Run ``command`` on ``argv`` (None: ``sys.argv[1:]``); its exit status.

    ``obj`` becomes the context's object (``ctx.find_object`` reads it).
    """
    try:
        result = command.main(
            args=None if argv is None else list(argv),
            prog_name=prog_name,
            standalone_mode=False,
            obj=obj,
        )
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 1
    return result if isinstance(result, int) else 0

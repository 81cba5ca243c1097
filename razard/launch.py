"""``razard``'s entry point: the daemon's own command line without click.

razard runs for the node's whole life, and every module it imports stays in its
memory: click is about 1 MiB of it (issue 18's footprint target), for parsing a
handful of options once. So a plain command line (``razard [--config FILE]
[--retries N] [--remote-attempts N] [--long-task] [--debug]``, each option at most
once) is read here, and everything else (``--help``, ``--version``, the
subcommands, a bad value, ``RAZARD_DEBUG`` in the environment) goes to the click
CLI in :mod:`razard.cli`, which stays the one definition of the options, their help
and their errors. A test checks that both read every plain command line alike.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from razard.layout import DEFAULT_CONFIG

#: valued options and their keyword in `razard.daemon.run_main`
_VALUED = {
    "--config": "config_path",
    "--retries": "retries",
    "--remote-attempts": "remote_attempts",
}
#: flags and their keyword
_FLAGS = {"--long-task": "long_task", "--debug": "debug"}
#: the bounds razard.cli gives --retries and --remote-attempts
_COUNT_MAX = 10000


def run_args(argv: Sequence[str], env: Mapping[str, str]) -> dict[str, Any] | None:
    """The keywords of `razard.daemon.run_main` for a plain daemon command line, or None
    when click must read it (anything else, so that click says what is wrong)."""
    if "RAZARD_DEBUG" in env:  # click reads the variable's spellings of true and false
        return None
    out: dict[str, Any] = {
        "config_path": DEFAULT_CONFIG,
        "retries": None,
        "remote_attempts": None,
        "long_task": False,
        "debug": False,
    }
    seen: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in _FLAGS and not eq:
            key = _FLAGS[name]
            out[key] = True
        elif name in _VALUED:
            if not eq:
                i += 1
                if i == len(argv):
                    return None
                value = argv[i]
            key = _VALUED[name]
            if key == "config_path":
                if not value or value.startswith("-"):
                    return None
                out[key] = Path(value)
            else:
                if not (value.isascii() and value.isdigit()) or int(value) > _COUNT_MAX:
                    return None
                out[key] = int(value)
        else:
            return None  # a subcommand, --help, --version, --, an unknown option
        if key in seen:
            return None  # click takes the last one; let it
        seen.add(key)
        i += 1
    return out


def main() -> None:
    args = run_args(sys.argv[1:], os.environ)
    if args is None:
        from razard.cli import main as cli_main

        cli_main()
        return
    from razard.daemon import run_main

    sys.exit(run_main(**args))

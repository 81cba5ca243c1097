#!/usr/bin/env python3
"""Recover a GPU: stop the systemd units running on it, reset it when its driver asks and
RAZAR_GPU_ALLOW_RESET=1, start the units again (agents/healing/sacral.py has the details).

Prints one JSON object; exit 0 healed, 1 not healed, 2 not applicable (no GPU here).
``--dry-run`` prints the plan and changes nothing.
"""

from _razar_python import use_razar_python

use_razar_python()  # razar's virtualenv, and the checkout on sys.path

from agents.healing.sacral import run  # noqa: E402

raise SystemExit(run())

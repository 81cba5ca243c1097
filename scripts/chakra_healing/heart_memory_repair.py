#!/usr/bin/env python3
"""Heart (memory) healer: under memory pressure, set MemoryHigh on (or restart) the unit
holding the most memory; lift the limit once the pressure is gone (or with RAZAR_HEAL_MODE=restore).

Prints one JSON object; exit 0 healed, 1 not healed, 2 not applicable.
--dry-run prints the plan and changes nothing. The logic and the settings are in
agents.healing.heart (see its docstring).
"""

from _razar_python import use_razar_python

use_razar_python()  # razar's virtualenv, and the checkout on sys.path

from agents.healing.heart import run  # noqa: E402

raise SystemExit(run())

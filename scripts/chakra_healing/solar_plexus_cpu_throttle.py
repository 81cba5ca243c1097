#!/usr/bin/env python3
"""Solar plexus (CPU) healer: under CPU pressure, lower the CPUWeight of the busiest units;
restore their weights once the pressure is gone (or with RAZAR_HEAL_MODE=restore).

Prints one JSON object; exit 0 healed, 1 not healed, 2 not applicable.
--dry-run prints the plan and changes nothing. The logic and the settings are in
agents.healing.solar_plexus (see its docstring).
"""

from _razar_python import use_razar_python

use_razar_python()  # razar's virtualenv, and the checkout on sys.path

from agents.healing.solar_plexus import run  # noqa: E402

raise SystemExit(run())

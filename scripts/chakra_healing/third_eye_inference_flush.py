#!/usr/bin/env python3
"""Third eye (inference) healer: send RAZAR_FLUSH_SIGNAL (default SIGUSR1) to each inference
unit so it drops its queues, wait RAZAR_FLUSH_GRACE seconds, then restart the layer's components
in priority order, each healthy before the next.

Prints one JSON object; exit 0 healed, 1 not healed, 2 not applicable.
--dry-run prints the plan and changes nothing. The logic and the settings are in
agents.healing.restart (see its docstring).
"""

from _razar_python import use_razar_python

use_razar_python()  # razar's virtualenv, and the checkout on sys.path

from agents.healing.restart import run_third_eye  # noqa: E402

raise SystemExit(run_third_eye())

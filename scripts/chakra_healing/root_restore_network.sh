#!/bin/sh
# Root layer healer: bring the network link RAZAR_ROOT_INTERFACE back (confirm,
# renew, bounce, restart). Prints one JSON object; exit 0 healed, 1 not healed,
# 2 not applicable. --dry-run prints the plan and changes nothing.
# The logic lives in agents/healing/root.py; see its docstring for the settings.
. "$(dirname -- "$0")/_razar_python.sh"
exec "$py" -m agents.healing.root "$@"

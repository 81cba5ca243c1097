#!/bin/sh
# Throat layer healer: restart the layer's API components from RAZAR_CONFIG in priority
# order, each one passing its probe before the next (throat_api_stabilize).
# Prints one JSON object; exit 0 healed, 1 not healed, 2 not applicable.
# --dry-run prints the plan and changes nothing.
# The logic lives in agents/healing/restart.py; see its docstring for the settings.
. "$(dirname -- "$0")/_razar_python.sh"
exec "$py" -m agents.healing.restart throat "$@"

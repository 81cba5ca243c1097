"""The layer healers: one module per layer, each runnable as ``python -m agents.healing.<layer>``.

The contract (README, "Layer agents (chakra)"): settings come from the environment, one JSON
object goes to stdout, the exit status is 0 healed, 1 not healed, 2 not
applicable here; ``--dry-run`` (or ``RAZAR_DRY_RUN=1``) prints the plan and
changes nothing. The executables in ``scripts/chakra_healing/`` are thin
wrappers around these modules.
"""

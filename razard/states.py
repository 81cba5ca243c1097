"""The states a supervised component is in: one list, shared by the runner, the state
file, the metrics and ``razarctl status``.

A `ComponentState` is a `StrEnum`: it is written to JSON (``razar_state.json``,
status replies) and to metric labels as its plain value, so files and output read
the same as when the states were bare strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ComponentState(StrEnum):
    """One component's state, as razard reports it."""

    PENDING = "pending"  # configured; its boot wave (or a release) has not brought it up yet
    STARTING = "starting"  # its unit is being started; the probe has not passed yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"  # the probe fails, fewer times than its threshold
    RESTARTING = "restarting"  # waiting out the backoff before a restart
    ESCALATING = "escalating"  # a rung after restarts (layer healer, repair agents) runs
    QUARANTINED = "quarantined"  # given up on: stopped until an operator releases it
    STOPPED = "stopped"  # stopped by an operator
    FAILED = "failed"  # razard could not supervise it (an operator stop failed, a bug)

    @classmethod
    def parse(cls, value: object) -> ComponentState:
        """The state named ``value`` (from a state file); an unknown one is ``pending``."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.PENDING


#: Saved statuses that claim the unit runs: at start they must match what systemd says.
RUNNING_STATES: Final = frozenset(
    {
        ComponentState.HEALTHY,
        ComponentState.UNHEALTHY,
        ComponentState.STARTING,
        ComponentState.RESTARTING,
        ComponentState.ESCALATING,
    }
)

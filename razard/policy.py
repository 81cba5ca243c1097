"""The remediation ladder as pure decisions over a component's history.

Nothing here does I/O or reads the clock: callers pass ``now`` and a random
source, so every decision can be tested without systemd.

    restart (backoff)  ->  escalation rungs (layer healer, repair agents)  ->  quarantine

The escalation rungs (the layer healer of ``agents/rung.py``, the repair
agents of ``razard/repair/rung.py``) are the supervisor's; the policy only
needs to know how many there are.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from enum import StrEnum

from razard.config import RestartPolicy


class Rung(StrEnum):
    RESTART = "restart"
    ESCALATE = "escalate"
    QUARANTINE = "quarantine"


@dataclass(frozen=True)
class History:
    """What the ladder needs to know about one component's current failure cycle."""

    restarts: int = 0  # restarts spent in this cycle (resets after a healthy window)
    escalations: int = 0  # escalation rungs already tried in this cycle
    last_restart_at: float | None = None
    healthy_since: float | None = None


@dataclass(frozen=True)
class Decision:
    rung: Rung
    delay: float = 0.0  # seconds to wait before acting
    attempt: int = 0  # 1-based number of this restart or escalation
    reason: str = ""


def backoff_delay(attempt: int, policy: RestartPolicy, rng: random.Random | None = None) -> float:
    """Delay before restart number ``attempt`` (1-based): base * 2^(attempt-1), capped, jittered.

    Jitter spreads restarts of many components that failed together by
    +/- ``policy.jitter`` of the delay; the cap holds after jitter too.
    """
    if attempt < 1 or policy.backoff_base <= 0:
        return 0.0
    exp = min(attempt - 1, 62)
    delay = min(policy.backoff_base * (2.0**exp), policy.backoff_cap)
    if policy.jitter > 0:
        r = (rng or random).uniform(-policy.jitter, policy.jitter)
        delay = delay * (1.0 + r)
    return max(0.0, min(delay, policy.backoff_cap))


def settle(history: History, policy: RestartPolicy, now: float) -> History:
    """Reset the failure cycle once the component has stayed healthy for the healthy window."""
    if (
        history.healthy_since is not None
        and now - history.healthy_since >= policy.healthy_window
        and (history.restarts or history.escalations)
    ):
        return replace(history, restarts=0, escalations=0)
    return history


def next_rung(
    history: History,
    policy: RestartPolicy,
    escalation_rungs: int,
    rng: random.Random | None = None,
) -> Decision:
    """The next step for a component that just failed, given its (settled) history."""
    if history.restarts < policy.attempts:
        attempt = history.restarts + 1
        return Decision(
            Rung.RESTART,
            delay=backoff_delay(attempt, policy, rng),
            attempt=attempt,
            reason=f"restart {attempt}/{policy.attempts}",
        )
    if history.escalations < escalation_rungs:
        n = history.escalations + 1
        return Decision(
            Rung.ESCALATE,
            attempt=n,
            reason=f"restart budget of {policy.attempts} spent; escalation {n}/{escalation_rungs}",
        )
    return Decision(
        Rung.QUARANTINE,
        reason=f"restart budget of {policy.attempts} spent"
        + (f" and {escalation_rungs} escalation rung(s) failed" if escalation_rungs else ""),
    )


def plan_waves(priorities: dict[str, int]) -> list[list[str]]:
    """Group component names into boot waves: lower priority number first, names sorted."""
    by_prio: dict[int, list[str]] = {}
    for name, prio in priorities.items():
        by_prio.setdefault(prio, []).append(name)
    return [sorted(by_prio[p]) for p in sorted(by_prio)]

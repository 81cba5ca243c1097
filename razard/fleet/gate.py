"""The one call the supervisor's ladder makes around a disruptive action.

::

    async with fleet_gate(fleet, events, "sacral_gpu_flush", component="trainer") as grant:
        if not grant:
            ...  # the rung failed; the journal already says why (fleet_budget_denied)
        else:
            ...  # the GPU flush

``fleet`` is None when razard.toml has no ``[fleet]``: every action is allowed
at once and nothing is written, exactly as without a fleet. Otherwise the
journal gets ``RAZAR_EVENT=fleet_budget_wait`` when no slot was free at first,
``fleet_budget_denied`` (with the reason) when the wait ended without one,
and ``fleet_breaker_tripped`` when this action was the one that tripped the
fleet's breaker (the caller sends the one fleet alert then: ``grant`` tells it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from razard.fleet.config import FleetConfig
from razard.fleet.core import Fleet, Grant
from razard.fleet.etcd import EtcdError
from razard.journal import EventLog, Priority


@dataclass
class GateResult:
    """What the ladder needs after the block: the grant, and whether the breaker tripped."""

    grant: Grant
    tripped_breaker: bool = False

    def __bool__(self) -> bool:
        return self.grant.granted


@contextlib.asynccontextmanager
async def fleet_gate(
    fleet: Fleet | None,
    events: EventLog | None,
    action: str,
    *,
    component: str,
    layer: str | None = None,
    wait: float | None = None,
    signature: str = "",
) -> AsyncIterator[GateResult]:
    """Hold a fleet budget slot for ``action`` around the block (see the module's doc)."""
    if fleet is None or not fleet.gated(action):
        yield GateResult(Grant(True, action, "no fleet" if fleet is None else "not gated"))
        return

    def emit(event: str, message: str, priority: int, **fields: str | float) -> None:
        if events is not None:
            events.emit(
                event,
                message,
                component=component,
                layer=layer,
                priority=priority,
                action=action,
                node=fleet.node,
                **fields,
            )

    def waiting() -> None:
        emit(
            "fleet_budget_wait",
            f"{action}: no fleet budget slot free, waiting up to "
            f"{fleet.cfg.slot_wait if wait is None else wait:g}s",
            Priority.NOTICE,
        )

    grant = await fleet.acquire(action, wait, signature=signature, on_wait=waiting)
    result = GateResult(grant)
    if not grant:
        emit(
            "fleet_budget_denied",
            f"{action} not taken: {grant.reason} (after {grant.waited:.1f}s)",
            Priority.WARNING,
            reason=grant.reason,
            waited=round(grant.waited, 3),
        )
        yield result
        return
    try:
        if grant.reason == "slot":
            # the breaker counts what was done, not what was asked
            try:
                result.tripped_breaker = await fleet.record_action(action, component)
            except EtcdError as e:
                emit("fleet_unreachable", f"could not record {action}: {e}", Priority.WARNING)
            if result.tripped_breaker:
                emit(
                    "fleet_breaker_tripped",
                    "fleet breaker tripped: no new disruptive action on any node until "
                    "`razarctl fleet breaker reset`",
                    Priority.ERR,
                )
        yield result
    finally:
        await fleet.release(grant)


async def open_fleet(cfg: FleetConfig) -> Fleet | None:
    """The running fleet core for razard's ``[fleet]`` table, or None without one. Never
    waits longer than one call deadline and never raises for an absent etcd: the core
    keeps trying in the background and denies gated actions meanwhile."""
    if not cfg.enabled:
        return None
    fleet = Fleet(cfg)
    await fleet.start()
    return fleet


def status_note(fleet: Fleet | None) -> str:
    """A few words for razard's ``STATUS=``: empty without a fleet or while all is well."""
    if fleet is None:
        return ""
    if not fleet.reachable:
        return "fleet: etcd unreachable, disruptive actions denied"
    if fleet.breaker_tripped:
        return "fleet: breaker tripped"
    return ""

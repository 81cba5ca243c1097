"""The repair rung as the runner sees it: an `razard.runner.EscalationRung` backed by the
handover."""

from __future__ import annotations

import asyncio
from typing import Any

from razard.config import ComponentConfig
from razard.repair.handover import Handover, Outcome, Verify
from razard.runner import Failure, RungOutcome


class RepairRung:
    """Hands a component the restarts could not fix to the repair agents."""

    name = "repair agents"
    restarts_unit = True  # a patch takes effect once the unit restarts: `verify` restarts it

    def __init__(self, handover: Handover, *, long_task: bool = False) -> None:
        self.handover = handover
        self.long_task = long_task
        self.last: dict[str, Outcome] = {}
        self._skipped: dict[str, str] = {}

    async def attempt(self, component: ComponentConfig, failure: Failure, verify: Verify) -> bool:
        """Run the roster once (or until healed, in long-task mode); True when a patch verified.

        A component with no ``artifacts`` gets only the local agents (the registry: it may
        signal, restart or heal without patching): every patch would be refused, and its
        failure's journal lines would leave the machine for nothing. With no local agent
        configured, the rung is skipped."""
        self._skipped.pop(component.name, None)
        local = any(e.factory is not None and not e.remote for e in self.handover.roster)
        if not component.artifacts and not local:
            self.last.pop(component.name, None)
            self._skipped[component.name] = (
                "no artifacts configured: nothing a repair agent may change, so none is asked"
            )
            return False
        rolled_back = await asyncio.to_thread(self._rolled_back, component.name)
        if rolled_back:
            self.last.pop(component.name, None)
            self._skipped[component.name] = (
                f"the operator rolled back its last repair ({rolled_back}); razard does not "
                "repair it again on its own (razarctl heal does)"
            )
            return False
        outcome = await self.handover.run(
            component, failure.info(), verify, long_task=self.long_task
        )
        self.last[component.name] = outcome
        return outcome.healed

    def _rolled_back(self, component: str) -> str:
        """The patch id when the component's last kept-or-reverted patch was rolled back by
        the operator (``razarctl rollback``); else empty."""
        for r in reversed(self.handover.engine.patches(component)):
            if r.get("status") == "kept":
                return ""
            if r.get("status") == "reverted" and r.get("by") == "operator":
                return str(r.get("patch_id", ""))
        return ""

    def outcome(self, component: str) -> tuple[RungOutcome, str]:
        """How the last attempt ended: fixed, failed or skipped; and why."""
        if component in self._skipped:
            return "skipped", self._skipped[component]
        out = self.last.get(component)
        return ("fixed", "") if out and out.healed else ("failed", "")

    def records(self, component: str) -> list[dict[str, Any]]:
        """The invocation records of the last run for ``component`` (for its quarantine file)."""
        out = self.last.get(component)
        return list(out.records) if out else []

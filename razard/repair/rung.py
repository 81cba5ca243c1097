"""The repair rung as the supervisor sees it: an `EscalationRung` backed by the handover."""

from __future__ import annotations

from typing import Any

from razard.config import ComponentConfig
from razard.repair.handover import FailureInfo, Handover, Outcome, Verify


class RepairRung:
    """Hands a component the restarts could not fix to the repair agents."""

    name = "repair agents"

    def __init__(self, handover: Handover, *, long_task: bool = False) -> None:
        self.handover = handover
        self.long_task = long_task
        self.last: dict[str, Outcome] = {}

    async def attempt(self, component: ComponentConfig, failure: Any, verify: Verify) -> bool:
        """Run the roster once (or until healed, in long-task mode); True when a patch verified."""
        info = FailureInfo(
            error=failure.error,
            probe_output=failure.probe_output,
            exit_status=failure.exit_status,
            unit_result=failure.unit_result,
            since=getattr(failure, "cycle_started", None),
        )
        outcome = await self.handover.run(component, info, verify, long_task=self.long_task)
        self.last[component.name] = outcome
        return outcome.healed

    def records(self, component: str) -> list[dict[str, Any]]:
        """The invocation records of the last run for ``component`` (for its quarantine file)."""
        out = self.last.get(component)
        return list(out.records) if out else []

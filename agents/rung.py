"""The layer healer as a rung of the component ladder, between restarts and repair agents."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents.chakra import Chakra
from agents.healer import HealRun
from razard.config import ComponentConfig
from razard.runner import Failure, RungOutcome


class HealerRung:
    """Runs the failing component's layer healer; fixed when it heals and the probe passes.

    The healer already restarted what it needed, so ``verify`` here waits for the
    component to be healthy without another restart (``restarts_unit = False``).
    A failure the layer agent already ran the healer for (``healer_tried``) is
    passed on at once to the next rung, and so is one where the healer found its
    layer healthy and changed nothing (the fault is the component's own). Those,
    and a healer that is not applicable here, are not failed rungs (`outcome`).
    """

    name = "layer healer"
    restarts_unit = False

    def __init__(self, chakra: Chakra) -> None:
        self._chakra = chakra
        self.last: dict[str, HealRun] = {}
        self._outcome: dict[str, tuple[RungOutcome, str]] = {}

    async def attempt(
        self, component: ComponentConfig, failure: Failure, verify: Callable[[], Awaitable[bool]]
    ) -> bool:
        name = component.name
        if failure.healer_tried:
            self.last.pop(name, None)
            self._outcome[name] = ("skipped", f"{component.layer} healer: it ran just now")
            return False
        run = await self._chakra.heal(
            component.layer, component=component.name, unit=component.unit, why=failure.error
        )
        self.last[name] = run
        if run.result == "not_applicable":
            self._outcome[name] = ("not_applicable", run.reason)
            return False
        if run.healed and not run.changed:
            # "healed" without changing anything: the layer is fine, the fault is the
            # component's own; the next rung (the repair agents) takes it
            self._outcome[name] = ("skipped", f"its {component.layer} layer is healthy")
            return False
        if not run.healed:
            self._outcome[name] = ("failed", f"{run.result.replace('_', ' ')}: {run.reason}")
            return False
        fixed = await verify()
        self._outcome[name] = ("fixed" if fixed else "failed", run.reason)
        return fixed

    def outcome(self, component: str) -> tuple[RungOutcome, str]:
        """How the last attempt ended: fixed, failed, not_applicable or skipped; and why."""
        return self._outcome.get(component, ("failed", ""))

    def records(self, component: str) -> list[dict[str, Any]]:
        """The healer run of this cycle, for the ladder log and the quarantine file."""
        run = self.last.get(component)
        return [run.as_dict()] if run else []

"""The layer healer as a rung of the component ladder, between restarts and repair agents."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agents.chakra import Chakra
from agents.healer import HealRun
from razard.config import ComponentConfig


class HealerRung:
    """Runs the failing component's layer healer; fixed when it heals and the probe passes.

    The healer already restarted what it needed, so ``verify`` here waits for the
    component to be healthy without another restart (``restarts_unit = False``).
    A failure the layer agent already ran the healer for (``healer_tried``) is
    passed on at once to the next rung, and so is one where the healer found its
    layer healthy and changed nothing (the fault is the component's own).
    """

    name = "layer healer"
    restarts_unit = False

    def __init__(self, chakra: Callable[[], Chakra | None]) -> None:
        self._chakra = chakra
        self.last: dict[str, HealRun] = {}

    async def attempt(
        self, component: ComponentConfig, failure: Any, verify: Callable[[], Awaitable[bool]]
    ) -> bool:
        chakra = self._chakra()
        if chakra is None or getattr(failure, "healer_tried", False):
            self.last.pop(component.name, None)
            return False
        run = await chakra.heal(
            component.layer, component=component.name, unit=component.unit, why=failure.error
        )
        self.last[component.name] = run
        if not run.healed or not run.changed:
            # "healed" without changing anything: the layer is fine, the fault is the
            # component's own; the next rung (the repair agents) takes it
            return False
        return await verify()

    def records(self, component: str) -> list[dict[str, Any]]:
        """The healer run of this cycle, for the ladder log and the quarantine file."""
        run = self.last.get(component)
        return [run.as_dict()] if run else []

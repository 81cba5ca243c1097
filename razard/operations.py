"""The operations razarctl asks of a running razard, over the D-Bus control interface.

`Operations` is the object `razard.control.export_control` serves
(`razard.control.SupervisorControl`): status, start/stop/restart of a component,
the ladder, the layer agents (``chakra``, ``chakra heal``), patches, diffs and
rollbacks, an operator's heal, quarantine releases and reloads. It acts through
the `razard.supervisor.Supervisor` and its runners and holds no state of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from razard import __version__
from razard.config import Config
from razard.errors import ControlError, SystemdError, UnknownComponent
from razard.journal import Priority
from razard.layers import LAYERS
from razard.repair.rung import RepairRung
from razard.runner import CYCLE_LOOKBACK, Failure, Runner, iso
from razard.states import ComponentState as State
from razard.supervisor import Supervisor

#: How long `razarctl restart` waits for the component to settle before answering.
RESTART_REPLY_WAIT = 20.0


class LayerHealRun(Protocol):
    """One layer heal as the control surface reports it (`agents.healer.HealRun`)."""

    @property
    def report(self) -> Mapping[str, Any]: ...

    def as_dict(self) -> dict[str, Any]: ...


class LayerAgents(Protocol):
    """What the control surface asks of the layer agents (`agents.chakra.Chakra`, which
    the daemon builds): named here so the core imports nothing of agents/."""

    def snapshot(self) -> list[dict[str, Any]]: ...

    async def heal(self, layer: str, *, dry_run: bool = False, why: str = "") -> LayerHealRun: ...


class Operations:
    """What the control interface calls; every method may raise `razard.errors.RazarError`."""

    def __init__(
        self,
        sup: Supervisor,
        *,
        repair: RepairRung | None = None,
        layer_agents: LayerAgents | None = None,
        ladder_info: Mapping[str, Any] | None = None,
        reload_config: Callable[[], Config] | None = None,
    ) -> None:
        self.sup = sup
        self.repair = repair
        self.layer_agents = layer_agents
        self.ladder_info = dict(ladder_info or {})
        self._reload_config = reload_config

    def _runner(self, name: str) -> Runner:
        if not self.sup.started:
            raise ControlError("razard is still starting; try again in a moment")
        runner = self.sup.runners.get(name)
        if runner is None:
            raise UnknownComponent(name)
        return runner

    def status(self) -> dict[str, Any]:
        comps = []
        for r in sorted(self.sup.runners.values(), key=lambda r: (r.cfg.priority, r.cfg.name)):
            rec = r.rec
            comps.append(
                {
                    "name": r.cfg.name,
                    "unit": r.cfg.unit,
                    "layer": r.cfg.layer,
                    "priority": r.cfg.priority,
                    "state": rec.status.value,
                    "healthy": rec.status == State.HEALTHY,
                    "restarts": rec.restarts_total,
                    "restarts_in_cycle": rec.restarts,
                    "quarantined": rec.status == State.QUARANTINED,
                    "last_error": rec.last_error,
                    "since": iso(rec.since),
                    "last_healthy": iso(rec.last_healthy),
                    "main_pid": r.unit_status.main_pid if r.unit_status else 0,
                    "unit_state": r.unit_status.describe() if r.unit_status else None,
                }
            )
        return {
            "summary": self.sup.summary(),
            "ready": self.sup.ready,
            "pid": os.getpid(),
            "version": __version__,
            "config": str(self.sup.config.source),
            "components": comps,
        }

    async def start_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self.sup.lock:
            if runner.rec.status == State.QUARANTINED:
                raise ControlError(
                    f"{name} is quarantined; release it first (razarctl quarantine release {name})"
                )
            runner.rec.operator_stopped = False
            if runner.task is not None and not runner.task.done():
                return  # already supervised
            self.sup.event(runner, "operator_start", "started by operator")
            runner.spawn(adopt=True)

    async def stop_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self.sup.lock:
            if runner.rec.status == State.QUARANTINED:
                return  # its unit is already stopped: nothing to do
            await runner.cancel_heal()
            await runner.cancel()
            runner.rec.operator_stopped = True
            self.sup.event(runner, "operator_stop", "stopped by operator; razard will not heal it")
            try:
                await self.sup.systemd.stop(runner.cfg.unit, job_timeout=60)
            except SystemdError as e:
                self.sup.set_state(runner, State.FAILED, error=f"operator stop failed: {e}")
                raise ControlError(f"stopping {name}: {e}") from e
            self.sup.set_state(runner, State.STOPPED)

    async def restart_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self.sup.lock:
            if runner.rec.status == State.QUARANTINED:
                raise ControlError(
                    f"{name} is quarantined; release it first (razarctl quarantine release {name})"
                )
            await runner.cancel_heal()
            await runner.cancel()
            runner.rec.operator_stopped = False
            self.sup.event(runner, "operator_restart", "restart requested by operator")
            runner.settled.clear()
            runner.spawn(adopt=False, force_restart=True)
        # answer razarctl once the component is up again, but never past its own deadline
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RESTART_REPLY_WAIT):
                await runner.settled.wait()

    def ladder(self) -> dict[str, Any]:
        """The repair roster, which rungs are usable here, and the thresholds in force."""
        roster = self.repair.handover.describe() if self.repair else []
        return {
            **self.ladder_info,
            "roster": roster,
            "long_task": bool(self.repair and self.repair.long_task),
            "remote_attempts": self.repair.handover.remote_attempts if self.repair else None,
            "restart_attempts": {
                n: r.cfg.restart.attempts for n, r in sorted(self.sup.runners.items())
            },
            # the repair rung skips these: no patch to them could be kept
            "no_artifacts": sorted(n for n, r in self.sup.runners.items() if not r.cfg.artifacts),
        }

    def chakra(self) -> list[dict[str, Any]]:
        """Each layer agent's pulse, sensor reading and healer runs (``razarctl chakra``)."""
        if self.layer_agents is None:
            raise ControlError("the layer agents are not running yet")
        return self.layer_agents.snapshot()

    async def heal_layer(self, layer: str, dry_run: bool) -> dict[str, Any]:
        """Run a layer's healer at an operator's request (``razarctl chakra heal``)."""
        if layer not in LAYERS:
            raise ControlError(f"unknown layer {layer!r}; layers: {', '.join(LAYERS)}")
        if self.layer_agents is None:
            raise ControlError("the layer agents are not running yet")
        run = await self.layer_agents.heal(layer, dry_run=dry_run, why="operator request")
        return {**run.as_dict(), "report": dict(run.report)}

    def patches(self, name: str) -> list[dict[str, Any]]:
        self._runner(name)
        return self.sup.engine.patches(name)

    def diff(self, name: str, patch_id: str | None) -> str:
        self._runner(name)
        return self.sup.engine.diff(name, patch_id)

    async def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        """Restore the artifacts before the last kept patch (or ``to``), then restart the unit."""
        runner = self._runner(name)
        cfg = runner.cfg
        await runner.cancel_heal()  # its unverified patch is restored first

        def locked() -> dict[str, Any]:
            with self.sup.engine.lock():
                return self.sup.engine.rollback(cfg, to)

        record = await asyncio.to_thread(locked)
        self.sup.metrics.patches.labels(name, "reverted").inc()
        self.sup.event(
            runner,
            "patch_rolled_back",
            f"operator rolled back to before {record.get('patch_id')}; restarting",
            priority=Priority.NOTICE,
            patch_id=record.get("patch_id"),
        )
        record = {**record, "restarted": runner.rec.status != State.QUARANTINED}
        if record["restarted"]:
            await self.restart_component(name)
        return record

    async def heal(
        self, name: str, long_task: bool, retries: int | None, remote_attempts: int | None
    ) -> dict[str, Any]:
        """Re-run the handover for one component now (the runbook's recovery step).

        The heal runs as the component's own task: `razarctl stop`, `restart` or
        `rollback` cancel it (an unverified patch is then restored).
        """
        runner = self._runner(name)
        if self.repair is None:
            raise ControlError("no repair agents are configured (razar_ai_agents.json)")
        if runner.rec.status == State.QUARANTINED:
            raise ControlError(
                f"{name} is quarantined; release it first (razarctl quarantine release {name})"
            )
        if runner.healing:
            raise ControlError(f"a heal of {name} is already running")
        async with self.sup.lock:
            await runner.cancel()
            runner.rec.operator_stopped = False
            runner.heal_task = asyncio.get_running_loop().create_task(
                self._heal(runner, long_task, retries, remote_attempts), name=f"heal:{name}"
            )
        try:
            return await runner.heal_task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # razard itself is stopping
            raise ControlError(
                f"the heal of {name} was cancelled (the component was stopped, restarted or "
                "rolled back)"
            ) from None

    async def _heal(
        self, runner: Runner, long_task: bool, retries: int | None, remote_attempts: int | None
    ) -> dict[str, Any]:
        assert self.repair is not None
        error = runner.rec.last_error or "operator heal"
        last = runner.last_failure or Failure(runner.cfg.name, "operator", error)
        info = replace(last, error=last.error or error).info(since=time.time() - CYCLE_LOOKBACK)
        try:
            for i in range(retries or 0):  # plain restarts first, when asked
                if await runner.verify():
                    return {"healed": True, "attempts": i + 1, "agent": "restart", "patch_id": None}
            outcome = await self.repair.handover.run(
                runner.cfg,
                info,
                runner.verify,
                long_task=long_task,
                remote_attempts=remote_attempts,
            )
        finally:
            runner.heal_task = None
            runner.settled.clear()
            runner.spawn(adopt=True)  # back under normal supervision (stop cancels it again)
        return {
            "healed": outcome.healed,
            "attempts": outcome.attempts,
            "agent": outcome.agent,
            "patch_id": outcome.patch_id,
        }

    def quarantined(self) -> list[dict[str, Any]]:
        return self.sup.quarantine.list()

    async def release(self, name: str) -> None:
        runner = self._runner(name)
        if not self.sup.quarantine.release(name, by="razarctl"):
            raise ControlError(f"{name} is not quarantined")
        await self.sup.release_runner(runner, "razarctl")

    async def reload(self) -> None:
        if self._reload_config is None:
            raise ControlError("reload is not available")
        if not self.sup.started:
            raise ControlError("razard is still starting; reload once it is up")
        new = self._reload_config()  # raises ConfigError: the running config stays
        await self.sup.apply(new)

"""The sacral (GPU) healer: flush a GPU's jobs, reset the GPU when its driver asks and an
operator allows it, start the jobs again.

Steps, each recorded:

1. ``open_nvml``: open NVML (`agents.gpu.open_backend`); none here (no driver, no
   library) is "not applicable" (exit 2) with the reason.
2. ``select_gpu``: the GPUs to recover (see ``RAZAR_GPU``); their recovery action
   (``none``, ``gpu_reset``, ``node_reboot``, ``drain_and_reset``, ...). When every one
   asks for a node reboot nothing is touched: only a reboot helps.
3. ``find_processes``: the compute processes on those GPUs and the systemd unit of
   each. Only ``.service`` units are stopped; a pid outside any unit, in a scope or
   slice, in ``user@*.service`` or in the healer's own unit is reported and left alone.
4. ``stop_units``: a stop job per unit, up to ``RAZAR_GPU_STOP_TIMEOUT``; then
   ``KillUnit`` SIGKILL for everything still in the unit.
5. ``wait_idle``: NVML lists no compute process on the GPU, within ``RAZAR_GPU_IDLE_TIMEOUT``.
6. ``read_recovery_action``: read again, now that the GPU is idle.
7. ``reset``: only when the action is ``gpu_reset`` or ``drain_and_reset``, the GPU
   is idle, ``RAZAR_GPU_ALLOW_RESET`` is on and the rate limit has room:
   ``nvidia-smi --gpu-reset -i <index>`` (from ``PATH``, no shell). This healer
   releases its own NVML first; any other NVML client (dcgm, razard's
   `agents.gpu_metrics.GpuCollector` unless paused) can make the reset fail.
8. ``recheck``: NVML opened afresh; the GPU answers, and its recovery action.
9. ``start_units``: every unit stopped in step 4 is started again, healed or not.

Healed when every selected GPU answers and asks for no recovery at the end (a
driver too old to report a recovery action counts as asking for none).

Settings (environment; razard maps its config to them):

``RAZAR_GPU`` (default: choose)
    Index or UUID of the GPU to recover; several separated by commas. Unset: every
    GPU whose recovery action is not ``none`` (or cannot be read); if none is, the
    GPUs running processes of ``RAZAR_UNIT`` (a flush of the failed component's
    GPUs); if none does, the node's only GPU; on a node with several GPUs and
    nothing to go by, the healer does not guess and reports "not healed".
``RAZAR_GPU_ALLOW_RESET`` (default 0)
    1 lets the healer run ``nvidia-smi --gpu-reset``.
``RAZAR_GPU_MAX_RESETS_PER_HOUR`` (default 2)
    Resets allowed per hour on this node, counted in
    ``$RAZAR_STATE_DIR/healers/sacral_gpu_recover/resets.json``; 0 never resets.
``RAZAR_GPU_STOP_TIMEOUT`` (default 30 s)
    How long a unit's graceful stop may take before SIGKILL.
``RAZAR_GPU_IDLE_TIMEOUT`` (default 10 s)
    How long to wait for NVML to show the GPU idle after the units stopped.
``RAZAR_GPU_START_TIMEOUT`` (default 90 s)
    How long each unit's start job may take.
``RAZAR_GPU_RESET_TIMEOUT`` (default 120 s)
    How long ``nvidia-smi --gpu-reset`` may run.

``RAZAR_HEAL_MODE=restore`` is "not applicable": this healer leaves no runtime
change behind to undo. A dry run reads NVML and systemd, lists the plan and
changes nothing; its result is "not healed" (nothing was healed).

One module (~710 lines): a healer is one executable, and most of it is `_Recovery`,
whose numbered steps above run in order over one record of what was stopped and must be
started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agents.gpu import (
    GpuBackend,
    GpuDevice,
    GpuError,
    GpuProcess,
    GpuUnavailable,
    RecoveryAction,
    open_backend,
)
from agents.healing.base import HealContext, HealResult, Outcome, RateLimit, Step, main
from razard.errors import SystemdError, UnitNotFound
from razard.systemd import Systemd

HEALER: Final = "sacral_gpu_recover"
LAYER: Final = "sacral"

#: Recovery actions a GPU reset answers.
RESET_ACTIONS: Final = frozenset({"gpu_reset", "drain_and_reset"})
#: Recovery actions only a reboot of the node answers.
REBOOT_ACTIONS: Final = frozenset({"node_reboot", "system_reboot"})

DEFAULT_MAX_RESETS_PER_HOUR: Final = 2
DEFAULT_STOP_TIMEOUT: Final = 30.0
DEFAULT_IDLE_TIMEOUT: Final = 10.0
DEFAULT_START_TIMEOUT: Final = 90.0
DEFAULT_RESET_TIMEOUT: Final = 120.0
KILL_GRACE: Final = 10.0  # seconds for a SIGKILLed unit to go down
_POLL: Final = 0.1
_OUTPUT_KEPT: Final = 500


@dataclass(frozen=True)
class Settings:
    """The healer's settings, read from the environment (module docstring)."""

    gpus: tuple[str, ...] = ()
    allow_reset: bool = False
    max_resets_per_hour: int = DEFAULT_MAX_RESETS_PER_HOUR
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    start_timeout: float = DEFAULT_START_TIMEOUT
    reset_timeout: float = DEFAULT_RESET_TIMEOUT

    @classmethod
    def from_context(cls, ctx: HealContext) -> Settings:
        """Raises `HealerError` naming the variable that is wrong."""
        return cls(
            gpus=tuple(t.strip() for t in ctx.get("RAZAR_GPU").split(",") if t.strip()),
            allow_reset=ctx.flag("RAZAR_GPU_ALLOW_RESET"),
            max_resets_per_hour=ctx.integer(
                "RAZAR_GPU_MAX_RESETS_PER_HOUR", DEFAULT_MAX_RESETS_PER_HOUR
            ),
            stop_timeout=ctx.number("RAZAR_GPU_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT),
            idle_timeout=ctx.number("RAZAR_GPU_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT),
            start_timeout=ctx.number("RAZAR_GPU_START_TIMEOUT", DEFAULT_START_TIMEOUT, minimum=1.0),
            reset_timeout=ctx.number("RAZAR_GPU_RESET_TIMEOUT", DEFAULT_RESET_TIMEOUT, minimum=1.0),
        )


# --------------------------------------------------------------------------- decisions


def resolve_gpus(devices: Sequence[GpuDevice], wanted: Sequence[str]) -> list[GpuDevice]:
    """The GPUs ``RAZAR_GPU`` names (indexes or UUIDs); LookupError for one not here."""
    found: list[GpuDevice] = []
    for token in wanted:
        match = [
            d
            for d in devices
            if (token.isdigit() and d.index == int(token))
            or (d.uuid and d.uuid.lower() == token.lower())
        ]
        if not match:
            here = ", ".join(f"{d.index} {d.uuid or '(no answer)'}" for d in devices)
            raise LookupError(f"RAZAR_GPU: no GPU {token!r} on this node (GPUs: {here})")
        if match[0] not in found:
            found.append(match[0])
    return found


def why_not_stopped(unit: str | None, own_unit: str | None) -> str | None:
    """Why a GPU process in ``unit`` is left alone, or None when its unit is stopped."""
    if unit is None:
        return "not in any systemd unit"
    if unit == own_unit:
        return f"{unit} runs this healer"
    if not unit.endswith(".service"):
        return f"{unit} is not a service"
    if unit.startswith("user@"):
        return f"{unit} is a user's service manager"
    return None


def why_no_reset(
    action: RecoveryAction | None, *, allow_reset: bool, busy_pids: Sequence[int]
) -> str | None:
    """Why the GPU is not reset (before the rate limit is asked), or None to reset it."""
    if action not in RESET_ACTIONS:
        return f"recovery action {action or 'not reported'} needs no reset"
    if not allow_reset:
        return "RAZAR_GPU_ALLOW_RESET is off"
    if busy_pids:
        pids = ", ".join(str(p) for p in busy_pids)
        return f"the GPU still runs pids {pids}; nvidia-smi cannot reset a GPU in use"
    return None


@dataclass
class GpuAfter:
    """One GPU's state at the end: its answer, recovery action, and the reset record."""

    recovery_action: RecoveryAction | None = None
    error: str | None = None
    reset: dict[str, Any] = field(default_factory=dict)


def problem(gpu: GpuDevice, after: GpuAfter) -> str | None:
    """Why ``gpu`` is not healed at the end, or None when it is."""
    i = gpu.index
    if after.error is not None:
        return f"GPU {i} does not answer after recovery: {after.error}"
    action = after.recovery_action
    if action in (None, "none"):
        return None
    if action in REBOOT_ACTIONS:
        return f"GPU {i} asks for a node reboot"
    if action in RESET_ACTIONS:
        reset = after.reset
        if reset.get("ran"):
            how = (
                "the reset did not clear it"
                if reset.get("ok")
                else f"nvidia-smi --gpu-reset failed ({reset.get('result', '?')})"
            )
            return f"GPU {i}: recovery action {action} still set; {how}"
        return f"GPU {i}: recovery action {action} needs a reset; {reset.get('why', '?')}"
    return f"GPU {i} asks for {action}, which this healer does not do"


# --------------------------------------------------------------------------- the run


def _read(fn: Any, index: int) -> tuple[Any, str | None]:
    try:
        return fn(index), None
    except GpuError as e:
        return None, str(e)


class _Recovery:
    """One run of the healer: its NVML and systemd connections, steps and details."""

    def __init__(self, ctx: HealContext, settings: Settings) -> None:
        self.ctx = ctx
        self.s = settings
        self.steps: list[Step] = []
        self.plan: list[str] = []
        self.details: dict[str, Any] = {}
        self.backend: GpuBackend | None = None
        self.sd: Systemd | None = None
        self.limit = RateLimit(
            ctx.healer_state(HEALER) / "resets.json", settings.max_resets_per_hour
        )

    def step(self, name: str, ok: bool, detail: str, changed: bool = False) -> None:
        self.steps.append(Step(name, ok, detail, changed))

    def result(self, outcome: Outcome, reason: str, healed_by: str | None = None) -> HealResult:
        self.details["rate_limit"] = self.limit.describe()
        return HealResult(
            HEALER,
            LAYER,
            outcome,
            reason,
            steps=self.steps,
            plan=self.plan,
            dry_run=self.ctx.dry_run,
            healed_by=healed_by,
            details=self.details,
        )

    async def close(self) -> None:
        if self.backend is not None:
            with contextlib.suppress(Exception):
                self.backend.close()
            self.backend = None
        if self.sd is not None:
            with contextlib.suppress(Exception):
                await self.sd.close()
            self.sd = None

    async def systemd(self) -> Systemd:
        if self.sd is None:
            address = (
                self.ctx.env.get("DBUS_SESSION_BUS_ADDRESS") if self.ctx.bus == "user" else None
            )
            sd = Systemd(bus=self.ctx.bus, address=address or None)
            await sd.connect()
            self.sd = sd
        return self.sd

    # ------------------------------------------------------------------ steps 1-3

    async def run(self) -> HealResult:
        try:
            self.backend = open_backend(self.ctx.env)
        except GpuUnavailable as e:
            self.step("open_nvml", False, str(e))
            return self.result("not_applicable", f"no usable GPU here: {e}")
        try:
            devices = self.backend.devices()
        except GpuError as e:
            self.step("open_nvml", False, f"NVML cannot list the GPUs: {e}")
            return self.result("not_healed", f"NVML cannot list the GPUs: {e}")
        if not devices:
            self.step("open_nvml", True, "NVML answers and lists no GPU")
            return self.result("not_applicable", "NVML lists no GPU on this node")
        self.step("open_nvml", True, f"NVML answers: {len(devices)} GPU(s)")

        before: dict[int, tuple[RecoveryAction | None, str | None]] = {
            d.index: _read(self.backend.recovery_action, d.index) for d in devices
        }
        procs: dict[int, list[GpuProcess]] = {}
        for d in devices:
            found, _err = _read(self.backend.processes, d.index)
            procs[d.index] = list(found or [])

        targets, why = await self._select(devices, before, procs)
        self.details["gpus"] = [
            {
                "index": d.index,
                "uuid": d.uuid,
                "name": d.name,
                "recovery_action_before": before[d.index][0],
                **({"error": before[d.index][1]} if before[d.index][1] else {}),
            }
            for d in targets
        ]
        if not targets:
            self.step("select_gpu", False, why)
            return self.result("not_healed", why)
        self.details["selected_by"] = why
        self.step(
            "select_gpu",
            True,
            "; ".join(
                f"GPU {d.index} ({d.uuid or 'no answer'}): recovery action "
                f"{before[d.index][0] or before[d.index][1] or 'not reported'}"
                for d in targets
            )
            + f" ({why})",
        )
        if all(before[d.index][0] in REBOOT_ACTIONS for d in targets):
            reason = "; ".join(f"GPU {d.index} asks for a node reboot" for d in targets)
            self.plan.append(f"nothing: {reason}; only a reboot of the node helps")
            return self.result("not_healed", reason)

        units = await self._map_units(targets, procs)
        if units is None:
            return self.result("not_healed", self.steps[-1].detail)
        if self.ctx.dry_run:
            return self._dry_run(targets, before, units)
        return await self._recover(targets, units)

    async def _select(
        self,
        devices: list[GpuDevice],
        before: dict[int, tuple[RecoveryAction | None, str | None]],
        procs: dict[int, list[GpuProcess]],
    ) -> tuple[list[GpuDevice], str]:
        if self.s.gpus:
            try:
                return resolve_gpus(devices, self.s.gpus), f"RAZAR_GPU={','.join(self.s.gpus)}"
            except LookupError as e:
                raise _NotApplicable(str(e)) from None
        asking = [
            d for d in devices if before[d.index][1] or before[d.index][0] not in (None, "none")
        ]
        if asking:
            return asking, "RAZAR_GPU unset: every GPU that asks for recovery"
        unit = self.ctx.unit
        if unit and any(procs.values()):
            wanted = unit if "." in unit else f"{unit}.service"
            mine: list[GpuDevice] = []
            with contextlib.suppress(SystemdError):
                sd = await self.systemd()
                for d in devices:
                    for p in procs[d.index]:
                        if await sd.unit_by_pid(p.pid) == wanted:
                            mine.append(d)
                            break
            if mine:
                return mine, f"RAZAR_GPU unset: the GPUs running {wanted}"
        if len(devices) == 1:
            return list(devices), "RAZAR_GPU unset: the node's only GPU"
        return [], (
            "no GPU asks for recovery and "
            + (f"{unit} runs on none" if unit else "RAZAR_UNIT is unset")
            + "; set RAZAR_GPU to choose the GPU to flush"
        )

    async def _map_units(
        self, targets: list[GpuDevice], procs: dict[int, list[GpuProcess]]
    ) -> list[str] | None:
        """The units to stop (None when systemd cannot be reached); details["processes"]."""
        entries: list[dict[str, Any]] = []
        units: list[str] = []
        on_gpus = [(d.index, p) for d in targets for p in procs[d.index]]
        self.details["processes"] = entries
        if not on_gpus:
            self.step("find_processes", True, "no compute process on the GPU")
            return units
        try:
            sd = await self.systemd()
            own = await sd.unit_by_pid(os.getpid())
            for index, p in on_gpus:
                unit = await sd.unit_by_pid(p.pid)
                why = why_not_stopped(unit, own)
                entries.append(
                    {
                        "gpu": index,
                        "pid": p.pid,
                        "unit": unit,
                        "used_memory": p.used_memory,
                        "stop": why is None,
                        **({"why": why} if why else {}),
                    }
                )
                if why is None and unit is not None and unit not in units:
                    units.append(unit)
        except SystemdError as e:
            self.step("find_processes", False, f"cannot ask systemd for the processes' units: {e}")
            return None
        self.step(
            "find_processes",
            True,
            "; ".join(
                f"GPU {e['gpu']} pid {e['pid']}: "
                + (f"in {e['unit']}" if e["stop"] else f"left alone ({e['why']})")
                for e in entries
            ),
        )
        return units

    # ------------------------------------------------------------------ dry run

    def _dry_run(
        self,
        targets: list[GpuDevice],
        before: dict[int, tuple[RecoveryAction | None, str | None]],
        units: list[str],
    ) -> HealResult:
        for unit in units:
            self.plan.append(
                f"stop {unit} (a stop job of up to {self.s.stop_timeout:g}s, then SIGKILL)"
            )
        for e in self.details["processes"]:
            if not e["stop"]:
                self.plan.append(f"leave pid {e['pid']} on GPU {e['gpu']} alone: {e['why']}")
        room = self.limit.limit - self.limit.used()  # resets the rate limit still allows
        resets: list[str] = []
        for d in targets:
            self.plan.append(f"wait up to {self.s.idle_timeout:g}s for GPU {d.index} to be idle")
            busy = [
                e["pid"] for e in self.details["processes"] if e["gpu"] == d.index and not e["stop"]
            ]
            why = why_no_reset(before[d.index][0], allow_reset=self.s.allow_reset, busy_pids=busy)
            if why is None and room <= 0:
                why = f"the reset rate limit is used up ({self.limit.describe()})"
            if why is None:
                room -= 1
                resets.append(f"GPU {d.index}")
                self.plan.append(
                    f"reset GPU {d.index}: nvidia-smi --gpu-reset -i {d.index} "
                    f"(recovery action {before[d.index][0]}; {self.limit.describe()})"
                )
            else:
                self.plan.append(f"no reset of GPU {d.index}: {why}")
            self.plan.append(f"re-check GPU {d.index} through NVML")
        for unit in units:
            self.plan.append(f"start {unit} again")
        return self.result(
            "not_healed",
            f"dry run: nothing changed; would stop {len(units)} unit(s) and reset "
            + (", ".join(resets) or "no GPU"),
        )

    # ------------------------------------------------------------------ steps 4-9

    async def _recover(self, targets: list[GpuDevice], units: list[str]) -> HealResult:
        after = {d.index: GpuAfter() for d in targets}
        try:
            if units:
                await self._stop_units(units)
            busy = await self._wait_idle(targets)
            self._read_actions(targets, after)
            for d in targets:
                after[d.index].reset = await self._reset(
                    d, after[d.index].recovery_action, busy.get(d.index, [])
                )
            self._recheck(targets, after)
        finally:
            if units:
                await self._start_units(units)
        for g in self.details["gpus"]:
            a = after[g["index"]]
            g["recovery_action_after"] = a.recovery_action
            g["answers"] = a.error is None
            g["reset"] = a.reset
            if a.error:
                g["error_after"] = a.error
        problems = [p for d in targets if (p := problem(d, after[d.index])) is not None]
        if problems:
            return self.result("not_healed", "; ".join(problems))
        names = ", ".join(f"GPU {d.index}" for d in targets)
        if any(a.reset.get("ran") and a.reset.get("ok") for a in after.values()):
            return self.result(
                "healed", f"{names} reset; it answers and asks for no recovery", "reset"
            )
        if units:
            return self.result(
                "healed",
                f"flushed {names} ({len(units)} unit(s) restarted); "
                "it answers and asks for no recovery",
                "stop_units",
            )
        return self.result("healed", f"{names} answers and asks for no recovery; nothing to do")

    async def _stop_units(self, units: list[str]) -> None:
        results = await asyncio.gather(*(self._stop_unit(u) for u in units))
        self.details["units_stopped"] = list(results)
        self.step(
            "stop_units",
            all(r["result"] in ("done", "killed") for r in results),
            "; ".join(f"{r['unit']}: {r['result']}" for r in results),
            changed=True,
        )

    async def _stop_unit(self, unit: str) -> dict[str, Any]:
        sd = await self.systemd()
        try:
            return {"unit": unit, "result": await sd.stop(unit, job_timeout=self.s.stop_timeout)}
        except UnitNotFound as e:
            return {"unit": unit, "result": f"error: {e}"}
        except SystemdError as e:
            first = str(e)  # the graceful stop did not finish in time, or failed
        try:
            await sd.kill(unit, signal.SIGKILL, who="all")
        except SystemdError as e:
            return {"unit": unit, "result": f"error: {first}; SIGKILL failed: {e}"}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KILL_GRACE
        while True:
            try:
                st = await sd.status(unit)
            except SystemdError as e:
                return {"unit": unit, "result": f"error after SIGKILL: {e}"}
            if st.active_state in ("inactive", "failed"):
                return {"unit": unit, "result": "killed", "why": first}
            if loop.time() > deadline:
                return {
                    "unit": unit,
                    "result": f"still {st.describe()} {KILL_GRACE:g}s after SIGKILL",
                }
            await asyncio.sleep(_POLL)

    async def _wait_idle(self, targets: list[GpuDevice]) -> dict[int, list[int]]:
        """Poll NVML until no target runs a compute process; the pids left per GPU."""
        assert self.backend is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.s.idle_timeout
        while True:
            busy: dict[int, list[int]] = {}
            errors: list[str] = []
            for d in targets:
                found, err = _read(self.backend.processes, d.index)
                if err:
                    errors.append(err)
                elif found:
                    busy[d.index] = [p.pid for p in found]
            if (not busy and not errors) or loop.time() >= deadline:
                break
            await asyncio.sleep(_POLL)
        for g in self.details["gpus"]:
            g["idle"] = g["index"] not in busy and not errors
            if g["index"] in busy:
                g["busy_pids"] = busy[g["index"]]
        detail = (
            "; ".join(
                [f"GPU {i} still runs pids {', '.join(map(str, p))}" for i, p in busy.items()]
                + errors
            )
            or ", ".join(f"GPU {d.index}" for d in targets) + " idle"
        )
        if busy or errors:
            detail += f" after {self.s.idle_timeout:g}s"
        self.step("wait_idle", not busy and not errors, detail)
        return busy

    def _read_actions(self, targets: list[GpuDevice], after: dict[int, GpuAfter]) -> None:
        assert self.backend is not None
        parts = []
        for d in targets:
            action, err = _read(self.backend.recovery_action, d.index)
            after[d.index].recovery_action = action
            parts.append(f"GPU {d.index}: {err or action or 'not reported'}")
        self.step("read_recovery_action", True, "; ".join(parts))

    async def _reset(
        self, gpu: GpuDevice, action: RecoveryAction | None, busy: list[int]
    ) -> dict[str, Any]:
        why = why_no_reset(action, allow_reset=self.s.allow_reset, busy_pids=busy)
        exe = shutil.which("nvidia-smi", path=self.ctx.env.get("PATH") or os.defpath)
        if why is None and exe is None:
            why = "nvidia-smi is not on PATH"
        if why is None and not self.limit.take():
            why = (
                f"the reset rate limit is used up ({self.limit.describe()}, "
                "RAZAR_GPU_MAX_RESETS_PER_HOUR)"
            )
        if why is not None:
            if action in RESET_ACTIONS:
                self.step("reset", False, f"GPU {gpu.index} not reset: {why}")
            return {"ran": False, "why": why}
        assert exe is not None
        if self.backend is not None:  # NVML held open by anyone can make the reset fail
            self.backend.close()
            self.backend = None
        argv = [exe, "--gpu-reset", "-i", str(gpu.index)]
        record: dict[str, Any] = {"ran": True, "argv": argv}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self.ctx.env),
            )
        except OSError as e:
            record.update(ok=False, result=f"cannot run it: {e}")
        else:
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), self.s.reset_timeout)
                text = out.decode(errors="replace").strip()[-_OUTPUT_KEPT:]
                record.update(ok=proc.returncode == 0, exit_status=proc.returncode, output=text)
                record["result"] = f"exit status {proc.returncode}" + (f": {text}" if text else "")
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                record.update(ok=False, result=f"timed out after {self.s.reset_timeout:g}s")
        self.step(
            "reset",
            bool(record["ok"]),
            f"nvidia-smi --gpu-reset -i {gpu.index}: {record['result']}",
            changed=True,
        )
        return record

    def _recheck(self, targets: list[GpuDevice], after: dict[int, GpuAfter]) -> None:
        """Open NVML afresh (a reset invalidates handles) and read each target again."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        try:
            self.backend = open_backend(self.ctx.env)
            devices = self.backend.devices()
        except GpuError as e:
            for d in targets:
                after[d.index].error = f"NVML: {e}"
            self.step("recheck", False, f"NVML does not answer: {e}")
            return
        parts = []
        for d in targets:
            now = [x for x in devices if (x.uuid == d.uuid if d.uuid else x.index == d.index)]
            if not now or not now[0].uuid:
                after[d.index].error = "NVML does not list it" if not now else "it does not answer"
                after[d.index].recovery_action = None
            else:
                action, err = _read(self.backend.recovery_action, now[0].index)
                after[d.index].recovery_action, after[d.index].error = action, err
            a = after[d.index]
            parts.append(f"GPU {d.index}: {a.error or a.recovery_action or 'answers'}")
        ok = all(problem(d, after[d.index]) is None for d in targets)
        self.step("recheck", ok, "; ".join(parts))

    async def _start_units(self, units: list[str]) -> None:
        async def start(unit: str) -> dict[str, Any]:
            try:
                sd = await self.systemd()
                return {
                    "unit": unit,
                    "result": await sd.start(unit, job_timeout=self.s.start_timeout),
                }
            except SystemdError as e:
                return {"unit": unit, "result": f"error: {e}"}

        results = await asyncio.gather(*(start(u) for u in units))
        self.details["units_started"] = list(results)
        self.step(
            "start_units",
            all(r["result"] == "done" for r in results),
            "; ".join(f"{r['unit']}: {r['result']}" for r in results),
            changed=True,
        )


class _NotApplicable(Exception):
    """The GPU named in the settings is not on this node."""


async def heal(ctx: HealContext) -> HealResult:
    """Recover the node's GPU(s): flush their jobs, reset when asked and allowed (module doc)."""
    settings = Settings.from_context(ctx)
    if ctx.restore:
        return HealResult(
            HEALER,
            LAYER,
            "not_applicable",
            "nothing to restore: sacral_gpu_recover leaves no runtime change behind",
            dry_run=ctx.dry_run,
        )
    recovery = _Recovery(ctx, settings)
    try:
        return await recovery.run()
    except _NotApplicable as e:
        recovery.step("select_gpu", False, str(e))
        return recovery.result("not_applicable", str(e))
    finally:
        await recovery.close()


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the healer as an executable (``python -m agents.healing.sacral [--dry-run]``)."""
    return main(
        HEALER,
        LAYER,
        heal,
        argv,
        env,
        description="Recover a GPU: stop its jobs, reset it when allowed, start the jobs again.",
    )


if __name__ == "__main__":
    raise SystemExit(run())

"""Runs a layer's healer executable and writes down what it did.

The healer is a separate process (``python -m agents.healing.<layer>`` by
default, or the ``healer`` argv configured for the layer) with the contract of
ARCHITECTURE.md: settings in the environment, one JSON object on stdout, exit
0 healed / 1 not healed / 2 not applicable. It gets a minimal environment (no
tokens of razard's: only PATH, the locale, the bus address and its ``RAZAR_*``
settings), its own process group, and ``healer_timeout`` seconds; then it is
killed and counts as not healed.

Every run is recorded three ways: a journal event carrying ``RAZAR_LAYER``,
a line in ``chakra_healing.log`` (JSON lines in the state directory), and
``razar_heal_attempts_total{layer,healer,result}``. One healer runs per layer
at a time. A run the healer called healed is recorded only once razard has
verified it (see `agents.chakra.Chakra.heal`): ``healed``, or ``did_not_hold``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from agents import confinement
from razard.chakra_config import HEALERS, ChakraConfig
from razard.errors import StateError, SystemdError
from razard.journal import EventLog, Priority
from razard.layers import LAYERS
from razard.layout import HEALING_LOG
from razard.storage import append_jsonl
from razard.systemd import Systemd

OUTPUT_LIMIT: Final = 1 << 20  # a healer's stdout beyond this is cut (and is not valid JSON)
#: What the healer inherits from razard's environment; nothing else (no tokens).
PASSED_ENV: Final = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "HOME",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
    "PYTHONPATH",
    "RAZAR_NVML_FAKE",
)
Result = Literal["healed", "not_healed", "not_applicable", "error", "did_not_hold"]
RESULTS: Final = ("healed", "did_not_hold", "not_healed", "not_applicable", "error")
_RESULTS: Final = {0: "healed", 1: "not_healed", 2: "not_applicable"}


@dataclass(frozen=True)
class HealRun:
    """One run of a healer, as razard saw it."""

    layer: str
    healer: str
    result: Result
    reason: str
    exit_code: int | None
    duration: float
    mode: str = "heal"
    component: str = ""
    unit: str = ""
    report: Mapping[str, Any] = field(default_factory=dict)  # the healer's JSON object
    verified: str = ""  # what razard checked after the healer said healed, and what it saw

    @property
    def healed(self) -> bool:
        return self.result == "healed"

    @property
    def changed(self) -> bool:
        """Did the healer change anything (any step marked ``changed``)?"""
        return any(s.get("changed") for s in self.report.get("steps", []) if isinstance(s, dict))

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "layer": self.layer,
            "healer": self.healer,
            "mode": self.mode,
            "component": self.component or None,
            "unit": self.unit or None,
            "result": self.result,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "healed_by": self.report.get("healed_by"),
            "duration_s": round(self.duration, 3),
            "verified": self.verified or None,
            "steps": self.report.get("steps", []),
        }


class HealerPass(Protocol):
    """A fleet's answer before a disruptive healer runs (see `razard.fleet.node`)."""

    @property
    def allowed(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def env(self) -> Mapping[str, str]: ...


#: ``gate(layer, component, healer environment)``: held around the healer's run
HealerGate = Callable[[str, str, Mapping[str, str]], AbstractAsyncContextManager[HealerPass]]


class HealerMetrics:
    """The healer metrics, on razard's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "razar_heal_attempts",
            "Layer healer runs by outcome (healed and verified, did_not_hold, not_healed, "
            "not_applicable, error)",
            ["layer", "healer", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "razar_heal_duration_seconds",
            "How long layer healers ran",
            ["layer", "healer"],
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=registry,
        )
        for layer in LAYERS:  # every series from 0, so rate() and absence alerts work at once
            for result in RESULTS:
                self.attempts.labels(layer, HEALERS[layer][0], result)


class HealerRunner:
    """Starts healers with their settings and records each run."""

    def __init__(
        self,
        chakra: ChakraConfig,
        *,
        state_dir: Path,
        bus: str,
        config_path: Path,
        events: EventLog,
        metrics: HealerMetrics,
        env: Mapping[str, str] | None = None,
        systemd: Systemd | None = None,
    ) -> None:
        """With ``systemd``, each healer runs as its own sandboxed transient unit; without,
        as a child process (tests, and ``razarctl chakra heal`` with razard down)."""
        self.systemd = systemd
        self.chakra = chakra
        self.state_dir = state_dir
        self.bus = bus
        self.config_path = config_path
        self.events = events
        self.metrics = metrics
        self.env = os.environ if env is None else env
        self.locks: dict[str, asyncio.Lock] = {layer: asyncio.Lock() for layer in LAYERS}
        self.last: dict[str, HealRun] = {}
        self.counts: dict[str, dict[str, int]] = {layer: {} for layer in LAYERS}
        self._cleanups: set[asyncio.Task[None]] = set()  # cancelled healers' units to discard
        self._in_units: set[asyncio.Task[Any]] = set()  # runs waiting on a healer's unit
        #: with a fleet: its budget gate around each healer run (razard.fleet.node)
        self.gate: HealerGate | None = None

    async def aclose(self) -> None:
        """razard is stopping: cancel every healer still running in its unit (whoever asked
        for it, the ladder or an operator) and wait until their units are stopped and
        discarded, before the bus connection closes (else a unit would stay loaded)."""
        for task in list(self._in_units):
            task.cancel()
        while self._in_units or self._cleanups:
            await asyncio.gather(*self._in_units, *self._cleanups, return_exceptions=True)

    def reconfigure(self, chakra: ChakraConfig) -> None:
        """A reloaded ``[chakra]``: the next healer run of each layer uses its new settings
        (a run in progress finishes with the ones it started with)."""
        self.chakra = chakra

    def command(self, layer: str) -> list[str]:
        settings = self.chakra.layer(layer)
        if settings.healer:
            return list(settings.healer)
        return [sys.executable, "-m", *HEALERS[layer][1]]  # type: ignore[index]

    def environment(
        self,
        layer: str,
        *,
        component: str,
        unit: str,
        mode: str,
        dry_run: bool,
        skip: Sequence[str] = (),
    ) -> dict[str, str]:
        env = {k: self.env[k] for k in PASSED_ENV if k in self.env}
        env.update(self.chakra.layer(layer).env())
        env.update(
            RAZAR_LAYER=layer,
            RAZAR_COMPONENT=component,
            RAZAR_UNIT=unit,
            RAZAR_DRY_RUN="1" if dry_run else "0",
            RAZAR_HEAL_MODE=mode,
            RAZAR_STATE_DIR=str(self.state_dir),
            RAZAR_BUS=self.bus,
            RAZAR_CONFIG=str(self.config_path),
            RAZAR_PYTHON=sys.executable,
        )
        if skip:  # actions that did not hold in this outage: the healer tries its next one
            env["RAZAR_HEAL_SKIP"] = ",".join(skip)
        return env

    async def run(
        self,
        layer: str,
        *,
        component: str = "",
        unit: str = "",
        mode: str = "heal",
        dry_run: bool = False,
        why: str = "",
        skip: Sequence[str] = (),
        record: bool = True,
    ) -> HealRun:
        """Run ``layer``'s healer (waiting for one already running on that layer); with
        ``record`` False the caller records it (after verifying it) with `record`."""
        settings = self.chakra.layer(layer)
        healer = settings.healer_name
        async with self.locks[layer]:
            self.events.emit(
                "heal_started",
                f"{layer} healer {healer} ({mode}{', dry run' if dry_run else ''})"
                f"{' for ' + component if component else ''}{': ' + why if why else ''}",
                component=component or None,
                layer=layer,
                unit=unit or None,
                priority=Priority.NOTICE,
                healer=healer,
                mode=mode,
            )
            started = time.monotonic()
            async with contextlib.AsyncExitStack() as stack:
                allowed, extra, reason = True, {}, ""
                if self.gate is not None and not dry_run and mode == "heal":
                    got = await stack.enter_async_context(
                        self.gate(layer, component, settings.env())
                    )
                    allowed, extra, reason = got.allowed, dict(got.env), got.reason
                run = (
                    await self._execute(
                        layer,
                        healer,
                        settings.healer_timeout,
                        component,
                        unit,
                        mode,
                        dry_run,
                        skip,
                        extra,
                    )
                    if allowed
                    else HealRun(layer, healer, "not_healed", reason, None, 0.0)
                )
            run = HealRun(
                layer,
                healer,
                run.result,
                run.reason,
                run.exit_code,
                time.monotonic() - started,
                mode,
                component,
                unit,
                run.report,
            )
            if not dry_run and record:
                self.record(run)
            return run

    async def _execute(
        self,
        layer: str,
        healer: str,
        limit: float,
        component: str,
        unit: str,
        mode: str,
        dry_run: bool,
        skip: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
    ) -> HealRun:
        def fail(reason: str, code: int | None = None) -> HealRun:
            return HealRun(layer, healer, "error", reason, code, 0.0)

        argv = self.command(layer)
        env = self.environment(
            layer, component=component, unit=unit, mode=mode, dry_run=dry_run, skip=skip
        )
        env.update(extra or {})  # the fleet's limits on a healer that got no budget slot
        if self.systemd is not None:
            task = asyncio.current_task()
            assert task is not None
            self._in_units.add(task)
            try:
                return await self._execute_in_unit(layer, healer, limit, argv, env)
            finally:
                self._in_units.discard(task)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd="/",
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
        except OSError as e:
            return fail(f"cannot start {argv[0]}: {e.strerror or e}")
        try:
            async with asyncio.timeout(limit):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return fail(f"killed after healer_timeout {limit:g}s")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        return _outcome(layer, healer, proc.returncode, out, " | ".join(tail))

    async def _execute_in_unit(
        self, layer: str, healer: str, limit: float, argv: list[str], env: dict[str, str]
    ) -> HealRun:
        """Run the healer as its own sandboxed transient unit (see `agents.confinement`)."""
        assert self.systemd is not None
        sd = self.systemd
        name = confinement.unit_name(layer, uuid.uuid4().hex[:10])
        out_dir = self.chakra.runtime_dir / "heal"
        out = out_dir / f"{name}.out"
        exe = argv[0] if os.path.isabs(argv[0]) else shutil.which(argv[0], path=env.get("PATH"))
        if exe is None:
            return HealRun(layer, healer, "error", f"cannot find {argv[0]!r} on PATH", None, 0.0)
        readable = [Path(exe), Path(sys.executable), Path(__file__).parent, self.config_path]
        readable += [Path(v) for v in env.values() if v.startswith("/") and ":" not in v]
        props = confinement.properties(
            layer,
            [exe, *argv[1:]],
            env,
            output=out,
            writable=[self.state_dir],
            readable=readable,
            timeout=limit,
        )
        try:
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            result = await sd.start_transient(name, props, job_timeout=limit + 30)
        except OSError as e:
            return HealRun(layer, healer, "error", f"{out_dir}: {e.strerror or e}", None, 0.0)
        except SystemdError as e:
            return HealRun(layer, healer, "error", f"cannot start {name}: {e}", None, 0.0)
        except asyncio.CancelledError:
            # stopped, then forgotten: a cancelled healer's unit must not stay loaded, failed
            task = asyncio.get_running_loop().create_task(self._discard(sd, name))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            raise
        code: int | None = 0
        unit_result = "success"
        if result != "done":
            try:
                svc = await sd.properties(name)
                code, unit_result = int(svc.get("ExecMainStatus", -1)), str(svc.get("Result"))
            except (SystemdError, ValueError, TypeError):
                code, unit_result = None, result
            finally:
                with contextlib.suppress(SystemdError):  # the outcome is known: report it
                    await sd.reset_failed(name)  # a failed transient unit stays loaded until this
        try:
            with out.open("rb") as f:
                data = f.read(OUTPUT_LIMIT)  # a noisy healer's output is not loaded whole
        except OSError:
            data = b""
        with contextlib.suppress(OSError):
            out.unlink()
        if unit_result == "timeout":
            return HealRun(
                layer, healer, "error", f"killed after healer_timeout {limit:g}s", None, 0.0
            )
        hint = f"its stderr: journalctl -t {confinement.identifier(layer)} ({name})"
        if unit_result not in ("success", "exit-code"):
            return HealRun(layer, healer, "error", f"{name} {unit_result}; {hint}", code, 0.0)
        return _outcome(layer, healer, code, data, hint)

    @staticmethod
    async def _discard(sd: Systemd, name: str) -> None:
        with contextlib.suppress(SystemdError):
            await sd.stop(name, job_timeout=30)
        with contextlib.suppress(SystemdError):
            await sd.reset_failed(name)

    def record(self, run: HealRun) -> None:
        """Write the run down: ``last``, the counts, the metric, the log line, the journal."""
        self.last[run.layer] = run
        counts = self.counts[run.layer]
        counts[run.result] = counts.get(run.result, 0) + 1
        self.metrics.attempts.labels(run.layer, run.healer, run.result).inc()
        self.metrics.duration.labels(run.layer, run.healer).observe(run.duration)
        record = run.as_dict()
        with contextlib.suppress(StateError):  # a full disk must not stop the healing
            append_jsonl(self.state_dir / HEALING_LOG, record)
        priority = Priority.NOTICE if run.result in ("healed", "not_applicable") else Priority.ERR
        by = (
            f" by {run.report.get('healed_by')}"
            if run.healed and run.report.get("healed_by")
            else ""
        )
        checked = f" ({run.verified})" if run.healed and run.verified else ""
        self.events.emit(
            "heal_result",
            f"{run.layer} healer {run.healer}: {run.result.replace('_', ' ')}{by}: {run.reason}"
            f"{checked}",
            component=run.component or None,
            layer=run.layer,
            unit=run.unit or None,
            priority=priority,
            healer=run.healer,
            result=run.result,
            mode=run.mode,
            healed_by=run.report.get("healed_by"),
            exit_status=run.exit_code,
            duration_ms=round(run.duration * 1000),
        )


def _outcome(layer: str, healer: str, code: int | None, out: bytes, stderr_tail: str) -> HealRun:
    """Read a finished healer's exit code and JSON object as the contract says."""
    report = _last_json(out[:OUTPUT_LIMIT])
    if report is None:
        return HealRun(
            layer,
            healer,
            "error",
            f"exit {code} without a JSON result{': ' + stderr_tail if stderr_tail else ''}",
            code,
            0.0,
        )
    result = _RESULTS.get(code if code is not None else -1)
    if result is None:
        return HealRun(
            layer,
            healer,
            "error",
            f"exit {code}: {report.get('reason', '')}",
            code,
            0.0,
            report=report,
        )
    reason = str(report.get("reason", "")) or result
    return HealRun(layer, healer, result, reason, code, 0.0, report=report)  # type: ignore[arg-type]


def _last_json(out: bytes) -> dict[str, Any] | None:
    """The last line of ``out`` that is a JSON object (the contract: exactly one)."""
    for line in reversed(out.decode(errors="replace").strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None

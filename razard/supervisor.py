"""The supervisor: boots components in waves, watches them, and climbs the ladder.

Each component has one runner task. A runner brings its unit up (or adopts it
when it is already running and healthy), then watches two things at once: the
unit's ``PropertiesChanged`` signals (death is seen the moment systemd reports
it) and the probe on its interval. A failure goes to the pure ladder policy
(`razard.policy.next_rung`); the runner carries out the decision.

Operator commands, reloads and quarantine releases replace a runner: the old
task is cancelled and a new one started with the new intent, so a runner never
has to poll for outside changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from razard import __version__
from razard.aio import LazyEvent
from razard.config import ComponentConfig, Config
from razard.errors import ControlError, RazarError, StateError, SystemdError, UnknownComponent
from razard.journal import EventLog, Priority
from razard.layers import LAYERS
from razard.metrics import Metrics
from razard.policy import History, Rung, next_rung, plan_waves, settle
from razard.probes import Prober, ProbeResult
from razard.quarantine import QuarantineStore
from razard.repair.handover import FailureInfo
from razard.repair.patch import PatchEngine
from razard.repair.rung import RepairRung
from razard.state import ComponentRecord, StateStore
from razard.systemd import Systemd, UnitStatus
from razard.unitfile import default_unit_dir, fingerprint, read_fingerprint, remove_unit, write_unit

log = logging.getLogger(__name__)


class LayerHealRun(Protocol):
    """One layer heal as the control surface reports it (`agents.healer.HealRun`)."""

    @property
    def report(self) -> Mapping[str, Any]: ...

    def as_dict(self) -> dict[str, Any]: ...


class LayerAgents(Protocol):
    """What the control surface asks of the layer agents (`agents.chakra.Chakra`, which
    the daemon wires in): named here so the core imports nothing of agents/."""

    def snapshot(self) -> list[dict[str, Any]]: ...

    async def heal(self, layer: str, *, dry_run: bool = False, why: str = "") -> LayerHealRun: ...


#: A component without a probe counts as healthy once its unit stayed active this long.
NO_PROBE_UPTIME = 1.0
#: Seconds before a failure cycle's first failure whose journal lines still belong to it.
CYCLE_LOOKBACK = 10.0
#: Units watched at once while razard starts.
WATCH_CONCURRENCY = 32
#: At most this many seconds pass before a change only worth keeping lazily is written.
LAZY_SAVE = 30.0
#: How long `razarctl restart` waits for the component to settle before answering.
RESTART_REPLY_WAIT = 20.0
#: Saved statuses that claim the unit runs: at start they must match what systemd says.
#: States saved lazily (within LAZY_SAVE, or with the next urgent write): each is an fsync'd
#: write of the whole state, and a boot or crash storm makes one per component per state,
#: one after the other. They report progress; a crash that loses one loses nothing the
#: ladder counts (a restart is saved as "restarting" before it is carried out), and a lost
#: "healthy" only leaves the restart budget as spent as it was (the safe side).
LAZY_STATES = frozenset({"starting", "healthy"})
RUNNING_STATES = frozenset({"healthy", "unhealthy", "starting", "restarting", "escalating"})
#: Probe rounds are due on a grid of this many seconds (at most a tenth of the interval).
PROBE_TICK = 0.25


class Ticker:
    """Wakes many waiters at shared instants: each deadline is rounded up to a grid of
    ``tick`` seconds and each grid point has one loop timer for everyone due there.

    Hundreds of probes on the same interval then start together in one turn of the
    loop (and their connections complete together in the next) instead of a timer,
    a wakeup and an epoll round each, spread over the interval: at 500 components
    probed every 5 s that per-probe overhead was most of razard's idle CPU. A waiter
    is woken at most one tick (a tenth of its period, 0.25 s at most) late and never
    early; a caller that schedules each round from the last one's deadline (not from
    when it woke) keeps its period exact.
    """

    def __init__(self, tick: float = PROBE_TICK) -> None:
        self.tick = tick
        self._slots: dict[float, set[asyncio.Event]] = {}

    def wake_at(self, when: float, event: asyncio.Event, period: float) -> Callable[[], None]:
        """Set ``event`` at loop time ``when`` (rounded up to the grid for ``period``);
        the returned function cancels that (harmless after it fired)."""
        loop = asyncio.get_running_loop()
        if when <= loop.time() or period <= 0:
            event.set()
            return _nothing
        tick = min(self.tick, period / 10)
        at = math.ceil(when / tick - 1e-6) * tick  # a deadline on the grid stays put
        waiters = self._slots.get(at)
        if waiters is None:
            waiters = self._slots[at] = set()
            loop.call_at(at, self._fire, at)
        waiters.add(event)
        return lambda: waiters.discard(event)

    def _fire(self, at: float) -> None:
        for event in self._slots.pop(at, ()):
            event.set()


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Failure:
    """One failure of one component, as the ladder sees it."""

    component: str
    kind: str  # "exit" (unit died), "probe", "start"
    error: str
    probe_output: str = ""
    unit_result: str = ""
    exit_status: int | None = None
    cycle_started: float | None = None  # when this failure cycle began (unix time)
    healer_tried: bool = False  # the layer agent already ran the layer's healer for it


class EscalationRung(Protocol):
    """A rung between restarts and quarantine (layer healer, repair agents).

    ``attempt`` gets a ``verify`` callback (restart the unit, wait for its probe)
    and returns True only when a change it made was verified.
    """

    name: str

    async def attempt(
        self,
        component: ComponentConfig,
        failure: Failure,
        verify: Callable[[], Awaitable[bool]],
    ) -> bool: ...


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as seen (it was reported through another path)."""
    if not task.cancelled():
        task.exception()


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Runner:
    """Supervises one component for as long as it is configured."""

    def __init__(self, sup: Supervisor, cfg: ComponentConfig) -> None:
        self.sup = sup
        self.cfg = cfg
        self.settled = LazyEvent()  # healthy, or given up on: the wave may move on
        self._died = LazyEvent()
        self._wake = LazyEvent()  # the monitor has something to look at: a death, a failure
        self._injected: Failure | None = None  # from the layer agent (heartbeat, layer down)
        self._monitoring = False
        self._expect_running = False
        self.unit_status: UnitStatus | None = None
        self.task: asyncio.Task[None] | None = None
        self.ladder_log: list[dict[str, Any]] = []  # rungs taken in this failure cycle
        self.heal_task: asyncio.Task[dict[str, Any]] | None = None  # a razarctl heal
        self.last_failure: Failure | None = None
        self.cycle_started: float | None = None

    @property
    def rec(self) -> ComponentRecord:
        return self.sup.state.record(self.cfg.name)

    # ------------------------------------------------------------ signals

    def on_unit(self, status: UnitStatus) -> None:
        """Called for every change of the unit (from D-Bus signals)."""
        self.unit_status = status
        m = self.sup.metrics
        m.up.labels(self.cfg.name, self.cfg.layer).set(1 if status.active_state == "active" else 0)
        if self._expect_running and status.job and self.sup.healing:
            # a job razard did not ask for (razard's own come while it does not expect the
            # unit running) while a healer runs: the healer is stopping or restarting it
            self.sup.claim(self.cfg.unit)
        if self._expect_running and status.dead and not self.sup.held(self.cfg.unit):
            self._died.set()
            self._wake.set()

    def recheck(self) -> None:
        """After a healer's hold: a unit that is down now (and stayed down) is a death."""
        st = self.unit_status
        if self._expect_running and st is not None and st.dead:
            self._died.set()
            self._wake.set()

    def inject(self, failure: Failure) -> bool:
        """Hand the runner a failure seen elsewhere; False when it is not watching right now."""
        if not self._monitoring or self._injected is not None:
            return False
        self._injected = failure
        self._wake.set()
        return True

    # ------------------------------------------------------------ lifecycle

    @property
    def alive(self) -> bool:
        return self.task is not None and not self.task.done()

    def spawn(self, *, adopt: bool, force_restart: bool = False) -> None:
        """Start the runner task; never a second one for the same component."""
        if self.alive:
            return
        self.task = asyncio.get_running_loop().create_task(
            self._main(adopt=adopt, force_restart=force_restart), name=f"runner:{self.cfg.name}"
        )

    @property
    def healing(self) -> bool:
        return self.heal_task is not None and not self.heal_task.done()

    async def cancel_heal(self) -> None:
        """Cancel a running `razarctl heal` of this component (its patch is restored)."""
        task = self.heal_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RazarError):
                await task

    async def cancel(self) -> None:
        """Stop supervising; a boot wave waiting on this component moves on."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        self._expect_running = False
        self.settled.set()

    async def _main(self, *, adopt: bool, force_restart: bool) -> None:
        try:
            await self._loop(adopt=adopt, force_restart=force_restart)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug must not take razard down with it
            log.exception("runner for %s crashed", self.cfg.name)
            self.sup.set_state(self, "failed", error=f"internal error: {e}")
            self.sup.event(
                self,
                "operator_alert",
                f"{self.cfg.name}: razard stopped supervising it after an internal error: {e}",
                priority=Priority.ALERT,
            )
        finally:
            self.settled.set()

    async def _loop(self, *, adopt: bool, force_restart: bool) -> None:
        name = self.cfg.name
        healthy = False
        if self.rec.in_escalation and self.rec.escalations > 0:
            # razard stopped in the middle of a rung (its unverified patch has been undone):
            # that rung did not get its chance, so it is tried again rather than skipped
            self.rec.escalations -= 1
            self.rec.in_escalation = False
            self.sup.event(
                self,
                "escalation_interrupted",
                "the last escalation was interrupted (razard restarted, or an operator "
                "command); it will be tried again",
                priority=Priority.WARNING,
            )
        if self.rec.status == "quarantined" and not self.sup.quarantine.is_quarantined(name):
            # the file was deleted while razard was not running: that is a release
            self.sup.quarantine.log_release(name, "file removed while razard was down")
            self.rec.restarts = self.rec.escalations = 0
            self.sup.event(
                self, "quarantine_released", "released (file removed while razard was down)"
            )
        while True:
            if self.sup.quarantine.is_quarantined(name):
                self.sup.set_state(self, "quarantined")
                self.settled.set()
                return  # a release replaces this runner
            if self.rec.operator_stopped:
                self.sup.set_state(self, "stopped")
                self.settled.set()
                return
            failure = (
                None if healthy else await self._bring_up(adopt=adopt, force_restart=force_restart)
            )
            adopt = force_restart = healthy = False
            if failure is None:
                self.settled.set()
                failure = await self._monitor()
            next_step = await self._climb(failure)
            if next_step is None:
                return
            healthy = next_step == "healthy"

    # ------------------------------------------------------------ bring up

    async def _bring_up(self, *, adopt: bool, force_restart: bool) -> Failure | None:
        sd, cfg = self.sup.systemd, self.cfg
        while True:
            await sd.wait_connected()  # a bus outage is razard's problem, not the component's
            # a watched unit's status is read when the watch begins and kept current by its
            # signals since: bringing it up needs no round trips to read it again
            cached = sd.cached(cfg.unit)
            if cached is not None and cached.load_state == "loaded":
                status = cached
                break
            try:
                status = await sd.status(cfg.unit)
                break
            except SystemdError as e:
                if sd.connected:
                    return Failure(cfg.name, "start", f"cannot load unit {cfg.unit}: {e}")
        self.on_unit(status)
        if adopt and status.active_state == "active" and not force_restart:
            # running and matching its config (stale units come with force_restart): adopt
            # it and give it its start_timeout to be healthy, rather than restarting a
            # model that is still warming up
            self._expect_running = True
            self._died.clear()
            failure = await self._await_healthy()
            if failure is None:
                self.sup.event(
                    self,
                    "component_adopted",
                    f"adopted running unit {cfg.unit} (pid {status.main_pid}) "
                    "without restarting it",
                )
            return failure
        self._expect_running = False
        try:
            # both calls go out back to back (systemd handles them in order): one round
            # trip instead of two before the unit's process is forked
            loop = asyncio.get_running_loop()
            reset = loop.create_task(sd.reset_failed(cfg.unit))
            begin = sd.restart if status.running else sd.start
            started = loop.create_task(begin(cfg.unit, job_timeout=cfg.start_timeout + 30))
            # after the calls are queued: their first step puts them on the wire before the
            # state write this queues (an fsync, milliseconds on a disk); "starting" only
            # says so, what the ladder must not lose (a restart counted) was saved before
            self.sup.set_state(self, "starting")
            try:
                await asyncio.gather(reset, started)
            finally:
                for t in (reset, started):
                    t.cancel()
                    t.add_done_callback(_retrieve)  # the other call's error is not lost silently
            job = started.result()
        except SystemdError as e:
            if not sd.connected:
                return await self._bring_up(adopt=False, force_restart=force_restart)
            return Failure(cfg.name, "start", str(e))
        self._died.clear()
        self._expect_running = True
        if job == "done" and cfg.name in self.sup.restarts_owed:
            # started afresh from the files as they are now: the restart owed is done
            self.sup.restarts_owed.discard(cfg.name)
            with contextlib.suppress(OSError):
                self.sup.engine.restart_done(cfg.name)
        current = sd.cached(cfg.unit) or self.unit_status
        if job != "done" or (current is not None and current.dead):
            with contextlib.suppress(SystemdError):
                current = await sd.status(cfg.unit)
            return self._unit_failure(current, f"start job {job}")
        return await self._await_healthy()

    async def _await_healthy(self) -> Failure | None:
        """Wait for the first passing probe within the component's start timeout."""
        cfg = self.cfg
        if cfg.probe is None:
            # no probe: healthy once the unit has stayed up (like supervisord's startsecs)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(NO_PROBE_UPTIME, cfg.start_timeout)):
                    await self._died.wait()
            if self._died.is_set():
                return self._unit_failure(self.unit_status, "died while starting")
            self._healthy(None)
            return None
        deadline = time.monotonic() + cfg.start_timeout
        last: ProbeResult | None = None
        pause = min(cfg.probe.interval, 0.25)
        while time.monotonic() < deadline:
            if self._died.is_set():
                return self._unit_failure(self.unit_status, "died while starting")
            last = await self._check()
            if last is not None and last.ok:
                self._healthy(last)
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(pause, max(0.0, deadline - time.monotonic()))):
                    await self._died.wait()
            pause = min(pause * 2, cfg.probe.interval)
        detail = last.detail if last else "no probe result"
        return Failure(
            cfg.name,
            "probe",
            f"probe did not pass within start_timeout {cfg.start_timeout:g}s: {detail}",
            probe_output=detail,
        )

    def _unit_failure(self, status: UnitStatus | None, what: str) -> Failure:
        st = status.describe() if status else "unknown"
        code = status.exec_main_status if status and status.exec_main_code == 1 else None
        return Failure(
            self.cfg.name,
            "exit",
            f"unit {self.cfg.unit} {what}: {st}",
            unit_result=status.result if status else "",
            exit_status=code,
        )

    # ------------------------------------------------------------ monitor

    async def _check(self) -> ProbeResult | None:
        probe = self.cfg.probe
        if probe is None:
            return None
        result = await self.sup.prober.run(
            probe, cwd=self.cfg.working_directory or None, user=self.cfg.user or None
        )
        m = self.sup.metrics
        m.probe_duration.labels(self.cfg.name, probe.kind).observe(result.duration)
        if result.ours:
            return result
        m.probes.labels(self.cfg.name, probe.kind, "ok" if result.ok else "failed").inc()
        if not result.ok:
            m.probe_failures.labels(self.cfg.name, probe.kind).inc()
        return result

    def _healthy(self, result: ProbeResult | None) -> None:
        now = time.time()
        rec = self.rec
        if rec.status != "healthy" or rec.healthy_since is None:
            rec.healthy_since = now
        rec.last_healthy = now
        hist = settle(self._history(), self.cfg.restart, now)
        if hist.restarts != rec.restarts or hist.escalations != rec.escalations:
            rec.restarts, rec.escalations = hist.restarts, hist.escalations
            self.sup.event(
                self,
                "backoff_reset",
                f"healthy for {self.cfg.restart.healthy_window:g}s; restart budget reset",
            )
        self.sup.metrics.healthy.labels(self.cfg.name, self.cfg.layer).set(1)
        if rec.status != "healthy":
            detail = f" ({result.detail}, {result.duration * 1000:.0f} ms)" if result else ""
            self.sup.set_state(self, "healthy", note=f"healthy{detail}")
        else:
            self.sup.save_later()  # only the time of the last check changed

    async def _monitor(self) -> Failure:
        """The next failure: the unit died, the probe failed ``threshold`` times, or the layer
        agent handed one in (a silent heartbeat, a layer its healer could not heal)."""
        self._monitoring = True
        try:
            return await self._watch()
        finally:
            self._monitoring = False
            self._injected = None

    async def _watch(self) -> Failure:
        cfg = self.cfg
        misses = 0
        interval = cfg.probe.interval if cfg.probe else cfg.restart.healthy_window or 60.0
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            if not self._died.is_set() and self._injected is None:
                self._wake.clear()
                # each round is due one interval after the last was due (not after it
                # ended), or now when a round took longer than the interval
                due = max(due + interval, loop.time())
                # the interval ends by setting the same event a death sets: no timeout
                # exception to raise and catch every probe, hundreds of times a second
                cancel = self.sup.ticker.wake_at(due, self._wake, interval)
                try:
                    await self._wake.wait()
                finally:
                    cancel()
            if self._died.is_set():
                return self._unit_failure(self.unit_status, "died")
            if self._injected is not None:
                return self._injected
            if self.sup.held(cfg.unit):
                misses = 0  # a healer is restarting this unit: its probe says nothing now
                continue
            if cfg.probe is None:
                self._healthy(None)
                continue
            result = await self._check()
            assert result is not None
            if result.ours:  # razard's own lack of descriptors: nothing about the component
                continue
            if result.ok:
                if misses:
                    self.sup.event(self, "probe_recovered", f"probe passes again: {result.detail}")
                misses = 0
                self._healthy(result)
                continue
            misses += 1
            self.rec.last_error = f"probe: {result.detail}"
            self.sup.event(
                self,
                "probe_failed",
                f"probe failed ({misses}/{cfg.probe.failure_threshold}): {result.detail}",
                priority=Priority.WARNING,
                duration_ms=round(result.duration * 1000, 1),
            )
            if misses == 1:
                self.sup.set_state(self, "unhealthy")
            if misses >= cfg.probe.failure_threshold:
                return Failure(
                    cfg.name,
                    "probe",
                    f"probe failed {misses} times in a row: {result.detail}",
                    probe_output=result.detail,
                )

    # ------------------------------------------------------------ ladder

    def _history(self) -> History:
        rec = self.rec
        return History(
            restarts=rec.restarts,
            escalations=rec.escalations,
            last_restart_at=rec.last_restart,
            healthy_since=rec.healthy_since,
        )

    async def verify(self) -> bool:
        """Restart the unit and wait for its probe: did the last change fix it?"""
        return await self._bring_up(adopt=False, force_restart=True) is None

    async def verify_in_place(self) -> bool:
        """Wait for the probe without restarting a running unit (a healer just restarted it)."""
        try:
            status = await self.sup.systemd.status(self.cfg.unit)
        except SystemdError:
            return False
        self.on_unit(status)
        if status.active_state != "active":
            return await self.verify()
        self._expect_running = True
        self._died.clear()
        return await self._await_healthy() is None

    async def _climb(self, failure: Failure) -> str | None:
        """Carry out the ladder's decisions for ``failure``.

        Returns "restart" (bring the unit up again), "healthy" (an escalation rung
        fixed and verified it) or None (quarantined: the runner ends).
        """
        cfg, sup, rec = self.cfg, self.sup, self.rec
        self._expect_running = False
        now = time.time()
        hist = settle(self._history(), cfg.restart, now)
        rec.restarts, rec.escalations = hist.restarts, hist.escalations
        rec.healthy_since = None
        rec.last_error = failure.error
        self.last_failure = failure
        sup.metrics.failures.labels(cfg.name, cfg.layer, failure.kind).inc()
        sup.metrics.healthy.labels(cfg.name, cfg.layer).set(0)
        if not hist.restarts and not hist.escalations:
            self.ladder_log = []  # a new failure cycle
            # its output may precede the failure razard saw: take a little before it too
            self.cycle_started = now - CYCLE_LOOKBACK
        while True:
            decision = next_rung(self._history(), cfg.restart, len(sup.rungs), sup.rng)
            if decision.rung is Rung.QUARANTINE:  # say what each rung really did
                decision = replace(decision, reason=self._quarantine_reason(decision.reason))
            sup.metrics.rungs.labels(cfg.name, decision.rung.value).inc()
            self.ladder_log.append(
                {
                    "rung": decision.rung.value,
                    "reason": decision.reason,
                    "error": failure.error,
                    "time": _iso(time.time()),
                }
            )
            sup.event(
                self,
                "component_failed",
                f"{failure.error}; next: {decision.reason}",
                priority=Priority.ERR,
                failure_kind=failure.kind,
                rung=decision.rung.value,
                unit_result=failure.unit_result or None,
                exit_status=failure.exit_status,
            )
            if decision.rung is Rung.RESTART:
                rec.restarts += 1
                rec.restarts_total += 1
                rec.last_restart = now
                sup.set_state(
                    self, "restarting", note=f"{decision.reason} in {decision.delay:.2f}s"
                )
                sup.metrics.restarts.labels(cfg.name, cfg.layer).inc()
                await asyncio.sleep(decision.delay)
                return "restart"
            if decision.rung is Rung.QUARANTINE:
                await self.quarantine(decision.reason, self.ladder_log)
                return None
            rung = sup.rungs[decision.attempt - 1]
            rec.escalations += 1
            rec.in_escalation = True  # persisted: a razard killed mid-rung retries the rung
            sup.set_state(self, "escalating", note=f"{decision.reason}: {rung.name}")
            sup.save_now()  # a rung may act before it first yields
            verify = self.verify if getattr(rung, "restarts_unit", True) else self.verify_in_place
            try:
                fixed = await rung.attempt(
                    cfg, replace(failure, cycle_started=self.cycle_started), verify
                )
            except RazarError as e:
                fixed = False
                sup.event(self, "escalation_error", f"{rung.name}: {e}", priority=Priority.ERR)
            rec.in_escalation = False
            records = getattr(rung, "records", None)
            how = getattr(rung, "outcome", None)
            outcome, why = how(cfg.name) if callable(how) else ("fixed" if fixed else "failed", "")
            if fixed:
                outcome = "fixed"
            self.ladder_log.append(
                {
                    "rung": rung.name,
                    "fixed": fixed,
                    "outcome": outcome,
                    "why": why or None,
                    "attempts": records(cfg.name) if callable(records) else [],
                }
            )
            said = {
                "fixed": "fixed",
                "failed": "not fixed",
                "not_applicable": "not applicable here",
                "skipped": "skipped",
            }.get(outcome, outcome)
            sup.event(
                self,
                "escalation_result",
                f"{rung.name}: {said}{': ' + why if why and not fixed else ''}",
                outcome=outcome,
            )
            if fixed:
                # a verified fix ends the failure cycle: the next failure starts a new one
                rec.restarts = rec.escalations = 0
                sup.event(
                    self,
                    "backoff_reset",
                    f"fixed by the {rung.name} rung; the failure cycle ends, restart budget reset",
                )
                return "healthy"
            # not fixed: the unit is down; the next rung decides without another bring-up

    def _quarantine_reason(self, reason: str) -> str:
        """The ladder's reason, with what each escalation rung of this cycle really did:
        a rung that was not applicable or skipped did not fail."""
        outcomes: dict[str, list[str]] = {}
        for entry in self.ladder_log:
            outcome = entry.get("outcome")
            if outcome in ("failed", "not_applicable", "skipped"):
                why = entry.get("why")
                outcomes.setdefault(outcome, []).append(
                    f"{entry['rung']}{f' ({why})' if why else ''}"
                )
        if not outcomes:
            return reason
        head = reason.split(" and ", 1)[0] if " escalation rung(s) failed" in reason else reason
        words = {"failed": "failed", "not_applicable": "not applicable here", "skipped": "skipped"}
        return head + "".join(
            f"; {words[k]}: {', '.join(v)}" for k, v in outcomes.items() if k in words
        )

    async def quarantine(self, reason: str, history: list[dict[str, Any]] | None = None) -> None:
        """Stop the unit, write the quarantine file and alert the operator."""
        cfg, sup = self.cfg, self.sup
        self._expect_running = False
        # written before acting: a razard killed in between still finds it quarantined
        sup.quarantine.put(
            cfg.name,
            unit=cfg.unit,
            layer=cfg.layer,
            reason=reason,
            last_error=self.rec.last_error,
            attempts=self.rec.restarts,
            history=history,
        )
        for _ in range(5):
            await sup.systemd.wait_connected()
            try:
                await sup.systemd.stop(cfg.unit, job_timeout=30)
                # the quarantine says what failed; `systemctl --failed` need not say it again
                with contextlib.suppress(SystemdError):
                    await sup.systemd.reset_failed(cfg.unit)
                break
            except SystemdError as e:
                sup.event(
                    self,
                    "quarantine_stop_failed",
                    f"stopping {cfg.unit}: {e}",
                    priority=Priority.ERR,
                )
                await asyncio.sleep(1)
        sup.set_state(self, "quarantined", note=reason, priority=Priority.CRIT)
        sup.event(
            self,
            "operator_alert",
            f"{cfg.name} quarantined: {reason}; last error: {self.rec.last_error}. "
            f"Release with `razarctl quarantine release {cfg.name}`",
            priority=Priority.ALERT,
        )
        self.settled.set()


class Supervisor:
    """Owns every runner; the object razard's control interface talks to."""

    def __init__(
        self,
        config: Config,
        systemd: Systemd,
        events: EventLog,
        metrics: Metrics,
        *,
        rungs: Sequence[EscalationRung] = (),
        repair: RepairRung | None = None,
        engine: PatchEngine | None = None,
        ladder_info: Mapping[str, Any] | None = None,
        restart_on_boot: set[str] | None = None,
        on_change: Callable[[], None] | None = None,
        reload_config: Callable[[], Config] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.systemd = systemd
        self.events = events
        self.metrics = metrics
        self.repair = repair
        self.rungs: list[EscalationRung] = list(rungs) + ([repair] if repair else [])
        self.engine = engine or PatchEngine(config.daemon.state_dir)
        self.ladder_info = dict(ladder_info or {})
        self._restart_on_boot = set(restart_on_boot or ())
        #: components whose running process may predate an undone patch (see PatchEngine)
        self.restarts_owed = set(self._restart_on_boot)
        self.rng = rng or random.Random()
        self.state = StateStore(config.daemon.state_dir)
        self.quarantine = QuarantineStore(config.daemon.state_dir)
        self.prober = Prober()
        self.ticker = Ticker()
        self.runners: dict[str, Runner] = {}
        self._summary: tuple[tuple[int, int], str] = ((-1, -1), "")
        self._status_changes = 0  # bumped when a status or the set of runners changes
        #: one set of units per healer running: the units it stops or restarts, whose deaths
        #: and probe misses wait until it finishes; every other unit is watched as usual
        self._holds: list[set[str]] = []
        self.layer_agents: LayerAgents | None = None  # set by the daemon once they run
        self.on_config: list[Callable[[Config], Awaitable[None]]] = []  # after a reload
        self.ready = False
        self._on_change = on_change
        self._reload_config = reload_config
        self._lock = asyncio.Lock()
        self._stop_watch: Callable[[], None] | None = None
        self._stale: set[str] = set()  # owned units whose file predates a config change
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._save_failed = False
        self._save_handle: asyncio.Handle | None = None  # a queued write of the state
        self._save_due = -1.0  # when it is due (loop time); 0: this turn; -1: none queued
        self._change_queued = False
        self.unit_dir = config.daemon.unit_dir or default_unit_dir(config.daemon.bus)

    # ------------------------------------------------------------ plumbing

    def unit_path(self, cfg: ComponentConfig) -> Path:
        return self.unit_dir / cfg.unit

    def save(self) -> None:
        """Persist state at the end of this turn of the event loop.

        Every change made in the same turn (a crash storm: a hundred runners at once) goes
        out in one write, and still before any runner acts on it: a runner yields to the
        loop (its restart delay) between recording a restart and carrying it out.
        """
        if self._save_due == 0.0:
            return  # a write is already queued for this turn
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (shutdown, tests): write now
            self.save_now()
            return
        if self._save_handle is not None:
            self._save_handle.cancel()
        self._save_due = 0.0
        self._save_handle = loop.call_soon(self.save_now)

    def save_later(self) -> None:
        """Persist state within `LAZY_SAVE` seconds: for what a crash may lose, such as the
        time of the last passing probe. Joins any earlier write."""
        if self._save_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save_now()
            return
        self._save_due = loop.time() + LAZY_SAVE
        self._save_handle = loop.call_later(LAZY_SAVE, self.save_now)

    def save_now(self) -> None:
        """Persist state now; a full disk is reported once and does not stop supervision."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        self._save_due = -1.0
        try:
            self.state.save()
        except StateError as e:
            if not self._save_failed:
                self._save_failed = True
                self.events.emit(
                    "state_save_failed",
                    f"{e}; supervising on without saving",
                    priority=Priority.CRIT,
                )
        else:
            if self._save_failed:
                self._save_failed = False
                self.events.emit(
                    "state_save_recovered", "state is being saved again", priority=Priority.NOTICE
                )

    def event(
        self,
        runner: Runner | None,
        event: str,
        message: str,
        priority: int = Priority.INFO,
        **fields: Any,
    ) -> None:
        cfg = runner.cfg if runner else None
        self.events.emit(
            event,
            message,
            component=cfg.name if cfg else None,
            layer=cfg.layer if cfg else None,
            priority=priority,
            unit=cfg.unit if cfg else None,
            **fields,
        )

    def set_state(
        self,
        runner: Runner,
        state: str,
        *,
        error: str | None = None,
        note: str | None = None,
        priority: int = Priority.NOTICE,
    ) -> None:
        rec = runner.rec
        if error is not None:
            rec.last_error = error
        changed = rec.status != state
        if changed:
            rec.status = state
            rec.since = time.time()
            self._status_changes += 1
        self.metrics.set_state(runner.cfg.name, runner.cfg.layer, state)
        if state in LAZY_STATES:
            self.save_later()
        else:
            self.save()
        if changed:
            self.event(
                runner,
                f"state_{state}",
                note or error or state,
                priority=priority,
                state=state,
                restarts=rec.restarts,
            )
        if self._on_change and not self._change_queued:
            # once per turn of the loop: the summary it reports counts every component
            try:
                asyncio.get_running_loop().call_soon(self._report_change)
                self._change_queued = True
            except RuntimeError:
                self._on_change()

    def _report_change(self) -> None:
        self._change_queued = False
        if self._on_change:
            self._on_change()

    # ------------------------------------------------------------ layer agents

    @contextlib.asynccontextmanager
    async def hold(self, units: Iterable[str] = ()) -> AsyncIterator[set[str]]:
        """While a healer runs, the units it stops or restarts are not failures: ``units``
        (those it is known to restart) and any unit systemd runs a job on meanwhile that
        razard did not ask for (see `Runner.on_unit`). Afterwards a held unit that is still
        down is a failure. Every other unit is watched and restarted as usual. Yields the
        set of held units, which grows as the healer acts."""
        held = set(units)
        self._holds.append(held)
        try:
            yield held
        finally:
            self._holds.remove(held)
            for runner in list(self.runners.values()):
                if runner.cfg.unit in held and not self.held(runner.cfg.unit):
                    runner.recheck()

    @property
    def healing(self) -> bool:
        """A healer is running."""
        return bool(self._holds)

    def held(self, unit: str) -> bool:
        """A running healer holds ``unit``: its deaths and probe misses are not failures now."""
        return any(unit in h for h in self._holds)

    def claim(self, unit: str) -> None:
        """A healer is acting on ``unit``: hold it until the healers running now finish."""
        for h in self._holds:
            h.add(unit)

    def main_pid(self, unit: str) -> int:
        """The unit's main pid as last seen (0: none, or not watched)."""
        st = self.systemd.cached(unit)
        return st.main_pid if st else 0

    async def check_unit(self, unit: str, pid: int = 0) -> tuple[bool, str]:
        """Is ``unit`` up now, still as main pid ``pid`` (when given), and does its
        component's probe pass? For verifying a heal; ``(ok, what was seen)``."""
        try:
            st = await self.systemd.status(unit)
        except SystemdError as e:
            return False, f"{unit}: {e}"
        if st.active_state != "active":
            return False, f"{unit} is {st.describe()}"
        if pid and st.main_pid != pid:
            return False, f"{unit} died after the heal (main pid {pid} -> {st.main_pid})"
        runner = next((r for r in self.runners.values() if r.cfg.unit == unit), None)
        if runner is not None and runner.cfg.probe is not None:
            result = await self.prober.run(
                runner.cfg.probe, cwd=runner.cfg.working_directory or None
            )
            if not result.ok:
                return False, f"{unit}: probe failed: {result.detail}"
            return True, f"{unit} active (pid {st.main_pid}), probe passed"
        return True, f"{unit} active (pid {st.main_pid})"

    def beat_grace(self, component: str) -> tuple[bool, float | None]:
        """Is the component's heartbeat judged now, and since when it has been healthy.

        Not judged before its boot wave starts it, while it starts (a model may load for
        minutes) or is stopped by an operator; judged on its last beat alone while it is
        down, restarting or quarantined (its layer is not beating); healthy, it gets a
        window from then."""
        runner = self.runners.get(component)
        if runner is None:
            return False, None
        status = runner.rec.status
        if runner.task is None or status == "pending":
            return False, None  # not started yet: its boot wave has not come
        if status in ("starting", "stopped") or runner.rec.operator_stopped:
            return False, None
        if status == "healthy":
            return True, runner.rec.healthy_since
        return True, None

    def escalate(self, component: str, kind: str, error: str, *, healer_tried: bool) -> bool:
        """A failure seen by a layer agent, handed to the component's ladder."""
        runner = self.runners.get(component)
        if runner is None or not runner.alive:
            return False
        return runner.inject(Failure(component, kind, error, healer_tried=healer_tried))

    @property
    def save_failing(self) -> bool:
        """True while state cannot be written (a full disk): razard is degraded."""
        return self._save_failed

    def summary(self) -> str:
        """``N healthy, N restarting, N quarantined[, N <other state>...]``; recounted only
        after a status or the set of components changed (STATUS=, the crown layer's health
        and status replies all ask for it)."""
        key = (self._status_changes, id(self.state.components))  # a state load: new records
        if self._summary[0] != key:
            self._summary = (key, self._count_states())
        return self._summary[1]

    def _count_states(self) -> str:
        counts: dict[str, int] = {}
        for r in self.runners.values():
            counts[r.rec.status] = counts.get(r.rec.status, 0) + 1
        parts = [f"{counts.pop('healthy', 0)} healthy"]
        restarting = counts.pop("restarting", 0) + counts.pop("starting", 0)
        parts.append(f"{restarting} restarting")
        parts.append(f"{counts.pop('quarantined', 0)} quarantined")
        parts += [f"{n} {s}" for s, n in sorted(counts.items()) if n]
        return ", ".join(parts)

    # ------------------------------------------------------------ boot

    async def start(self) -> None:
        """Load state, write owned units, watch every unit; the boot itself is `boot`."""
        try:
            self.state.load()
        except StateError as e:
            moved = self.state.set_aside()
            self.events.emit(
                "state_discarded", f"{e}; moved to {moved}, starting fresh", priority=Priority.ERR
            )
        for name in list(self.state.components):
            if self.config.component(name) is None:
                self.state.forget(name)
        self._stop_watch = self.quarantine.watch(asyncio.get_running_loop(), self._on_released)
        self.systemd.on_reconnect(self.reconcile)
        self._stale = {
            c.name
            for c in self.config.components
            if c.owned
            and (self.unit_dir / c.unit).exists()
            and read_fingerprint(self.unit_dir / c.unit) != fingerprint(c)
        } | (self._restart_on_boot & {c.name for c in self.config.components})
        await self._write_units(self.config.components)
        # watched concurrently: five bus round trips each, which for hundreds of components
        # one after the other would hold up the first wave for seconds
        gate = asyncio.Semaphore(WATCH_CONCURRENCY)

        async def watch(runner: Runner) -> None:
            async with gate:
                await self._watch_unit(runner)

        # made in config order, whatever answers first
        runners = [self._new_runner(cfg) for cfg in self.config.components]
        await asyncio.gather(*(watch(r) for r in runners))
        self._not_running_now(runners)
        self._started = True

    def _not_running_now(self, runners: Sequence[Runner]) -> None:
        """A saved status that says a unit runs (``healthy``, ``restarting``...) is what the last
        razard saw; after a reboot the unit is down until its wave starts it. Such a component
        is ``pending`` until its runner brings it up, so STATUS=, READY and `razarctl status`
        count only units systemd says are active."""
        for runner in runners:
            was, st = runner.rec.status, runner.unit_status
            if was in RUNNING_STATES and (st is None or st.active_state != "active"):
                now = st.describe() if st else "unknown to systemd"
                self.set_state(
                    runner, "pending", note=f"unit {runner.cfg.unit} is {now} (was {was})"
                )

    async def _write_units(self, comps: Sequence[ComponentConfig]) -> None:
        changed = False
        for cfg in comps:
            if cfg.owned:
                beat = self.config.chakra.heartbeat_dir / cfg.layer / cfg.name
                changed |= write_unit(self.unit_dir, cfg, str(beat) if cfg.heartbeat else "")
        if changed:
            await self.systemd.daemon_reload()

    async def _add_runner(self, cfg: ComponentConfig) -> Runner:
        runner = self._new_runner(cfg)
        await self._watch_unit(runner)
        return runner

    def _new_runner(self, cfg: ComponentConfig) -> Runner:
        runner = Runner(self, cfg)
        self.runners[cfg.name] = runner
        self._status_changes += 1
        self.metrics.set_state(cfg.name, cfg.layer, self.state.record(cfg.name).status)
        return runner

    async def _watch_unit(self, runner: Runner) -> None:
        try:
            runner.on_unit(await self.systemd.watch(runner.cfg.unit, runner.on_unit))
        except SystemdError as e:
            self.event(runner, "unit_unavailable", str(e), priority=Priority.ERR)

    async def boot(self, on_first_wave: Callable[[], Awaitable[None]] | None = None) -> None:
        """Start components in priority waves; adopt what is already running and healthy."""
        waves = plan_waves({c.name: c.priority for c in self.config.components})
        boot = self.state.boot
        resuming = boot.started is not None and not boot.done and boot.waves == waves
        if resuming and boot.settled_waves:
            self.event(
                None,
                "boot_resumed",
                f"resuming boot at wave {boot.settled_waves + 1} of {len(waves)}",
            )
        if not resuming:
            boot.waves, boot.settled_waves, boot.done, boot.started = waves, 0, False, time.time()
        self.save()
        # units already running (razard restarted) are supervised at once, whatever their wave
        for runner in self.runners.values():
            st = runner.unit_status
            if (
                st is not None
                and st.active_state == "active"
                and runner.cfg.name not in self._stale
            ):
                runner.spawn(adopt=True)
        for i, planned in enumerate(waves):
            wave = [n for n in planned if n in self.runners]  # a reload may have removed some
            self.event(
                None,
                "boot_wave_started",
                f"wave {i + 1}/{len(waves)}: {', '.join(wave)}",
                wave=i + 1,
            )
            for name in wave:
                self.runners[name].spawn(adopt=True, force_restart=name in self._stale)
            await asyncio.gather(
                *(self.runners[n].settled.wait() for n in wave if n in self.runners)
            )
            boot.settled_waves = max(boot.settled_waves, i + 1)
            self.save()
            self.event(
                None,
                "boot_wave_settled",
                f"wave {i + 1}/{len(waves)} settled: "
                + ", ".join(f"{n}={self.state.record(n).status}" for n in wave),
                wave=i + 1,
            )
            if i == 0 and on_first_wave is not None:
                await on_first_wave()
        if not waves and on_first_wave is not None:
            await on_first_wave()
        boot.done = True
        self.save()
        self.event(None, "boot_done", f"boot complete: {self.summary()}")

    async def reconcile(self) -> None:
        """After a bus reconnect or a systemd reload: re-read every unit's real state."""
        self.metrics.bus_resyncs.inc()
        self.event(None, "bus_resync", "re-reading unit state after reconnect/reload of systemd")
        for runner in list(self.runners.values()):
            try:
                status = await self.systemd.status(runner.cfg.unit)
            except SystemdError as e:
                self.event(runner, "unit_unavailable", str(e), priority=Priority.WARNING)
                continue
            runner.on_unit(status)

    async def shutdown(self) -> None:
        """Stop supervising; units keep running (a restarted razard adopts them)."""
        if self._stop_watch:
            self._stop_watch()
        for runner in list(self.runners.values()):
            await runner.cancel()
        await self.prober.aclose()
        self.save_now()

    # ------------------------------------------------------------ quarantine

    def _on_released(self, name: str) -> None:
        runner = self.runners.get(name)
        if runner is None or runner.rec.status != "quarantined":
            return
        if self.quarantine.is_quarantined(name):
            return  # re-created meanwhile
        task = asyncio.get_running_loop().create_task(self._release_runner(runner, "file removed"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_runner(self, runner: Runner, by: str) -> None:
        async with self._lock:
            if runner.rec.status != "quarantined":
                return  # released already (razarctl and the file watcher both report it)
            if by == "file removed":
                self.quarantine.log_release(runner.cfg.name, by)
            await runner.cancel()
            rec = runner.rec
            rec.restarts = rec.escalations = 0
            rec.last_error = None
            self.set_state(runner, "pending", note=f"released from quarantine by {by}")
            self.event(runner, "quarantine_released", f"released by {by}")
            runner.settled.clear()
            runner.spawn(adopt=False)

    # ------------------------------------------------------------ control (SupervisorControl)

    def _runner(self, name: str) -> Runner:
        if not self._started:
            raise ControlError("razard is still starting; try again in a moment")
        runner = self.runners.get(name)
        if runner is None:
            raise UnknownComponent(name)
        return runner

    def status(self) -> dict[str, Any]:
        comps = []
        for r in sorted(self.runners.values(), key=lambda r: (r.cfg.priority, r.cfg.name)):
            rec = r.rec
            comps.append(
                {
                    "name": r.cfg.name,
                    "unit": r.cfg.unit,
                    "layer": r.cfg.layer,
                    "priority": r.cfg.priority,
                    "state": rec.status,
                    "healthy": rec.status == "healthy",
                    "restarts": rec.restarts_total,
                    "restarts_in_cycle": rec.restarts,
                    "quarantined": rec.status == "quarantined",
                    "last_error": rec.last_error,
                    "since": _iso(rec.since),
                    "last_healthy": _iso(rec.last_healthy),
                    "main_pid": r.unit_status.main_pid if r.unit_status else 0,
                    "unit_state": r.unit_status.describe() if r.unit_status else None,
                }
            )
        return {
            "summary": self.summary(),
            "ready": self.ready,
            "pid": os.getpid(),
            "version": __version__,
            "config": str(self.config.source),
            "components": comps,
        }

    async def start_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self._lock:
            if runner.rec.status == "quarantined":
                raise ControlError(
                    f"{name} is quarantined; release it first (razarctl quarantine release {name})"
                )
            runner.rec.operator_stopped = False
            if runner.task is not None and not runner.task.done():
                return  # already supervised
            self.event(runner, "operator_start", "started by operator")
            runner.spawn(adopt=True)

    async def stop_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self._lock:
            if runner.rec.status == "quarantined":
                return  # its unit is already stopped: nothing to do
            await runner.cancel_heal()
            await runner.cancel()
            runner.rec.operator_stopped = True
            self.event(runner, "operator_stop", "stopped by operator; razard will not heal it")
            try:
                await self.systemd.stop(runner.cfg.unit, job_timeout=60)
            except SystemdError as e:
                self.set_state(runner, "failed", error=f"operator stop failed: {e}")
                raise ControlError(f"stopping {name}: {e}") from e
            self.set_state(runner, "stopped")

    async def restart_component(self, name: str) -> None:
        runner = self._runner(name)
        async with self._lock:
            if runner.rec.status == "quarantined":
                raise ControlError(
                    f"{name} is quarantined; release it first (razarctl quarantine release {name})"
                )
            await runner.cancel_heal()
            await runner.cancel()
            runner.rec.operator_stopped = False
            self.event(runner, "operator_restart", "restart requested by operator")
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
                n: r.cfg.restart.attempts for n, r in sorted(self.runners.items())
            },
            # the repair rung skips these: no patch to them could be kept
            "no_artifacts": sorted(n for n, r in self.runners.items() if not r.cfg.artifacts),
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
        return self.engine.patches(name)

    def diff(self, name: str, patch_id: str | None) -> str:
        self._runner(name)
        return self.engine.diff(name, patch_id)

    async def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        """Restore the artifacts before the last kept patch (or ``to``), then restart the unit."""
        runner = self._runner(name)
        cfg = runner.cfg
        await runner.cancel_heal()  # its unverified patch is restored first

        def locked() -> dict[str, Any]:
            with self.engine.lock():
                return self.engine.rollback(cfg, to)

        record = await asyncio.to_thread(locked)
        self.metrics.patches.labels(name, "reverted").inc()
        self.event(
            runner,
            "patch_rolled_back",
            f"operator rolled back to before {record.get('patch_id')}; restarting",
            priority=Priority.NOTICE,
            patch_id=record.get("patch_id"),
        )
        record = {**record, "restarted": runner.rec.status != "quarantined"}
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
        if runner.rec.status == "quarantined":
            raise ControlError(
                f"{name} is quarantined; release it first (razarctl quarantine release {name})"
            )
        if runner.healing:
            raise ControlError(f"a heal of {name} is already running")
        async with self._lock:
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
        last = runner.last_failure
        info = FailureInfo(
            error=(last.error if last else None) or runner.rec.last_error or "operator heal",
            probe_output=last.probe_output if last else "",
            exit_status=last.exit_status if last else None,
            unit_result=last.unit_result if last else "",
            since=time.time() - CYCLE_LOOKBACK,
        )
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
        return self.quarantine.list()

    async def release(self, name: str) -> None:
        runner = self._runner(name)
        if not self.quarantine.release(name, by="razarctl"):
            raise ControlError(f"{name} is not quarantined")
        await self._release_runner(runner, "razarctl")

    async def reload(self) -> None:
        if self._reload_config is None:
            raise ControlError("reload is not available")
        if not self._started:
            raise ControlError("razard is still starting; reload once it is up")
        new = self._reload_config()  # raises ConfigError: the running config stays
        await self.apply(new)

    async def apply(self, new: Config) -> None:
        """Apply a new config: start added components, stop removed, restart changed."""
        async with self._lock:
            old = {c.name: c for c in self.config.components}
            fresh = {c.name: c for c in new.components}
            if new.daemon != self.config.daemon:
                self.events.emit(
                    "config_partial",
                    "changes to [razard] need a restart of razard; "
                    "component changes are applied now",
                    priority=Priority.WARNING,
                )
                new = replace(new, daemon=self.config.daemon)
            files_removed = False
            removed = [n for n in old if n not in fresh]
            added = [c for n, c in fresh.items() if n not in old]
            changed = [c for n, c in fresh.items() if n in old and old[n] != c]
            for name in removed:
                runner = self.runners.pop(name)
                self._status_changes += 1
                await runner.cancel()
                await self.systemd.unwatch(runner.cfg.unit)
                with contextlib.suppress(SystemdError):
                    await self.systemd.stop(runner.cfg.unit, job_timeout=60)
                if runner.cfg.owned and remove_unit(self.unit_dir, runner.cfg.unit):
                    files_removed = True
                self.event(runner, "component_removed", "removed from config; unit stopped")
                self.metrics.forget(name, runner.cfg.layer)
                self.state.forget(name)
            self.config = new
            for listener in self.on_config:
                await listener(new)
            await self._write_units([*added, *changed])
            for cfg in changed:
                runner = self.runners[cfg.name]
                await runner.cancel()
                unit_changed = runner.cfg.unit != cfg.unit
                if runner.cfg.layer != cfg.layer:
                    self.metrics.forget(cfg.name, runner.cfg.layer)
                if unit_changed:
                    await self.systemd.unwatch(runner.cfg.unit)
                    with contextlib.suppress(SystemdError):
                        await self.systemd.stop(runner.cfg.unit, job_timeout=60)
                    if runner.cfg.owned and remove_unit(self.unit_dir, runner.cfg.unit):
                        files_removed = True
                new_runner = await self._add_runner(cfg) if unit_changed else runner
                new_runner.cfg = cfg
                self.runners[cfg.name] = new_runner
                self._status_changes += 1
                self.event(new_runner, "component_changed", "config changed; restarting")
                new_runner.spawn(adopt=False, force_restart=True)
            if files_removed:
                await self.systemd.daemon_reload()
            for cfg in sorted(added, key=lambda c: (c.priority, c.name)):
                runner = await self._add_runner(cfg)
                self.event(runner, "component_added", "added by config reload")
                runner.spawn(adopt=True)
            self.save()
            self.events.emit(
                "config_reloaded",
                f"config reloaded: {len(added)} added, {len(removed)} removed, "
                f"{len(changed)} changed",
                priority=Priority.NOTICE,
            )

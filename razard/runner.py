"""One component's state machine: `Runner`, the `Failure` it climbs the ladder with, and
the `EscalationRung` protocol every rung after restarts implements.

A runner brings its unit up (or adopts it when it is already running and
healthy), then watches two things at once: the unit's ``PropertiesChanged``
signals (death is seen the moment systemd reports it) and the probe on its
interval. A failure goes to the pure ladder policy (`razard.policy.next_rung`);
the runner carries out the decision: restart after a backoff, an escalation rung,
or quarantine. What it needs of the supervisor is `RunnerHost`.

Over 600 lines because the runner is one state machine (bring up, monitor, climb,
quarantine) whose steps share its events and flags; split, each part would reach
into the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, Protocol

from razard.aio import LazyEvent
from razard.config import ComponentConfig
from razard.errors import RazarError, SystemdError
from razard.journal import Priority
from razard.metrics import Metrics
from razard.policy import History, Rung, next_rung, settle
from razard.probes import Prober, ProbeResult
from razard.quarantine import QuarantineStore
from razard.repair.handover import FailureInfo
from razard.repair.patch import PatchEngine
from razard.state import ComponentRecord, StateStore
from razard.states import ComponentState as State
from razard.systemd import Systemd, UnitStatus
from razard.ticker import Ticker

log = logging.getLogger(__name__)

#: A component without a probe counts as healthy once its unit stayed active this long.
NO_PROBE_UPTIME = 1.0
#: Seconds before a failure cycle's first failure whose journal lines still belong to it.
CYCLE_LOOKBACK = 10.0

#: How a rung's last attempt for a component ended.
RungOutcome = Literal["fixed", "failed", "not_applicable", "skipped"]


@dataclass(frozen=True)
class Failure:
    """One failure of one component, as the ladder sees it."""

    component: str
    kind: str  # "exit" (unit died), "probe", "start", "heartbeat", "layer", "operator" (heal)
    error: str
    probe_output: str = ""
    unit_result: str = ""
    exit_status: int | None = None
    cycle_started: float | None = None  # when this failure cycle began (unix time)
    healer_tried: bool = False  # the layer agent already ran the layer's healer for it

    def info(self, since: float | None = None) -> FailureInfo:
        """What the repair handover is told of this failure; its journal lines are taken
        from ``since`` (default: when the failure cycle began)."""
        return FailureInfo(
            error=self.error,
            probe_output=self.probe_output,
            exit_status=self.exit_status,
            unit_result=self.unit_result,
            since=self.cycle_started if since is None else since,
        )


class EscalationRung(Protocol):
    """A rung between restarts and quarantine (layer healer, repair agents).

    ``attempt`` gets a ``verify`` callback and returns True only when a change it
    made was verified. ``restarts_unit`` says which ``verify`` it gets: True, one
    that restarts the unit and waits for its probe; False (the rung restarted what
    it needed itself), one that waits for the probe without another restart.
    """

    name: str
    restarts_unit: bool

    async def attempt(
        self,
        component: ComponentConfig,
        failure: Failure,
        verify: Callable[[], Awaitable[bool]],
    ) -> bool: ...

    def outcome(self, component: str) -> tuple[RungOutcome, str]:
        """How the last attempt for ``component`` ended, and why (may be empty)."""
        ...

    def records(self, component: str) -> list[dict[str, Any]]:
        """What the last attempt did, for the ladder log and the quarantine file."""
        ...


class RunnerHost(Protocol):
    """What a runner needs of the supervisor that owns it (`razard.supervisor.Supervisor`)."""

    state: StateStore
    metrics: Metrics
    systemd: Systemd
    quarantine: QuarantineStore
    prober: Prober
    ticker: Ticker
    engine: PatchEngine
    restarts_owed: set[str]
    rng: random.Random

    @property
    def rungs(self) -> Sequence[EscalationRung]: ...

    @property
    def healing(self) -> bool: ...

    def held(self, unit: str) -> bool: ...

    def claim(self, unit: str) -> None: ...

    def set_state(
        self,
        runner: Runner,
        state: State,
        *,
        error: str | None = None,
        note: str | None = None,
        priority: int = Priority.NOTICE,
        later: list[Callable[[], None]] | None = None,
    ) -> None: ...

    def event(
        self,
        runner: Runner | None,
        event: str,
        message: str,
        priority: int = Priority.INFO,
        **fields: Any,
    ) -> None: ...

    def save_later(self) -> None: ...

    def save_now(self) -> None: ...


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a finished task's exception as seen (it was reported through another path)."""
    if not task.cancelled():
        task.exception()


def iso(t: float | None) -> str | None:
    """Unix time as ISO-8601 UTC to the second, as status replies and ladder logs show it."""
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


class Runner:
    """Supervises one component for as long as it is configured."""

    def __init__(self, sup: RunnerHost, cfg: ComponentConfig) -> None:
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
        #: the config the probe's metric series were looked up for, and those series
        self._probe_series: tuple[ComponentConfig, Any, Any, Any, Any] | None = None
        #: what a restart without backoff says once its StartUnit is on the wire
        #: (`_announce`): the failure and the restart decided, recorded and saved before
        self._unsaid: list[Callable[[], None]] = []

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
            self.sup.set_state(self, State.FAILED, error=f"internal error: {e}")
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
        if self.rec.status == State.QUARANTINED and not self.sup.quarantine.is_quarantined(name):
            # the file was deleted while razard was not running: that is a release
            self.sup.quarantine.log_release(name, "file removed while razard was down")
            self.rec.restarts = self.rec.escalations = 0
            self.sup.event(
                self, "quarantine_released", "released (file removed while razard was down)"
            )
        while True:
            if self.sup.quarantine.is_quarantined(name):
                self._announce()
                self.sup.set_state(self, State.QUARANTINED)
                self.settled.set()
                return  # a release replaces this runner
            if self.rec.operator_stopped:
                self._announce()
                self.sup.set_state(self, State.STOPPED)
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

    def _announce(self) -> None:
        """Say what a restart without backoff deferred (`_unsaid`), in its order."""
        unsaid, self._unsaid = self._unsaid, []
        for say in unsaid:
            say()

    async def _bring_up(self, *, adopt: bool, force_restart: bool) -> Failure | None:
        try:
            return await self._bring_up_unit(adopt=adopt, force_restart=force_restart)
        finally:
            self._announce()  # whatever happened, nothing deferred is left unsaid

    async def _bring_up_unit(self, *, adopt: bool, force_restart: bool) -> Failure | None:
        sd, cfg = self.sup.systemd, self.cfg
        while True:
            if not sd.connected:
                self._announce()  # not held up by a bus outage
            await sd.wait_connected()  # a bus outage is razard's problem, not the component's
            # a watched unit's status is read when the watch begins and kept current by its
            # signals since: bringing it up needs no round trips to read it again
            cached = sd.cached(cfg.unit)
            if cached is not None and cached.load_state == "loaded":
                status = cached
                break
            self._announce()
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
            failure = await self._await_healthy(since=0.0)
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
            calls: list[asyncio.Task[Any]] = []
            if not cfg.owned:
                # a unit razard did not write may have a start limit its failures count
                # against; razard's own units have none (StartLimitIntervalSec=0) and a
                # StartUnit takes a failed one as it is: one call fewer for systemd to read
                # before it runs the start job (a crash storm: a hundred fewer)
                calls.append(loop.create_task(sd.reset_failed(cfg.unit)))
            begin = sd.restart if status.running else sd.start
            # the process this start execs cannot have been exec'd before this moment
            sent = time.monotonic()
            started = loop.create_task(begin(cfg.unit, job_timeout=cfg.start_timeout + 30))
            calls.append(started)
            try:
                # the calls' first step puts them on the wire: let them (and those of the
                # rest of a boot wave) go before "starting" is written down, and before
                # the failure and the restart a restart without backoff deferred: they only
                # say so, what the ladder must not lose (a restart counted) was saved before
                await asyncio.sleep(0)
                self._announce()
                self.sup.set_state(self, State.STARTING)
                await asyncio.gather(*calls)
            finally:
                for t in calls:
                    t.cancel()
                    t.add_done_callback(_retrieve)  # the other call's error is not lost silently
            job = started.result()
        except SystemdError as e:
            if not sd.connected:
                return await self._bring_up_unit(adopt=False, force_restart=force_restart)
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
        return await self._await_healthy(since=sent)

    async def _await_healthy(self, *, since: float) -> Failure | None:
        """Wait for the first passing probe within the component's start timeout.

        ``since``: the earliest moment (monotonic) the unit's main process can have been
        exec'd; an exec time systemd reports before it belongs to an earlier process."""
        cfg = self.cfg
        if cfg.probe is None:
            # no probe: healthy once the main process has stayed up (like supervisord's
            # startsecs), counted from its exec as systemd reports it: with Type=exec the
            # start job ends after the exec, and in a wave of many units systemd forks
            # them one by one, so the first ones are up long before their job is done
            st = self.unit_status
            up = min(NO_PROBE_UPTIME, cfg.start_timeout)
            now = time.monotonic()
            began = now
            if st is not None and 0 < st.exec_main_start and since <= st.exec_main_start <= now:
                began = st.exec_main_start
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, began + up - now)):
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
        series = self._probe_series
        if series is None or series[0] is not self.cfg:
            # looked up once per config, not per probe (a reload gives the runner a new one)
            m, name = self.sup.metrics, self.cfg.name
            series = self._probe_series = (
                self.cfg,
                m.probe_duration.labels(name, probe.kind),
                m.probes.labels(name, probe.kind, "ok"),
                m.probes.labels(name, probe.kind, "failed"),
                m.healthy.labels(name, self.cfg.layer),
            )
        series[1].observe(result.duration)
        if result.ours:
            return result
        if result.ok:
            series[2].inc()
        else:
            series[3].inc()
            self.sup.metrics.probe_failures.labels(self.cfg.name, probe.kind).inc()
        return result

    def _healthy(self, result: ProbeResult | None) -> None:
        now = time.time()
        rec = self.rec
        series = self._probe_series
        if (
            rec.status == State.HEALTHY
            and rec.healthy_since is not None
            and not rec.restarts
            and not rec.escalations
            and series is not None
            and series[0] is self.cfg
        ):
            # healthy and passing again (nearly every probe): no budget to settle, no state
            # to write (the time of the last passing check goes out with the next write)
            rec.last_healthy = now
            series[4].set(1)
            return
        if rec.status != State.HEALTHY or rec.healthy_since is None:
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
        if rec.status != State.HEALTHY:
            detail = f" ({result.detail}, {result.duration * 1000:.0f} ms)" if result else ""
            self.sup.set_state(self, State.HEALTHY, note=f"healthy{detail}")
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
                self.sup.set_state(self, State.UNHEALTHY)
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
        # verification counts the up-time from now, not from the healer's restart
        return await self._await_healthy(since=time.monotonic()) is None

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
                    "time": iso(time.time()),
                }
            )
            failed = partial(
                sup.event,
                self,
                "component_failed",
                f"{failure.error}; next: {decision.reason}",
                priority=Priority.ERR,
                error=failure.error,  # RAZAR_ERROR: what failed, apart from the decision
                failure_kind=failure.kind,
                rung=decision.rung.value,
                unit_result=failure.unit_result or None,
                exit_status=failure.exit_status,
            )
            # no backoff: nothing between the decision and the StartUnit but the save of
            # the restart counted. No yield: a turn of the loop is a turn of everything else
            # that is ready (the dying unit's own signals, status updates); the save that
            # set_state queued for the end of this turn runs ahead of the call tasks
            # _bring_up creates after it (FIFO). The failure and the restart are written
            # down (razar.log, journald) right after the call is on the wire (`_announce`).
            at_once = decision.rung is Rung.RESTART and decision.delay <= 0
            if at_once:
                self._unsaid.append(failed)
            else:
                failed()
            if decision.rung is Rung.RESTART:
                rec.restarts += 1
                rec.restarts_total += 1
                rec.last_restart = now
                sup.set_state(
                    self,
                    State.RESTARTING,
                    note=f"{decision.reason} in {decision.delay:.2f}s",
                    later=self._unsaid if at_once else None,
                )
                sup.metrics.restarts.labels(cfg.name, cfg.layer).inc()
                if not at_once:
                    await asyncio.sleep(decision.delay)
                return "restart"
            if decision.rung is Rung.QUARANTINE:
                await self.quarantine(decision.reason, self.ladder_log)
                return None
            rung = sup.rungs[decision.attempt - 1]
            rec.escalations += 1
            rec.in_escalation = True  # persisted: a razard killed mid-rung retries the rung
            sup.set_state(self, State.ESCALATING, note=f"{decision.reason}: {rung.name}")
            sup.save_now()  # a rung may act before it first yields
            verify = self.verify if rung.restarts_unit else self.verify_in_place
            try:
                fixed = await rung.attempt(
                    cfg, replace(failure, cycle_started=self.cycle_started), verify
                )
            except RazarError as e:
                fixed = False
                sup.event(self, "escalation_error", f"{rung.name}: {e}", priority=Priority.ERR)
            rec.in_escalation = False
            outcome, why = rung.outcome(cfg.name)
            if fixed:
                outcome = "fixed"
            self.ladder_log.append(
                {
                    "rung": rung.name,
                    "fixed": fixed,
                    "outcome": outcome,
                    "why": why or None,
                    "attempts": rung.records(cfg.name),
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
        sup.set_state(self, State.QUARANTINED, note=reason, priority=Priority.CRIT)
        sup.event(
            self,
            "operator_alert",
            f"{cfg.name} quarantined: {reason}; last error: {self.rec.last_error}. "
            f"Release with `razarctl quarantine release {cfg.name}`",
            priority=Priority.ALERT,
        )
        self.settled.set()

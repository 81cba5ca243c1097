"""The supervisor: the table of components, boot waves, reconcile, state saves, events.

`Components` is the table of runners with what is shared between them: the state
file and its saves, the healers' holds, the summary line. It is built first, because
the layer agents are built on it (it is their `agents.chakra.ChakraHost`) and the
healer rung on them, and the `Supervisor` takes that rung.

`Supervisor` owns the runners' lives: it loads state and writes owned units at
start, boots the components in priority waves (adopting what already runs),
re-reads every unit after a bus reconnect, applies a reloaded config, and turns
state changes into events and metrics. Each component's own state machine is
`razard.runner.Runner`; what razarctl asks for is `razard.operations.Operations`.

Operator commands, reloads and quarantine releases replace a runner: the old
task is cancelled and a new one started with the new intent, so a runner never
has to poll for outside changes.

A little over 600 lines: `Components` and `Supervisor` share the module because the
supervisor is the only one that adds, replaces and removes the table's runners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Final

from razard import storage
from razard.config import ComponentConfig, Config
from razard.errors import StateError, SystemdError
from razard.journal import EventLog, Priority
from razard.metrics import Metrics
from razard.policy import plan_waves
from razard.probes import Prober
from razard.quarantine import QuarantineStore
from razard.repair.patch import PatchEngine
from razard.runner import EscalationRung, Failure, Runner
from razard.state import StateStore
from razard.states import RUNNING_STATES
from razard.states import ComponentState as State
from razard.systemd import Systemd, UnitStatus
from razard.ticker import Ticker
from razard.unitfile import default_unit_dir, remove_unit, sync_unit

#: At most this many seconds pass before a change only worth keeping lazily is written.
LAZY_SAVE = 30.0
#: States saved soon (within SOON_SAVE, or with the next urgent write) rather than at the
#: end of the turn: each write is an fsync'd write of the whole state, and a boot or crash
#: storm makes one per component per state, one after the other; within a second they
#: share one. They report progress; a crash that loses one loses nothing the ladder
#: counts (a restart is saved as "restarting" before it is carried out), and a lost
#: "healthy" only leaves the restart budget as spent as it was (the safe side).
LAZY_STATES: Final = frozenset({State.STARTING, State.HEALTHY})
#: Seconds within which a state in LAZY_STATES is written.
SOON_SAVE = 1.0


class Components:
    """The components' runners, their saved records and the healers' holds.

    What the layer agents see of the supervisor (`agents.chakra.ChakraHost`):
    whether a heartbeat is judged, a failure handed to a ladder, holds while a
    healer acts, a unit checked after a heal.
    """

    def __init__(
        self, state_dir: Path, systemd: Systemd, events: EventLog, *, prober: Prober | None = None
    ) -> None:
        self.systemd = systemd
        self.events = events
        self.state = StateStore(state_dir)
        self.prober = prober or Prober()
        self.runners: dict[str, Runner] = {}
        self._summary: tuple[tuple[int, int], str] = ((-1, -1), "")
        self._status_changes = 0  # bumped when a status or the set of runners changes
        #: one set of units per healer running: the units it stops or restarts, whose deaths
        #: and probe misses wait until it finishes; every other unit is watched as usual
        self._holds: list[set[str]] = []
        self._save_failed = False
        self._save_handle: asyncio.Handle | None = None  # a queued write of the state
        self._save_due = -1.0  # when it is due (loop time); 0: this turn; -1: none queued
        self._dir_sync_queued = False  # the last save's directory fsync is queued

    def changed(self) -> None:
        """A status or the set of runners changed: the summary is counted again."""
        self._status_changes += 1

    # ------------------------------------------------------------ saving

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

    def save_soon(self) -> None:
        """Persist state within `SOON_SAVE` seconds (a write due earlier is kept): for
        progress many components report at once (a boot wave turning healthy)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.save_now()
            return
        due = loop.time() + SOON_SAVE
        if self._save_handle is not None:
            if self._save_due <= due:
                return  # an earlier write is queued (0: this turn's)
            self._save_handle.cancel()
        self._save_due = due
        self._save_handle = loop.call_later(SOON_SAVE, self.save_now)

    def save_now(self, *, durable: bool = False) -> None:
        """Persist state now; a full disk is reported once and does not stop supervision.

        The file is whole and visible (to a restarted razard, to a component reading it)
        when this returns. Within the event loop the directory's fsync, which makes the
        rename survive a power cut, follows in the next turn: the calls queued in this
        turn (a restart's StartUnit, right after the save that counted it) go out first.
        A power cut in between brings back the previous file, whole. ``durable``: the
        directory too, before this returns (razard stopping)."""
        if self._save_handle is not None:
            self._save_handle.cancel()
            self._save_handle = None
        self._save_due = -1.0
        loop: asyncio.AbstractEventLoop | None = None
        if not durable:
            with contextlib.suppress(RuntimeError):
                loop = asyncio.get_running_loop()
        try:
            self.state.save(sync_dir=loop is None)
        except StateError as e:
            self._saved(e)
            return
        if loop is None:
            self._saved(None)
        elif not self._dir_sync_queued:
            self._dir_sync_queued = True
            loop.call_soon(self._sync_dir)

    def _sync_dir(self) -> None:
        self._dir_sync_queued = False
        try:
            storage.sync_directory(self.state.path.parent)
        except OSError as e:
            self._saved(StateError(f"{self.state.path.parent}: cannot sync: {e.strerror or e}"))
        else:
            self._saved(None)

    def _saved(self, error: StateError | None) -> None:
        """Say once that saving fails (``error``), and once that it works again."""
        if error is not None:
            if not self._save_failed:
                self._save_failed = True
                self.events.emit(
                    "state_save_failed",
                    f"{error}; supervising on without saving",
                    priority=Priority.CRIT,
                )
        elif self._save_failed:
            self._save_failed = False
            self.events.emit(
                "state_save_recovered", "state is being saved again", priority=Priority.NOTICE
            )

    # ------------------------------------------------------------ the layer agents' view

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
        if runner.task is None or status == State.PENDING:
            return False, None  # not started yet: its boot wave has not come
        if status in (State.STARTING, State.STOPPED) or runner.rec.operator_stopped:
            return False, None
        if status == State.HEALTHY:
            return True, runner.rec.healthy_since
        return True, None

    def escalate(self, component: str, kind: str, error: str, *, healer_tried: bool) -> bool:
        """A failure seen by a layer agent, handed to the component's ladder."""
        runner = self.runners.get(component)
        if runner is None or not runner.alive:
            return False
        return runner.inject(Failure(component, kind, error, healer_tried=healer_tried))

    # ------------------------------------------------------------ summary

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
        counts: dict[State, int] = {}
        for r in self.runners.values():
            counts[r.rec.status] = counts.get(r.rec.status, 0) + 1
        parts = [f"{counts.pop(State.HEALTHY, 0)} healthy"]
        restarting = counts.pop(State.RESTARTING, 0) + counts.pop(State.STARTING, 0)
        parts.append(f"{restarting} restarting")
        parts.append(f"{counts.pop(State.QUARANTINED, 0)} quarantined")
        parts += [f"{n} {s}" for s, n in sorted(counts.items()) if n]
        return ", ".join(parts)


class Supervisor:
    """Owns every runner's life: boot waves, reconcile, config reloads, releases."""

    def __init__(
        self,
        config: Config,
        systemd: Systemd,
        events: EventLog,
        metrics: Metrics,
        *,
        components: Components | None = None,
        rungs: Sequence[EscalationRung] = (),
        engine: PatchEngine | None = None,
        restart_on_boot: set[str] | None = None,
        on_change: Callable[[], None] | None = None,
        on_config: Sequence[Callable[[Config], Awaitable[None]]] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.systemd = systemd
        self.events = events
        self.metrics = metrics
        self.components = components or Components(config.daemon.state_dir, systemd, events)
        self.state = self.components.state
        self.prober = self.components.prober
        self.runners = self.components.runners
        self._rungs: tuple[EscalationRung, ...] = tuple(rungs)
        self.engine = engine or PatchEngine(config.daemon.state_dir)
        self._restart_on_boot = set(restart_on_boot or ())
        #: components whose running process may predate an undone patch (see PatchEngine)
        self.restarts_owed = set(self._restart_on_boot)
        self.rng = rng or random.Random()
        self.quarantine = QuarantineStore(config.daemon.state_dir)
        self.ticker = Ticker()
        #: called after a config reload was applied (the layer agents follow it)
        self.on_config: tuple[Callable[[Config], Awaitable[None]], ...] = tuple(on_config)
        self.ready = False  # the first boot wave has settled
        self.started = False  # `start` is done: runners exist for every component
        #: held by every change to the set of runners or an operator's intent
        self.lock = asyncio.Lock()
        self._on_change = on_change
        self._stop_watch: Callable[[], None] | None = None
        self._stale: set[str] = set()  # owned units whose file predates a config change
        self._tasks: set[asyncio.Task[None]] = set()
        self._change_queued = False
        self.unit_dir = config.daemon.unit_dir or default_unit_dir(config.daemon.bus)

    # ------------------------------------------------------------ what runners ask

    @property
    def rungs(self) -> Sequence[EscalationRung]:
        """The rungs after restarts, in the order they are climbed."""
        return self._rungs

    @property
    def healing(self) -> bool:
        """A healer is running."""
        return self.components.healing

    def held(self, unit: str) -> bool:
        return self.components.held(unit)

    def claim(self, unit: str) -> None:
        self.components.claim(unit)

    def save(self) -> None:
        self.components.save()

    def save_later(self) -> None:
        self.components.save_later()

    def save_now(self, *, durable: bool = False) -> None:
        self.components.save_now(durable=durable)

    def summary(self) -> str:
        return self.components.summary()

    @property
    def save_failing(self) -> bool:
        return self.components.save_failing

    def unit_path(self, cfg: ComponentConfig) -> Path:
        return self.unit_dir / cfg.unit

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
        state: State,
        *,
        error: str | None = None,
        note: str | None = None,
        priority: int = Priority.NOTICE,
        later: list[Callable[[], None]] | None = None,
    ) -> None:
        """Record ``runner``'s new state (saved at the end of this turn, or soon for
        `LAZY_STATES`) and say so: its event now, or appended to ``later`` for the caller
        to emit (a restart's, once its StartUnit is on the wire)."""
        rec = runner.rec
        if error is not None:
            rec.last_error = error
        changed = rec.status != state
        if changed:
            rec.status = state
            rec.since = time.time()
            self.components.changed()
        self.metrics.set_state(runner.cfg.name, runner.cfg.layer, state)
        if state in LAZY_STATES:
            self.components.save_soon()
        else:
            self.save()
        if changed:
            say = partial(
                self.event,
                runner,
                f"state_{state}",
                note or error or state,
                priority=priority,
                state=state,
                restarts=rec.restarts,
            )
            if later is None:
                say()
            else:
                later.append(say)
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
        predated = await self.write_units(self.config.components)
        self._stale = predated | (self._restart_on_boot & {c.name for c in self.config.components})
        # made in config order; every unit watched at once (one listing of all of them,
        # not a round trip per unit, which for hundreds would hold up the first wave)
        runners = [self._new_runner(cfg) for cfg in self.config.components]
        try:
            got = await self.systemd.watch_all([(r.cfg.unit, r.on_unit) for r in runners])
        except SystemdError as e:
            got = [e] * len(runners)
        for runner, status in zip(runners, got, strict=True):
            self._watched(runner, status)
        self._not_running_now(runners)
        self.started = True

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
                    runner, State.PENDING, note=f"unit {runner.cfg.unit} is {now} (was {was})"
                )

    async def write_units(self, comps: Sequence[ComponentConfig]) -> set[str]:
        """Write the owned components' units (one read of each file there); returns the
        components whose file was written for another config of theirs."""
        changed = False
        predated: set[str] = set()
        for cfg in comps:
            if cfg.owned:
                # a string: a Path would intern the component's name (see `unit_file`)
                beat = (
                    os.path.join(self.config.chakra.heartbeat_dir, cfg.layer, cfg.name)
                    if cfg.heartbeat
                    else ""
                )
                wrote, was_other = sync_unit(self.unit_dir, cfg, beat)
                changed |= wrote
                if was_other:
                    predated.add(cfg.name)
        if changed:
            await self.systemd.daemon_reload()
        return predated

    async def add_runner(self, cfg: ComponentConfig) -> Runner:
        runner = self._new_runner(cfg)
        await self._watch_unit(runner)
        return runner

    def _new_runner(self, cfg: ComponentConfig) -> Runner:
        runner = Runner(self, cfg)
        self.runners[cfg.name] = runner
        self.components.changed()
        self.metrics.set_state(cfg.name, cfg.layer, self.state.record(cfg.name).status)
        return runner

    async def _watch_unit(self, runner: Runner) -> None:
        try:
            status: UnitStatus | SystemdError = await self.systemd.watch(
                runner.cfg.unit, runner.on_unit
            )
        except SystemdError as e:
            status = e
        self._watched(runner, status)

    def _watched(self, runner: Runner, status: UnitStatus | SystemdError) -> None:
        """A watch has begun: the runner learns the unit's status, or the error is said."""
        if isinstance(status, SystemdError):
            self.event(runner, "unit_unavailable", str(status), priority=Priority.ERR)
        else:
            runner.on_unit(status)

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
        self.save_now(durable=True)

    # ------------------------------------------------------------ quarantine

    def _on_released(self, name: str) -> None:
        runner = self.runners.get(name)
        if runner is None or runner.rec.status != State.QUARANTINED:
            return
        if self.quarantine.is_quarantined(name):
            return  # re-created meanwhile
        task = asyncio.get_running_loop().create_task(self.release_runner(runner, "file removed"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def release_runner(self, runner: Runner, by: str) -> None:
        async with self.lock:
            if runner.rec.status != State.QUARANTINED:
                return  # released already (razarctl and the file watcher both report it)
            if by == "file removed":
                self.quarantine.log_release(runner.cfg.name, by)
            await runner.cancel()
            rec = runner.rec
            rec.restarts = rec.escalations = 0
            rec.last_error = None
            self.set_state(runner, State.PENDING, note=f"released from quarantine by {by}")
            self.event(runner, "quarantine_released", f"released by {by}")
            runner.settled.clear()
            runner.spawn(adopt=False)

    async def apply(self, new: Config) -> None:
        """Apply a new config: start added components, stop removed, restart changed."""
        async with self.lock:
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
            # read once at start: the fleet's membership and the notifier are built from them
            running = self.config
            held = [t for t in ("escalation", "fleet") if getattr(new, t) != getattr(running, t)]
            if held:
                tables = " and ".join(f"[{t}]" for t in held)
                self.events.emit(
                    "config_partial",
                    f"changes to {tables} take effect at the next restart of razard; "
                    "component changes are applied now",
                    priority=Priority.WARNING,
                    tables=",".join(held),
                )
                new = replace(new, **{t: getattr(running, t) for t in held})
            files_removed = False
            removed = [n for n in old if n not in fresh]
            added = [c for n, c in fresh.items() if n not in old]
            changed = [c for n, c in fresh.items() if n in old and old[n] != c]
            for name in removed:
                runner = self.runners.pop(name)
                self.components.changed()
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
            await self.write_units([*added, *changed])
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
                new_runner = await self.add_runner(cfg) if unit_changed else runner
                new_runner.cfg = cfg
                self.runners[cfg.name] = new_runner
                self.components.changed()
                self.event(new_runner, "component_changed", "config changed; restarting")
                new_runner.spawn(adopt=False, force_restart=True)
            if files_removed:
                await self.systemd.daemon_reload()
            for cfg in sorted(added, key=lambda c: (c.priority, c.name)):
                runner = await self.add_runner(cfg)
                self.event(runner, "component_added", "added by config reload")
                runner.spawn(adopt=True)
            self.save()
            self.events.emit(
                "config_reloaded",
                f"config reloaded: {len(added)} added, {len(removed)} removed, "
                f"{len(changed)} changed",
                priority=Priority.NOTICE,
            )

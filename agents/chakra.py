"""The seven layer agents: each watches its layer's pulse and heals the layer when it stops.

A layer's **sources** are its sensor (see `agents.sensors`) and the heartbeat
files of its components. A sensor beats with every good reading; a component
beats by touching its file (`agents.heartbeat`). A component's heartbeat
is not judged while it starts or is stopped by an operator; once healthy it
gets one window to beat, and while it is down its layer is not beating.

The layer's **pulse** is the age of its stalest source, so one silent source
is enough to take the layer down; ``chakra_pulse_hz`` is 1 / that age. A layer
with no sources is not configured: it has no pulse series and does not count
against ``chakra_alignment``, which is 1 when every configured layer beats
within its window.

When a layer goes down its agent raises ``chakra_down`` once per outage, with
the evidence (the stale sources, the sensor's reading), and then:

- a silent component heartbeat becomes a failure of that component, which
  climbs the component's ladder (restart -> layer healer -> repair agents);
- a bad sensor reading on root, sacral, solar_plexus or heart runs the layer's
  healer at once; when it cannot heal, the failure goes to the layer's
  components' ladders (their healer rung is skipped: it just ran), or, for a
  layer without components, to the operator.

When the layer is back (``chakra_up``), solar_plexus and heart run their
healer in restore mode to undo the CPU weights and memory limits they set.

One module (~740 lines): most of it is `Chakra`, one state machine per layer (pulse,
outage, heal, verify) whose steps read the same `LayerState`; the Prometheus collector
beside it only reads that state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agents.healer import HealerRunner, HealRun
from agents.healing.units import host_support
from agents.heartbeat import HeartbeatWatch, prepare
from agents.sensors import GpuSensor, Reading, Sensor, sensor_for
from razard.chakra_config import RESTORE_LAYERS, SENSOR_LAYERS, ChakraConfig, LayerSettings
from razard.config import ComponentConfig, Config
from razard.journal import EventLog, Priority
from razard.layers import LAYERS

log = logging.getLogger(__name__)

SENSOR: str = "sensor"
MIN_AGE = 1e-3  # the age a beat "just now" is given, so the rate stays finite
#: After a layer's outage went to its components' ladders, the operator is told when it is
#: still down this many windows later (at least FOLLOW_UP_MIN seconds).
FOLLOW_UP_WINDOWS: Final = 4.0
FOLLOW_UP_MIN: Final = 30.0
#: The heal actions that leave a runtime limit behind, undone once the layer is back.
RUNTIME_LIMITS: Final = frozenset({"memory_high", "throttle"})
#: Layers whose healer restarts every unit of the layer (agents.healing.restart).
RESTART_LAYERS: Final = frozenset({"throat", "third_eye", "crown"})


class ChakraHost(Protocol):
    """What the layer agents need from the supervisor."""

    def beat_grace(self, component: str) -> tuple[bool, float | None]:
        """Whether the component's heartbeat is judged now, and since when (unix time) it
        has been healthy (None: it is not healthy)."""

    def escalate(self, component: str, kind: str, error: str, *, healer_tried: bool) -> bool:
        """Hand a failure to the component's ladder; False when the runner is busy."""

    def hold(self, units: Iterable[str] = ()) -> contextlib.AbstractAsyncContextManager[set[str]]:
        """While held, ``units`` and the units a healer stops or restarts are not failures;
        yields the set of units held (the ones the healer touched, once it ends)."""

    def main_pid(self, unit: str) -> int:
        """The unit's main pid as last seen (0: none known)."""

    async def check_unit(self, unit: str, pid: int = 0) -> tuple[bool, str]:
        """Is the unit up, still as ``pid`` (when given), its probe passing; what was seen."""


class NvmlUser(Protocol):
    """Something holding NVML open that can let go of it for a while."""

    def pause(self) -> Any: ...

    def resume(self) -> None: ...


@dataclass
class Source:
    """One thing that beats for a layer: its sensor, or a heartbeat file."""

    name: str
    kind: str  # "sensor" | "heartbeat"
    last: float | None = None  # unix time of the last beat (good reading)
    reported: bool = False  # its silence was reported in this outage
    reported_at: float | None = None  # when (unix time) it was last handed to the ladder
    reading: Reading | None = None


@dataclass
class LayerState:
    """One layer agent's view of its layer."""

    settings: LayerSettings
    sensor: Sensor | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    down: bool = False
    down_since: float | None = None
    outages: int = 0
    heal_task: asyncio.Task[None] | None = None
    restore_pending: bool = False

    @property
    def layer(self) -> str:
        return self.settings.layer


class Chakra:
    """The layer agents of one razard: pulse, alignment, chakra_down and the healers."""

    def __init__(
        self,
        config: Config,
        events: EventLog,
        runner: HealerRunner,
        host: ChakraHost,
        *,
        env: Mapping[str, str],
        health: Callable[[], tuple[bool, str, dict[str, Any]]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.events = events
        self.runner = runner
        self.host = host
        self.env = env
        self.health = health
        self.clock = clock
        self.started = clock()
        self.loop_lag = 0.0
        self.layers: dict[str, LayerState] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: HeartbeatWatch | None = None
        #: what holds NVML open (the GPU metrics): released while the sacral healer runs
        self.nvml_users: list[NvmlUser] = []
        #: which heart/solar_plexus actions work on this host (its cgroup layout)
        self.supports = host_support()
        self._configure(config)

    # ------------------------------------------------------------ configuration

    @property
    def cfg(self) -> ChakraConfig:
        return self.config.chakra

    def _components(self, layer: str) -> list[ComponentConfig]:
        return sorted(
            (c for c in self.config.components if c.layer == layer),
            key=lambda c: (c.priority, c.name),
        )

    def _configure(self, config: Config) -> None:
        old = self.layers
        self.config = config
        #: components that beat: looked up for every source on every evaluation tick
        self.beating = frozenset(c.name for c in config.components if c.heartbeat)
        self.layers = {}
        for name in LAYERS:
            settings = config.chakra.layer(name)
            prev = old.get(name)
            st = LayerState(settings)
            if prev is not None:
                st.down, st.down_since, st.outages = prev.down, prev.down_since, prev.outages
                st.heal_task, st.restore_pending = prev.heal_task, prev.restore_pending
                st.sources = {k: s for k, s in prev.sources.items() if s.kind == "heartbeat"}
            if settings.enabled:
                st.sensor = sensor_for(settings, config.chakra, env=self.env, crown=self._crown)
                if st.sensor is not None:
                    st.sources[SENSOR] = (prev.sources.get(SENSOR) if prev else None) or Source(
                        SENSOR, "sensor"
                    )
            for c in self._components(name):
                if c.heartbeat and c.name not in st.sources:
                    st.sources[c.name] = Source(c.name, "heartbeat")
            self.layers[name] = st

    async def reload(self, config: Config) -> None:
        """Take a new config: sensors, expected heartbeats and the healers follow it."""
        await self._stop_sensors()
        self._configure(config)
        self.runner.reconfigure(config.chakra)
        self._prepare_files()
        self._start_sensors()

    def _prepare_files(self) -> None:
        beating = [(c.layer, c.name, c.user) for c in self.config.components if c.heartbeat]
        try:
            prepare(self.cfg.heartbeat_dir, beating)
        except OSError as e:
            self.events.emit(
                "chakra_error",
                f"cannot prepare heartbeat files in {self.cfg.heartbeat_dir}: {e}",
                priority=Priority.ERR,
            )

    # ------------------------------------------------------------ running

    async def start(self) -> None:
        """Create the heartbeat files, start watching them, start sensors and the evaluator."""
        self._prepare_files()
        self._watch = HeartbeatWatch(self.cfg.heartbeat_dir, self._on_beat, self._on_gone)
        try:
            self._watch.start()
        except OSError as e:
            self.events.emit(
                "chakra_error", f"cannot watch {self.cfg.heartbeat_dir}: {e}", priority=Priority.ERR
            )
        self._start_sensors()
        self._spawn(self._evaluate_forever(), "chakra-evaluate")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_sensors(self) -> None:
        for st in self.layers.values():
            if st.sensor is not None:
                self._spawn(self._sense_forever(st.layer), f"sensor:{st.layer}")

    async def _stop_sensors(self) -> None:
        tasks = [t for t in self._tasks if t.get_name().startswith("sensor:")]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        tasks = list(self._tasks)
        for st in self.layers.values():
            if st.heal_task is not None:
                tasks.append(st.heal_task)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.runner.aclose()  # healers still running: stopped, their units discarded

    # ------------------------------------------------------------ beats

    def _on_beat(self, layer: str, source: str, when: float) -> None:
        st = self.layers.get(layer)
        if st is None or source == SENSOR:
            return
        src = st.sources.get(source)
        if src is None:
            # a source razard was not told about (an external process): it counts once seen
            src = st.sources[source] = Source(source, "heartbeat")
        if src.last is None or when > src.last:
            src.last = when
        src.reported = False

    def _on_gone(self, layer: str, source: str) -> None:
        st = self.layers.get(layer)
        if st is None:
            return
        src = st.sources.get(source)
        configured = any(c.name == source and c.heartbeat for c in self._components(layer))
        if src is not None and not configured:
            del st.sources[source]  # an external source that went away on purpose

    async def _sense_forever(self, layer: str) -> None:
        st = self.layers[layer]
        assert st.sensor is not None
        while True:
            try:
                reading = await st.sensor.read()
            except Exception as e:  # a sensor bug is a bad reading, not a dead agent
                log.exception("sensor of %s failed", layer)
                reading = Reading(False, f"sensor error: {e}")
            src = st.sources.get(SENSOR)
            if src is not None:
                src.reading = reading
                if reading.ok:
                    src.last = reading.at
                    src.reported = False
            await asyncio.sleep(st.settings.interval)

    def _crown(self) -> Reading:
        ok, summary, values = self.health() if self.health else (True, "razard running", {})
        lag = self.loop_lag
        values = {**values, "loop_lag_ms": round(lag * 1000, 1)}
        if lag > 1.0:
            return Reading(False, f"event loop lagging {lag:.1f}s; {summary}", values)
        return Reading(ok, summary, values)

    # ------------------------------------------------------------ pulse

    def _effective(self, src: Source) -> float | None:
        """When ``src`` last counted as beating; None when it is not judged right now."""
        if src.kind == "heartbeat":
            if src.name in self.beating:
                judged, since = self.host.beat_grace(src.name)
                if not judged:
                    return None  # starting, or stopped by an operator
                if src.reported:
                    # silent in this outage: only a real beat ends it, not a restart's grace
                    return src.last or self.started
                return max(src.last or 0.0, since or 0.0) or self.started
            return src.last
        return src.last if src.last is not None else self.started

    def pulse(self, layer: str, now: float | None = None) -> tuple[float | None, list[Source]]:
        """The layer's pulse age (None: not configured) and its sources past the window."""
        now = self.clock() if now is None else now
        st = self.layers[layer]
        if not st.settings.enabled:
            return None, []
        ages: list[tuple[float, Source]] = []
        for src in list(st.sources.values()):
            last = self._effective(src)
            if last is not None:
                ages.append((max(now - last, MIN_AGE), src))
        if not ages:
            return None, []
        window = st.settings.window
        return max(a for a, _ in ages), [s for a, s in ages if a > window]

    def aligned(self, now: float | None = None) -> bool:
        """Every configured layer beats within its window and none is in an outage."""
        return all(
            (not self.layers[n].down if age is None else age <= self.layers[n].settings.window)
            for n in LAYERS
            for age in [self.pulse(n, now)[0]]
        )

    # ------------------------------------------------------------ evaluation

    async def _evaluate_forever(self) -> None:
        tick = min(1.0, min(st.settings.interval for st in self.layers.values()) / 2)
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(tick)
            self.loop_lag = max(0.0, loop.time() - before - tick)
            self.evaluate()

    def evaluate(self, now: float | None = None) -> None:
        """Compare every layer's pulse with its window; act on each change."""
        now = self.clock() if now is None else now
        for name in LAYERS:
            st = self.layers[name]
            age, stale = self.pulse(name, now)
            if age is None:
                continue
            if stale and not st.down:
                self._went_down(st, age, stale, now)
            elif stale:
                # still down: a source that fell silent since the outage began is reported too
                for src in stale:
                    if not src.reported or self._silent_since_restart(st, src, now):
                        self._act_on(st, src, age)
            elif st.down:
                self._came_up(st, now)

    def _evidence(self, st: LayerState, stale: list[Source], now: float) -> str:
        parts = []
        for src in stale:
            last = self._effective(src)
            age = f"{now - last:.1f}s" if last is not None else "never"
            if src.kind == "sensor":
                reading = src.reading.summary if src.reading else "no reading yet"
                parts.append(f"sensor: {reading} (last good {age} ago)")
            else:
                parts.append(f"heartbeat {src.name}: last beat {age} ago")
        return "; ".join(parts)

    def _went_down(self, st: LayerState, age: float, stale: list[Source], now: float) -> None:
        st.down, st.down_since = True, now - age  # the outage began at the last good beat
        st.outages += 1
        evidence = self._evidence(st, stale, now)
        self.events.emit(
            "chakra_down",
            f"{st.layer} layer down: pulse {age:.1f}s old, window {st.settings.window:g}s; "
            f"{evidence}",
            layer=st.layer,
            priority=Priority.ERR,
            pulse_age_s=round(age, 1),
            window_s=st.settings.window,
            stale=",".join(s.name for s in stale),
        )
        for src in stale:
            self._act_on(st, src, age)

    def _silent_since_restart(self, st: LayerState, src: Source, now: float) -> bool:
        """The ladder restarted this silent component and it has had a whole window since
        without a beat: hand it to the ladder again (no new chakra_down: same outage)."""
        if src.kind != "heartbeat" or src.reported_at is None:
            return False
        judged, since = self.host.beat_grace(src.name)
        return (
            judged
            and since is not None
            and since > src.reported_at
            and now - since > st.settings.window
        )

    def _act_on(self, st: LayerState, src: Source, age: float) -> None:
        src.reported = True
        src.reported_at = self.clock()
        if src.kind == "heartbeat":
            comp = self.config.component(src.name)
            if comp is None or comp.layer != st.layer or not comp.heartbeat:
                return  # an external source: the layer's state and the event say it all
            self.host.escalate(
                comp.name,
                "heartbeat",
                f"no heartbeat for {age:.1f}s (window {st.settings.window:g}s)",
                healer_tried=False,
            )
            return
        if st.layer in SENSOR_LAYERS and (st.heal_task is None or st.heal_task.done()):
            reason = src.reading.summary if src.reading else "sensor silent"
            st.heal_task = self._spawn(self._heal_outage(st, reason), f"heal:{st.layer}")

    async def _heal_outage(self, st: LayerState, reason: str) -> None:
        """Handle one outage: the healer, its next action while one did not hold, then the
        layer's components' ladders, then the operator; never ends silently."""
        outage = st.outages
        skip: list[str] = []
        while True:
            run = await self.heal(st.layer, why=f"layer down: {reason}", skip=skip)
            by = run.report.get("healed_by")
            if (
                run.result == "did_not_hold"
                and st.layer in RESTORE_LAYERS  # their healers take RAZAR_HEAL_SKIP
                and isinstance(by, str)
                and by not in skip
            ):
                skip.append(by)  # the healer's next action, if it has one
                continue
            break
        if run.healed:
            if st.layer in RESTORE_LAYERS and run.report.get("healed_by") in RUNTIME_LIMITS:
                if st.down:
                    st.restore_pending = True
                else:  # already back while the heal was verified
                    self._spawn(self._restore(st.layer), f"restore:{st.layer}")
            return
        comps = self._components(st.layer)
        handed = [
            c.name
            for c in comps
            if self.host.escalate(
                c.name,
                "layer",
                f"{st.layer} layer down ({reason}); its healer did not heal it: {run.reason}",
                healer_tried=True,
            )
        ]
        if not handed:
            self.events.emit(
                "operator_alert",
                f"{st.layer} layer down ({reason}) and its healer {run.healer} could not heal "
                f"it ({run.result.replace('_', ' ')}: {run.reason}); no component of the layer "
                "to escalate to",
                layer=st.layer,
                priority=Priority.ALERT,
            )
        else:
            self.events.emit(
                "chakra_escalated",
                f"{st.layer} healer could not heal the layer; escalated to {', '.join(handed)}",
                layer=st.layer,
                priority=Priority.WARNING,
            )
            self._spawn(self._follow_up(st, outage, run, handed), f"follow-up:{st.layer}")

    async def _follow_up(
        self, st: LayerState, outage: int, run: HealRun, handed: list[str]
    ) -> None:
        """The components' ladders have the outage: if the layer is still down once they
        had their time, the operator hears of it (once: this outage's handling ends here)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(FOLLOW_UP_MIN, FOLLOW_UP_WINDOWS * st.settings.window)
        while loop.time() < deadline:
            await asyncio.sleep(st.settings.interval)
            if not st.down or st.outages != outage:
                return
        age, stale = self.pulse(st.layer)
        evidence = self._evidence(st, stale, self.clock()) if stale else "no fresh beat"
        self.events.emit(
            "operator_alert",
            f"{st.layer} layer still down after its healer {run.healer} "
            f"({run.result.replace('_', ' ')}: {run.reason}) and the ladders of "
            f"{', '.join(handed)}: {evidence}",
            layer=st.layer,
            priority=Priority.ALERT,
        )

    def _came_up(self, st: LayerState, now: float) -> None:
        took = now - (st.down_since or now)
        st.down, st.down_since = False, None
        self.events.emit(
            "chakra_up",
            f"{st.layer} layer beating again after {took:.1f}s",
            layer=st.layer,
            priority=Priority.NOTICE,
            outage_s=round(took, 1),
        )
        if st.restore_pending:
            st.restore_pending = False
            self._spawn(self._restore(st.layer), f"restore:{st.layer}")

    async def _restore(self, layer: str) -> None:
        await self.heal(layer, mode="restore", why="layer is back: undo runtime limits")

    def held_units(self, layer: str, unit: str = "") -> list[str]:
        """The units ``layer``'s healer is known to restart: the layer's own for the restart
        healers (throat, third_eye, crown), and the failing unit it was called for. Any other
        unit it stops or restarts is held from the moment systemd runs the job."""
        units = [unit] if unit else []
        if layer in RESTART_LAYERS:
            units += [c.unit for c in self._components(layer)]
        return units

    async def heal(
        self,
        layer: str,
        *,
        component: str = "",
        unit: str = "",
        mode: str = "heal",
        dry_run: bool = False,
        why: str = "",
        skip: Sequence[str] = (),
    ) -> HealRun:
        """Run ``layer``'s healer, with the supervisor holding the units it touches meanwhile.

        A run the healer calls healed is verified before it is recorded (see `verify`):
        it stays ``healed`` only when it held, else it is ``did_not_hold``."""
        if dry_run:
            return await self.runner.run(
                layer, component=component, unit=unit, mode=mode, dry_run=True, why=why
            )
        users: list[NvmlUser] = []
        if layer == "sacral":
            # nvidia-smi --gpu-reset refuses a GPU that any process holds open
            sensor = self.layers["sacral"].sensor
            users = [*self.nvml_users, *([sensor] if isinstance(sensor, GpuSensor) else [])]
            for user in users:
                await asyncio.to_thread(user.pause)
        try:
            async with self.host.hold(self.held_units(layer, unit)) as held:
                run = await self.runner.run(
                    layer,
                    component=component,
                    unit=unit,
                    mode=mode,
                    why=why,
                    skip=skip,
                    record=False,
                )
                touched = sorted(held)
        finally:
            for user in users:
                user.resume()
        if run.healed and mode == "heal":
            run = await self.verify(run, touched)
        self.runner.record(run)
        return run

    async def verify(self, run: HealRun, units: Sequence[str]) -> HealRun:
        """Did the heal hold? After the layer's settle time: its sensor reads good (a reading
        taken since the healer ended) and every unit the healer touched is up, with the same
        main pid as when the healer ended, and passes its probe."""
        st = self.layers[run.layer]
        settle = st.settings.settle_time
        ended = self.clock()
        pids = {u: self.host.main_pid(u) for u in units}
        await asyncio.sleep(settle)
        seen: list[str] = []
        problems: list[str] = []
        src = st.sources.get(SENSOR) if st.sensor is not None else None
        if src is not None:
            # a reading taken since the healer ended: at most one more interval away
            step = min(0.1, st.settings.interval)
            for _ in range(int((st.settings.interval + 1.0) / step)):
                if src.reading is not None and src.reading.at >= ended:
                    break
                await asyncio.sleep(step)
            reading = src.reading
            if reading is None or reading.at < ended:
                problems.append("no sensor reading since the healer ended")
            elif not reading.ok:
                problems.append(f"sensor still says {reading.summary}")
            else:
                seen.append(f"sensor: {reading.summary}")
        for unit in units:
            ok, what = await self.host.check_unit(unit, pids.get(unit, 0))
            (seen if ok else problems).append(what)
        if problems:
            by = run.report.get("healed_by")
            return replace(
                run,
                result="did_not_hold",
                reason=f"the healer said healed{' by ' + str(by) if by else ''} "
                f"({run.reason}), but {settle:g}s later: {'; '.join(problems)}",
                verified=f"checked {settle:g}s after the healer: " + "; ".join(problems + seen),
            )
        return replace(
            run,
            verified=f"verified {settle:g}s after the healer: "
            + ("; ".join(seen) or "nothing to check"),
        )

    # ------------------------------------------------------------ reporting

    def snapshot(self, now: float | None = None) -> list[dict[str, Any]]:
        """Each layer for ``razarctl chakra``: state, last beat, hz, sensor, healer runs."""
        now = self.clock() if now is None else now
        out = []
        for name in LAYERS:
            st = self.layers[name]
            age, stale = self.pulse(name, now)
            sensor = st.sources.get(SENSOR)
            last = self.runner.last.get(name)
            sources = []
            for src in st.sources.values():
                eff = self._effective(src)
                sources.append(
                    {
                        "name": src.name,
                        "kind": src.kind,
                        "age_s": None if eff is None else round(max(now - eff, 0.0), 2),
                        "stale": any(s is src for s in stale),
                        "judged": eff is not None,
                    }
                )
            state = (
                "disabled"
                if not st.settings.enabled
                else "unconfigured"
                if age is None
                else "down"
                if st.down or stale
                else "up"
            )
            out.append(
                {
                    "layer": name,
                    "state": state,
                    "pulse_age_s": None if age is None else round(age, 2),
                    "hz": None if age is None else round(1.0 / age, 4),
                    "window_s": st.settings.window,
                    "last_beat": None if age is None else now - age,
                    "sensor": sensor.reading.as_dict() if sensor and sensor.reading else None,
                    "has_sensor": sensor is not None,
                    "sources": sources,
                    "outages": st.outages,
                    "healer": st.settings.healer_name,
                    "healer_runs": dict(self.runner.counts.get(name, {})),
                    "last_heal": last.as_dict() if last else None,
                    "healing": st.heal_task is not None and not st.heal_task.done(),
                    "actions": dict(self.supports.get(name, {})),
                }
            )
        return out


class ChakraCollector(Collector):
    """``chakra_pulse_hz{chakra}``, ``chakra_alignment`` and friends, computed at scrape time."""

    def __init__(self, chakra: Callable[[], Chakra | None]) -> None:
        self._chakra = chakra

    def collect(self) -> Iterator[Any]:
        chakra = self._chakra()
        if chakra is None:
            return
        now = chakra.clock()
        hz = GaugeMetricFamily(
            "chakra_pulse_hz", "1 / age of the layer's stalest beat (seconds)", labels=["chakra"]
        )
        up = GaugeMetricFamily(
            "razar_chakra_up", "1 when the layer beats within its window", labels=["chakra"]
        )
        window = GaugeMetricFamily(
            "razar_chakra_window_seconds", "A layer is down past this pulse age", labels=["chakra"]
        )
        outages = CounterMetricFamily(
            "razar_chakra_outages", "Times the layer went down", labels=["chakra"]
        )
        aligned = True
        for name in LAYERS:
            try:
                age, stale = chakra.pulse(name, now)
            except RuntimeError:  # the sources changed under a scrape: skip this layer once
                continue
            st = chakra.layers[name]
            outages.add_metric([name], st.outages)
            if age is None:
                if st.down:  # mid-outage, its only sources restarting: still down, not "fine"
                    up.add_metric([name], 0.0)
                    window.add_metric([name], st.settings.window)
                    aligned = False
                continue
            hz.add_metric([name], 1.0 / age)
            up.add_metric([name], 0.0 if stale else 1.0)
            window.add_metric([name], st.settings.window)
            aligned = aligned and not stale
        yield hz
        yield up
        yield window
        yield outages
        yield GaugeMetricFamily(
            "chakra_alignment",
            "1 when every configured layer beats within its window",
            value=1.0 if aligned else 0.0,
        )


def register(registry: CollectorRegistry, chakra: Callable[[], Chakra | None]) -> None:
    """Put the chakra metrics on razard's registry."""
    registry.register(ChakraCollector(chakra))


@contextlib.asynccontextmanager
async def no_hold(units: Iterable[str] = ()) -> AsyncIterator[set[str]]:
    """A `ChakraHost.hold` that holds nothing (tests, dry runs)."""
    yield set(units)

"""razard's main loop: one task group, signals as cancellation, sd_notify for systemd.

    SIGTERM/SIGINT  stop supervising (units keep running; the next razard adopts them)
    SIGHUP          reload the config; an invalid one is rejected and the running one kept

``READY=1`` is sent once the control interface is on the bus and the first
boot wave has settled; ``STATUS=`` carries the one-line summary; ``WATCHDOG=1``
is sent from the event loop itself, so a wedged loop is caught by systemd.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import sdnotify
from dbus_fast.aio import MessageBus
from prometheus_client import Gauge

from agents.chakra import Chakra
from agents.chakra import register as register_chakra
from agents.gpu import open_backend
from agents.gpu_metrics import GpuCollector
from agents.healer import HealerMetrics, HealerRunner
from agents.rung import HealerRung
from razard import __version__, storage
from razard.config import Config, load_config
from razard.control import export_control
from razard.errors import ConfigError, RazarError, StateError
from razard.journal import EventLog, Priority, one_line, say
from razard.layout import (
    ESCALATION_DIR,
    LOG_FILE,
    PENDING_DIR,
    PENDING_SUFFIX,
    STATE_LOCK,
    UNJOURNALED_FILE,
)
from razard.listener import RETRY_S, MetricsListener, where
from razard.metrics import Metrics
from razard.operations import Operations
from razard.repair.handover import Handover
from razard.repair.patch import PatchEngine
from razard.repair.rung import RepairRung
from razard.repair.setup import build_roster, load_repair
from razard.runner import EscalationRung
from razard.supervisor import Components, Supervisor
from razard.systemd import Systemd

log = logging.getLogger(__name__)

STATUS_REFRESH = 2.0  # seconds between checks of what STATUS= says (e.g. DEGRADED)
START_EXTENSION_S = 60.0


def _recover(engine: PatchEngine, config: Config) -> tuple[list[str], set[str]]:
    """Undo unverified patches; returns what was done and which components it touched."""
    pending_dir = os.path.join(config.daemon.state_dir, PENDING_DIR)
    pending = {  # string paths: a Path per component would intern each name
        c.name
        for c in config.components
        if os.path.exists(os.path.join(pending_dir, c.name + PENDING_SUFFIX))
    }
    with engine.lock():
        # owed before any file is restored: a razard killed in between still restarts them
        for name in pending:
            engine.owe_restart(name, "its files are restored from a snapshot at start")
        lines = engine.recover(config.components)
        return lines, engine.restarts_owed() & {c.name for c in config.components}


def hold_state_lock(state_dir: Path) -> int:
    """Hold ``razard.lock`` for razard's life: one razard per state directory, and razarctl's
    offline rollback can tell a razard that is alive but not (yet) on the bus."""
    try:
        return storage.take_lock(state_dir / STATE_LOCK, wait=0)
    except BlockingIOError:
        raise StateError(
            f"{state_dir}: another razard is running on this state directory "
            f"(it holds {STATE_LOCK})"
        ) from None
    except OSError as e:
        raise StateError(f"{state_dir / STATE_LOCK}: cannot open: {e.strerror or e}") from e


class Notifier:
    """sd_notify, silent when razard does not run under systemd (no NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        self._n: Any = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        self._last_status = ""

    def send(self, text: str) -> None:
        if self._n is not None:
            self._n.notify(text)

    def status(self, line: str) -> None:
        # one line: systemd reads each line of a message as a command of its own, and a
        # status can carry text from elsewhere (a port holder's name, the fleet's note)
        line = one_line(line)
        if line != self._last_status:
            self._last_status = line
            self.send(f"STATUS={line}")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half the unit's WatchdogSec, when systemd asked for pings."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return max(int(usec) / 2_000_000, 0.05)


#: razard's own loggers: INFO by default. Every other logger (httpx logs each probe's
#: request at INFO, dbus-fast, asyncio, watchdog...) stays at WARNING, or it floods the journal.
OWN_LOGGERS = ("razard", "agents")


def setup_logging(debug: bool = False) -> None:
    """Log to stderr (the journal under systemd): razard's loggers at INFO and everything
    else at WARNING; with ``debug`` everything at DEBUG."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)


def run_main(
    config_path: Path,
    retries: int | None = None,
    *,
    remote_attempts: int | None = None,
    long_task: bool = False,
    debug: bool = False,
) -> int:
    """``razard`` itself: run until SIGTERM and return the exit code (0 ok, 1 runtime
    error, 2 invalid config), the reason for a failure on stderr."""
    setup_logging(debug)
    try:
        return asyncio.run(
            run(config_path, retries, remote_attempts=remote_attempts, long_task=long_task)
        )
    except ConfigError as e:
        return _failed(f"invalid config, not starting:\n{e}", 2)
    except RazarError as e:
        return _failed(str(e), 1)
    except KeyboardInterrupt:
        return 0


def _failed(message: str, code: int) -> int:
    """Say why razard stops, as its other failures are said (red on a terminal)."""
    line = f"razard: {message}"
    if sys.stderr.isatty():
        line = f"\x1b[31m{line}\x1b[0m"
    say(line)
    return code


def load(path: Path, retries: int | None) -> Config:
    """Load the config and apply ``--retries`` (raises ConfigError)."""
    cfg = load_config(path)
    return cfg.with_retries(retries) if retries is not None else cfg


async def run(
    config_path: Path,
    retries: int | None = None,
    *,
    remote_attempts: int | None = None,
    long_task: bool = False,
) -> int:
    """Run razard until SIGTERM; returns the process exit code."""
    config = load(config_path, retries)  # invalid config: nothing has been touched yet
    repair_setup = load_repair(config, os.environ)  # so are invalid agents/registry files
    state_dir = config.daemon.state_dir
    storage.prepare_state_dir(state_dir)  # root:razar 0750: operators read, nobody else
    lock_fd = hold_state_lock(state_dir)  # released by the kernel when razard exits
    events = EventLog(state_dir / LOG_FILE, mirror_to_stderr="JOURNAL_STREAM" not in os.environ)
    notifier = Notifier()
    metrics = Metrics(__version__)
    try:  # a port another process holds is not fatal: see razard/listener.py
        listener = MetricsListener(
            metrics.serve, config.daemon.metrics_address, config.daemon.metrics_port
        )
    except OSError as e:
        at = where(config.daemon.metrics_address, config.daemon.metrics_port)
        raise RazarError(
            f"metrics: cannot listen on {at}: {e.strerror or e} (set [razard].metrics_port "
            "or RAZAR_METRICS_PORT)"
        ) from e

    # built in dependency order, each part handed what it needs: the table of components
    # first (the layer agents watch it), then the layer agents, the rungs they and the
    # repair agents make, the supervisor that climbs those rungs, and what razarctl calls
    systemd = Systemd(bus=config.daemon.bus)
    engine = PatchEngine(state_dir)
    components = Components(state_dir, systemd, events)
    # [fleet]: membership, the budget around disruptive healers and patches, the breaker,
    # shared fixes (None without the table: no etcd needed, nothing changes)
    fleet = None
    if config.fleet.enabled:  # loaded only then: httpx is for the fleet and the notifier
        from razard.fleet.node import FleetNode

        fleet = await FleetNode.open(config.fleet, events, metrics.registry)

    def status_line() -> str:
        """STATUS=: the summary, led by DEGRADED while state cannot be saved."""
        line = components.summary()
        if fleet is not None and fleet.status_note():
            line = f"{line}; {fleet.status_note()}"
        if listener.taken is not None:
            line = f"DEGRADED: metrics not served ({listener.taken}); {line}"
        if components.save_failing:
            return f"DEGRADED: state not being saved (disk full or read-only); {line}"
        return line

    def health() -> tuple[bool, str, dict[str, Any]]:
        bus_up, saving = systemd.connected, not components.save_failing
        values = {"bus_connected": bus_up, "state_saved": saving}
        if not bus_up:
            return False, "not connected to systemd's bus", values
        if not saving:
            return False, "state cannot be saved", values
        return True, f"orchestrating: {components.summary()}", values

    healers = HealerRunner(
        config.chakra,
        state_dir=state_dir,
        bus=config.daemon.bus,
        config_path=config.source,
        events=events,
        metrics=HealerMetrics(metrics.registry),
        systemd=systemd,  # each healer in its own sandboxed transient unit
    )
    layer_agents = Chakra(config, events, healers, components, env=os.environ, health=health)
    gpu_metrics = GpuCollector(lambda: open_backend(os.environ))
    metrics.registry.register(gpu_metrics)
    layer_agents.nvml_users.append(gpu_metrics)
    register_chakra(metrics.registry, lambda: layer_agents)

    async def run_healer(layer: str, component: str, unit: str) -> tuple[bool, str]:
        # the registry's `healer` fixes go through the layer agent (its hold and records)
        run = await layer_agents.heal(layer, component=component, unit=unit, why="registry fix")
        return run.healed, f"{run.result.replace('_', ' ')}: {run.reason}"

    async def kill_unit(unit: str, sig: int) -> None:
        # the registry's unit_kill fixes: the component's own cgroup, never razard's
        if unit == await systemd.unit_by_pid(os.getpid()):
            raise RazarError(f"{unit} is razard's own unit")
        await systemd.kill(unit, sig)

    roster = build_roster(
        repair_setup,
        os.environ,
        on_retry=lambda c: metrics.ai_retries.labels(c).inc(),
        run_healer=run_healer,
        kill_unit=kill_unit,
    )
    handover = Handover(
        state_dir,
        roster,
        engine,
        events,
        metrics,
        remote_attempts=remote_attempts,
        escalation_warning=repair_setup.thresholds.escalation_warning,
    )
    if fleet is not None:  # the gates around disruptive healers and patch applies
        fleet.wire(events=events, healers=healers, handover=handover)
    repair = RepairRung(handover, long_task=long_task) if handover.usable else None
    rungs: list[EscalationRung] = [HealerRung(layer_agents), *([repair] if repair else [])]
    # a patch razard did not get to verify before it stopped is undone, never left half-done
    lines, touched = await asyncio.to_thread(_recover, engine, config)
    for line in lines:
        events.emit("patch_recovered", line, priority=Priority.WARNING)
    sup = Supervisor(
        config,
        systemd,
        events,
        metrics,
        components=components,
        rungs=rungs,
        engine=engine,
        # their files were restored but the process may still run the patched code
        restart_on_boot=touched,
        on_change=lambda: notifier.status(status_line()),
        on_config=[layer_agents.reload],
    )
    operations = Operations(
        sup,
        repair=repair,
        layer_agents=layer_agents,
        reload_config=lambda: load(config_path, retries),
        ladder_info={
            "thresholds": {
                "rstar": repair_setup.thresholds.rstar,
                "escalation_warning": repair_setup.thresholds.escalation_warning,
            }
        },
    )

    Gauge(
        "razar_degraded",
        "1 while razard cannot save its state (a full or read-only state directory)",
        registry=metrics.registry,
    ).set_function(lambda: 1.0 if components.save_failing else 0.0)

    async def refresh_status() -> None:
        # a save failing or recovering changes no component, so nothing else says it
        while True:
            notifier.status(status_line())
            await asyncio.sleep(STATUS_REFRESH)

    escalations = None  # [escalation] is read at start; the components follow reloads
    if config.escalation.enabled:
        from razard.escalation.metrics import NotifierMetrics
        from razard.escalation.notifier import EscalationNotifier
        from razard.escalation.spool import Spool

        # what journald refuses (stopped, restarting, full) still reaches the notifier
        events.unjournaled = Spool(state_dir / ESCALATION_DIR / UNJOURNALED_FILE)

        escalations = EscalationNotifier(
            config.escalation,
            state_dir,
            lambda: sup.config.components,
            events,
            NotifierMetrics(metrics.registry, (t.kind for t in config.escalation.targets)),
            since=time.time(),  # first run ever: from now on (the cursor continues after)
        )

    async def export(bus: MessageBus) -> None:
        await export_control(bus, operations)

    await systemd.connect()
    systemd.on_connect(export)
    await export(systemd.bus)
    sd_version = await systemd.version()
    served = "not served yet" if listener.taken is not None else "on"
    events.emit(
        "razard_starting",
        f"razard {__version__} (pid {os.getpid()}) on the {config.daemon.bus} bus, "
        f"systemd {sd_version}, {len(config.components)} components, metrics {served} "
        f"{listener.where}, state in {state_dir}",
        priority=Priority.NOTICE,
    )
    if listener.taken is not None:
        events.emit(
            "metrics_unavailable",
            f"metrics: {listener.taken}; razard supervises without its metrics page and "
            f"tries again every {RETRY_S:g} s",
            priority=Priority.ERR,
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    async def reload() -> None:
        notifier.send("RELOADING=1")
        try:
            await operations.reload()
        except ConfigError as e:
            events.emit(
                "config_rejected",
                f"new config rejected, keeping the running one:\n{e}",
                priority=Priority.ERR,
            )
        except RazarError as e:
            events.emit("config_rejected", f"reload failed: {e}", priority=Priority.ERR)
        finally:
            if sup.ready:  # never READY before the first wave has settled
                notifier.send("READY=1")
            notifier.status(sup.summary())

    def on_hup() -> None:
        tg_tasks.add(loop.create_task(reload()))

    tg_tasks: set[asyncio.Task[None]] = set()

    async def ready() -> None:
        sup.ready = True
        metrics.ready.set(1)
        notifier.send("READY=1")
        notifier.status(sup.summary())
        events.emit(
            "razard_ready", f"first boot wave settled: {sup.summary()}", priority=Priority.NOTICE
        )

    async def extend_start() -> None:
        # READY waits for the first wave, which may outlast systemd's start timeout
        # (a model loading for minutes): keep asking for more time until ready
        while not sup.ready:
            notifier.send(f"EXTEND_TIMEOUT_USEC={int(START_EXTENSION_S * 1_000_000)}")
            await asyncio.sleep(START_EXTENSION_S / 3)

    async def watchdog() -> None:
        interval = Notifier.watchdog_interval()
        if interval is None:
            return
        while True:
            notifier.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    boot: asyncio.Task[None] | None = None
    try:
        await sup.start()
        await layer_agents.start()  # heartbeat files exist before the units that touch them
        gpu_metrics.start()  # counts XID events in its own thread; nothing to do without a GPU
        loop.add_signal_handler(signal.SIGHUP, on_hup)  # reloads only once runners exist
        async with asyncio.TaskGroup() as tg:
            tg.create_task(systemd.run(), name="systemd-connection")
            tg.create_task(watchdog(), name="watchdog")
            tg.create_task(refresh_status(), name="status-refresh")
            tg.create_task(extend_start(), name="extend-start")
            if listener.taken is not None:
                tell = lambda e, m, p: events.emit(e, m, priority=p)  # noqa: E731
                tg.create_task(listener.keep_trying(tell), name="metrics-listener")
            if escalations is not None:
                tg.create_task(escalations.run(), name="escalation-notifier")
            if fleet is not None:
                states = lambda: [r.rec.status for r in components.runners.values()]  # noqa: E731
                tg.create_task(fleet.run(states, layer_agents.aligned), name="fleet")
            boot = tg.create_task(sup.boot(on_first_wave=ready), name="boot")
            await stop.wait()
            notifier.send("STOPPING=1")
            events.emit(
                "razard_stopping",
                f"stopping on signal: {sup.summary()}; units keep running and will be adopted",
                priority=Priority.NOTICE,
            )
            raise _Stop
    except* _Stop:
        pass
    finally:
        if boot is not None:
            boot.cancel()
        for t in tg_tasks:
            t.cancel()
        await layer_agents.stop()
        await asyncio.to_thread(gpu_metrics.stop)
        await sup.shutdown()
        if fleet is not None:
            await fleet.stop()  # gives back its slots and lease: its record goes at once
        await systemd.close()
        os.close(lock_fd)
    return 0


class _Stop(Exception):
    """Raised inside the task group to cancel every task on SIGTERM."""

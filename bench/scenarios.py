"""Scenarios 1-5: recovery, crash storm, boot, idle cost, metrics scrape.

Every scenario runs the systems in rotating order, trial by trial, so drift on
the machine (other load, a warm cache) hits each of them alike, and every ratio
compares figures of the same run.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil  # type: ignore[import-untyped]

from bench import timeline
from bench.load import CpuLoad
from bench.ready import ReadyListener
from bench.stats import summary
from bench.systems import (
    PREFIX,
    PROBE_INTERVAL,
    SYSTEMS,
    Comp,
    Razard,
    System,
    kill_leftovers,
)
from bench.timeline import Trial
from razard.layout import LOG_FILE

log = logging.getLogger("bench")
T = TypeVar("T")

SYSTEM_NAMES = ("razard", "systemd", "supervisord")


@dataclass(frozen=True)
class Sizes:
    """How big and how long each scenario is (`FULL`, `SMOKE`, or scaled)."""

    recovery_comps: int = 10
    recovery_trials: int = 60
    recovery_pause: float = 0.3
    storm_comps: int = 100
    storm_trials: int = 10
    storm_pause: float = 2.0
    settle: float = 1.5  # after boot, before the first kill (razard: healthy after 0.1 s up)
    boot_comps: int = 200
    boot_waves: int = 5
    boot_trials: int = 5
    idle_sizes: tuple[int, ...] = (50, 200, 500)
    idle_seconds: float = 60.0
    idle_window: float = 10.0
    idle_settle: float = 10.0
    scrape_trials: int = 200
    ctl_runs: int = 20  # razarctl status against razard at the largest idle size
    notifier_lines: int = 1_000_000
    notifier_trials: int = 3
    timeout: float = 120.0

    def scaled(self, trials: float = 1.0, comps: float = 1.0) -> Sizes:
        """Trial counts, durations and journal entries times ``trials``; component counts
        times ``comps`` (1.0: as they are)."""

        def n(x: float, f: float) -> int:
            return max(1, round(x * f))

        return replace(
            self,
            recovery_trials=n(self.recovery_trials, trials),
            storm_trials=n(self.storm_trials, trials),
            boot_trials=n(self.boot_trials, trials),
            idle_seconds=max(2.0, self.idle_seconds * trials),
            idle_window=max(1.0, self.idle_window * trials),
            scrape_trials=n(self.scrape_trials, trials),
            ctl_runs=n(self.ctl_runs, trials),
            notifier_lines=n(self.notifier_lines, trials),
            notifier_trials=max(2, n(self.notifier_trials, trials)),
            recovery_comps=n(self.recovery_comps, comps),
            storm_comps=n(self.storm_comps, comps),
            boot_comps=max(self.boot_waves, n(self.boot_comps, comps)),
            idle_sizes=tuple(n(x, comps) for x in self.idle_sizes),
        )


FULL = Sizes()
SMOKE = Sizes(
    recovery_comps=3,
    recovery_trials=3,
    recovery_pause=0.1,
    storm_comps=5,
    storm_trials=2,
    storm_pause=0.3,
    settle=0.3,
    boot_comps=10,
    boot_waves=5,
    boot_trials=1,
    idle_sizes=(5,),
    idle_seconds=2.0,
    idle_window=1.0,
    idle_settle=0.5,
    scrape_trials=5,
    ctl_runs=2,
    notifier_lines=2000,
    notifier_trials=2,
    timeout=60.0,
)


@dataclass
class Bench:
    """One run: where it works, the readiness socket, the sizes and the systems to compare."""

    work: Path
    sizes: Sizes
    systems: tuple[str, ...] = SYSTEM_NAMES
    listener: ReadyListener = field(init=False)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.listener = ReadyListener(self.work / "ready.sock")

    def close(self) -> None:
        kill_leftovers(self.listener.pids)
        self.listener.close()

    def new(self, kind: str) -> System:
        self._seq += 1
        return SYSTEMS[kind](self.work / f"{self._seq:02d}-{kind}", self.listener.path)

    @contextlib.contextmanager
    def running(self, kind: str, comps: list[Comp], *, probes: bool = False) -> Iterator[System]:
        """A system prepared and booted with ``comps``, every one of them ready."""
        system = self.new(kind)
        try:
            system.prepare(comps, probes=probes)
            t0 = time.monotonic()
            system.boot()
            self.wait_ready(system, [c.name for c in comps], since=t0)
            yield system
        finally:
            system.close()
            kill_leftovers(self.listener.pids)

    def wait_ready(
        self,
        system: System,
        names: list[str],
        *,
        since: float,
        not_pids: dict[str, int] | None = None,
    ) -> float:
        """Monotonic time at which the last of ``names`` announced itself."""
        try:
            got = self.listener.wait_all(
                names, since=since, not_pids=not_pids, timeout=self.sizes.timeout
            )
        except Exception as e:
            tail = system.log_tail()
            raise RuntimeError(f"{system.name}: {e}\n{tail}") from e
        return max(r.t for r in got.values())


def comps(prefix: str, n: int, *, waves: int = 1, ports: list[int] | None = None) -> list[Comp]:
    """``n`` components; waves are consecutive blocks of equal size (wave 0 first)."""
    per = -(-n // waves)
    return [
        Comp(f"{prefix}{i:03d}", wave=i // per, port=ports[i] if ports else 0) for i in range(n)
    ]


def free_ports(n: int, start: int = 21000, stop: int = 31000) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 that nothing is bound to right now."""
    found: list[int] = []
    for port in range(start, stop):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    raise RuntimeError(f"only {len(found)} free ports in {start}-{stop}, needed {n}")


def rotations(names: tuple[str, ...], rounds: int) -> Iterator[tuple[int, list[str]]]:
    """Round ``r`` runs the systems starting at a different one each time."""
    k = len(names)
    for r in range(rounds):
        yield r, [names[(r + j) % k] for j in range(k)]


def _errors_to(result: dict[str, Any], name: str, fn: Callable[[], T]) -> T | None:
    """``fn()``, or None with its error written into ``result["errors"][name]``."""
    try:
        return fn()
    except Exception as e:
        log.exception("%s failed", name)
        result.setdefault("errors", {})[name] = str(e).splitlines()[0][:300]
        return None


# --------------------------------------------------------------------------- 1 and 2


def recovery_and_storm(b: Bench, systems: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Scenarios 1 and 2 on the same three running systems: one SIGKILL, then 100 at once."""
    sz = b.sizes
    systems = systems or b.systems
    n = max(sz.recovery_comps, sz.storm_comps)
    out: dict[str, Any] = {
        "recovery": {"unit": "ms", "comps": sz.recovery_comps, "systems": {}},
        "storm": {"unit": "s", "comps": sz.storm_comps, "systems": {}},
    }
    rec: dict[str, list[float]] = {s: [] for s in systems}
    storm: dict[str, list[float]] = {s: [] for s in systems}
    trials: dict[str, list[Trial]] = {s: [] for s in systems}
    since_wall = time.time()
    with contextlib.ExitStack() as stack:
        running: dict[str, tuple[System, list[Comp]]] = {}
        for kind in systems:
            cs = comps(PREFIX[kind], n)
            # b.running() only builds the context manager; it boots on enter_context
            system = _errors_to(
                out["recovery"], kind, partial(stack.enter_context, b.running(kind, cs))
            )
            if system is not None:
                running[kind] = (system, cs)
        time.sleep(sz.settle)
        live = tuple(k for k in systems if k in running)
        for r, order in rotations(live, sz.recovery_trials):
            for kind in order:
                system, cs = running[kind]
                name = cs[r % sz.recovery_comps].name
                trial = _errors_to(out["recovery"], kind, partial(_kill_one, b, system, name))
                if trial is not None:
                    rec[kind].append(1000 * (trial.ready - trial.kill))
                    trials[kind].append(trial)
                time.sleep(sz.recovery_pause)
        time.sleep(sz.settle)
        out["timeline"] = _timelines(running, trials, since_wall)
        for _r, order in rotations(live, sz.storm_trials):
            for kind in order:
                system, cs = running[kind]
                names = [c.name for c in cs[: sz.storm_comps]]
                took = _errors_to(out["storm"], kind, partial(_kill_many, b, system, names))
                if took is not None:
                    storm[kind].append(took)
                time.sleep(sz.storm_pause)
    for kind in systems:
        out["recovery"]["systems"][kind] = {**summary(rec[kind]), "samples": rec[kind]}
        out["storm"]["systems"][kind] = {**summary(storm[kind]), "samples": storm[kind]}
    return out


def _kill_one(b: Bench, system: System, name: str) -> Trial:
    old = b.listener.pid(name)
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    b.wait_ready(system, [name], since=t0, not_pids={name: old})
    new = b.listener.latest[name]
    unit = system.unit_name(name)
    return Trial(system.name, name, unit, old, new.pid, t0, new.t, system.unit_times(name))


def _timelines(
    running: dict[str, tuple[System, list[Comp]]],
    trials: dict[str, list[Trial]],
    since_wall: float,
) -> dict[str, Any]:
    """Each system's recovery trials placed on one clock with what it logged (see
    :mod:`bench.timeline`); supervisord logs to the second only, so it has none."""
    offset = timeline.wall_offset()
    out: dict[str, Any] = {}
    for kind, (system, _cs) in running.items():
        sources = system.timeline_sources()
        if sources is None or not trials.get(kind):
            continue
        manager_pid, razard_log = sources
        tls = timeline.build(
            trials[kind],
            offset,
            timeline.manager_entries(manager_pid, since_wall),
            timeline.razard_events(razard_log, since_wall) if razard_log else None,
        )
        out[kind] = {"trials": tls, "medians": timeline.medians(tls)}
    return out


def _kill_many(b: Bench, system: System, names: list[str]) -> float:
    old = {n: b.listener.pid(n) for n in names}
    t0 = time.monotonic()
    for pid in old.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return b.wait_ready(system, names, since=t0, not_pids=old) - t0


# --------------------------------------------------------------------------- load


def under_load(b: Bench) -> dict[str, Any]:
    """Scenarios 1 and 2 again while every CPU is kept busy (see :mod:`bench.load`), with
    razard also at ``Nice=-5`` beside the default: does the unit's setting matter?"""
    systems = b.systems
    if "razard" in systems:
        at = systems.index("razard") + 1
        systems = (*systems[:at], "razard-nice", *systems[at:])
    load = CpuLoad()
    with load:
        res = recovery_and_storm(b, systems)
    return {
        "load": {"method": load.method, "procs": load.procs, "systems": list(systems)},
        "load_recovery": res["recovery"],
        "load_storm": res["storm"],
        "load_timeline": res.get("timeline", {}),
    }


# --------------------------------------------------------------------------- 3


def boot(b: Bench) -> dict[str, Any]:
    """Scenario 3: from "start" to every component ready, in priority waves."""
    sz = b.sizes
    out: dict[str, Any] = {
        "unit": "s",
        "comps": sz.boot_comps,
        "waves": sz.boot_waves,
        "systems": {},
    }
    kinds = b.systems
    if "razard" in kinds:
        # beside it, razard without its up-time rule (its peers have none): what it costs
        at = kinds.index("razard") + 1
        kinds = (*kinds[:at], "razard-no-uptime", *kinds[at:])
    times: dict[str, list[float]] = {s: [] for s in kinds}
    systems: dict[str, tuple[System, list[Comp]]] = {}
    try:
        for kind in kinds:
            cs = comps(f"b{PREFIX[kind]}", sz.boot_comps, waves=sz.boot_waves)
            system = b.new(kind)
            systems[kind] = (system, cs)
            if _errors_to(out, kind, partial(_prepare, system, cs)) is None:
                del systems[kind]
                system.close()
                continue
            # warm-up, not counted: unit files written, caches warm
            if _errors_to(out, kind, partial(_boot_once, b, system, cs)) is None:
                del systems[kind]
                system.close()
        live = tuple(k for k in kinds if k in systems)
        for _r, order in rotations(live, sz.boot_trials):
            for kind in order:
                system, cs = systems[kind]
                took = _errors_to(out, kind, partial(_boot_once, b, system, cs))
                if took is not None:
                    times[kind].append(took)
        razard = systems.get("razard")
        if razard is not None and isinstance(razard[0], Razard):
            # the last trial's razar.log (each boot starts from an empty state directory)
            out["razard_waves"] = timeline.boot_waves(razard[0].state_dir / LOG_FILE)
    finally:
        for system, _cs in systems.values():
            system.close()
        kill_leftovers(b.listener.pids)
    for kind in kinds:
        out["systems"][kind] = {**summary(times[kind]), "samples": times[kind]}
    return out


def _prepare(system: System, cs: list[Comp]) -> bool:
    """``system.prepare(cs)``; True once it is done (for :func:`_errors_to`)."""
    system.prepare(cs)
    return True


def _boot_once(b: Bench, system: System, cs: list[Comp]) -> float:
    try:
        t0 = time.monotonic()
        system.boot()
        return b.wait_ready(system, [c.name for c in cs], since=t0) - t0
    finally:
        system.halt()
        kill_leftovers(b.listener.pids)


# --------------------------------------------------------------------------- 4 and 5

IDLE_CONFIGS = (
    ("razard", False),
    ("razard+probes", True),
    ("systemd", False),
    ("supervisord", False),
)


def idle_and_scrape(b: Bench) -> dict[str, Any]:
    """Scenario 4 at each size, and scenario 5 (razard's /metrics) at the largest."""
    sz = b.sizes
    configs = tuple(
        (label, probes) for label, probes in IDLE_CONFIGS if label.split("+")[0] in b.systems
    )
    labels = tuple(label for label, _ in configs)
    idle: dict[str, Any] = {
        "unit": "cpu_s",
        "seconds": sz.idle_seconds,
        "window": sz.idle_window,
        "probe_interval": PROBE_INTERVAL,
        "sizes": {},
    }
    if "razard" in b.systems:
        idle["razard_import"] = import_floor()
    biggest = max(sz.idle_sizes)
    scrape: dict[str, Any] = {"unit": "ms", "comps": biggest, "systems": {}}
    for i, order in rotations(labels, len(sz.idle_sizes)):
        size = sz.idle_sizes[i]
        per_size: dict[str, Any] = {}
        idle["sizes"][str(size)] = per_size
        ports = free_ports(size)
        for label in order:
            probes = dict(configs)[label]
            kind = label.split("+")[0]
            cs = comps(f"i{PREFIX[kind]}", size, ports=ports if probes else None)

            def one(
                kind: str = kind,
                cs: list[Comp] = cs,
                probes: bool = probes,
                label: str = label,
                size: int = size,
                per_size: dict[str, Any] = per_size,
            ) -> None:
                with b.running(kind, cs, probes=probes) as system:
                    time.sleep(sz.idle_settle)
                    per_size[label] = measure_idle(
                        system.supervisor_pids(), sz.idle_seconds, sz.idle_window
                    )
                    if size == biggest and isinstance(system, Razard):
                        scrape["systems"][label] = measure_scrape(
                            system.metrics_port, sz.scrape_trials
                        )
                        if not probes and sz.ctl_runs:
                            # what an operator waits for: razarctl status, start to exit
                            from bench.footprint import time_ctl

                            idle["ctl_status"] = {
                                "comps": size,
                                **time_ctl(system, ["status"], sz.ctl_runs),
                            }

            _errors_to(idle, f"{label}@{size}", one)
    return {"idle": idle, "scrape": scrape}


#: What razard's libraries alone take: a fresh interpreter that imports the daemon.
_IMPORT_RSS = (
    "import resource, sys; import asyncio, dbus_fast.aio, prometheus_client; "
    "libs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; import razard.daemon; "
    "print(libs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(sys.modules))"
)


def import_floor() -> dict[str, Any]:
    """RSS of a Python that imports only asyncio, dbus-fast and prometheus-client, and of
    one that imports razard's daemon (no component, nothing running): the part of
    razard's memory no number of components changes."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_RSS], capture_output=True, text=True, timeout=60
        )
        libs, daemon, modules = (int(x) for x in out.stdout.split())
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    return {"libs_mib": libs / 1024, "daemon_mib": daemon / 1024, "modules": modules}


def measure_idle(pids: list[int], seconds: float, window: float) -> dict[str, Any]:
    """CPU seconds and peak RSS of ``pids`` over ``seconds``; CPU % of one core per window."""
    procs = [psutil.Process(p) for p in pids]

    def cpu() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in procs)

    def rss() -> int:
        return sum(p.memory_info().rss for p in procs)

    start_cpu, t0 = cpu(), time.monotonic()
    last_cpu, last_t = start_cpu, t0
    windows: list[float] = []
    peak = rss()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        time.sleep(min(0.5, end - now))
        peak = max(peak, rss())
        now = time.monotonic()
        if now - last_t >= window - 1e-3 or now >= end:
            c = cpu()
            windows.append(100.0 * (c - last_cpu) / (now - last_t))
            last_cpu, last_t = c, now
    total = cpu() - start_cpu
    elapsed = time.monotonic() - t0
    return {
        "cpu_s": total,
        "elapsed_s": elapsed,
        "cpu_pct": 100.0 * total / elapsed,
        "cpu_pct_windows": summary(windows),
        "peak_rss_mib": peak / 2**20,
    }


def measure_scrape(port: int, trials: int) -> dict[str, Any]:
    """Latency of a whole ``GET /metrics`` (connect to last byte), over ``trials`` scrapes."""
    times: list[float] = []
    size = 0
    for _ in range(trials):
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            body = conn.getresponse().read()
        finally:
            conn.close()
        times.append(1000 * (time.perf_counter() - t0))
        size = len(body)
        time.sleep(0.05)
    return {**summary(times), "bytes": size, "samples": times}

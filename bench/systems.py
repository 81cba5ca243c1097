"""The three supervisors under test, driven the same way.

Each `System` is prepared once per scenario with the same components (the same
`component.py` argv), then booted, measured and halted as often as the scenario
needs:

- `Razard`: a real ``razard`` process on its own private ``systemd --user``
  manager (razard owns restarts: its units say ``Restart=no``); restart
  backoff 0 and no jitter, like the peers.
- `SystemdNative`: unit files with ``Restart=always``, ``RestartSec=0`` and
  ``StartLimitIntervalSec=0`` on another private user manager; boot waves are
  ordering on one target (``bench.target``).
- `Supervisord`: ``supervisord -n`` with ``autorestart=true``, ``startsecs=0`` and
  ``priority=`` per wave.

``supervisor_pids`` are the processes whose cost the idle scenario counts:
razard itself, the user manager, supervisord.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from razard.layout import LOG_FILE
from razard.usermanager import UserManager, start_user_manager

#: The interpreter every component runs on (the system one, not a virtualenv's).
COMPONENT_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
COMPONENT = Path(__file__).with_name("component.py")
BIN = Path(sys.executable).parent
PROBE_INTERVAL = 5.0
#: razard counts a component without a probe healthy once it stayed up min(1 s, start_timeout):
#: its ``startsecs``. The peers run with startsecs=0 / Type=exec, so razard gets 0.1 s.
START_TIMEOUT = 0.1
#: With a probe, start_timeout is how long the first passing probe may take (the default).
PROBED_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class Comp:
    """One test component: its name, boot wave (0 first) and TCP port (0: none)."""

    name: str
    wave: int = 0
    port: int = 0


def component_argv(ready_socket: Path, comp: Comp) -> list[str]:
    argv = [COMPONENT_PYTHON, "-S", "-E", str(COMPONENT), str(ready_socket), comp.name]
    return argv + ([str(comp.port)] if comp.port else [])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class System:
    """What every system offers a scenario."""

    name = "?"

    def __init__(self, base: Path, ready_socket: Path) -> None:
        self.base = base
        self.ready_socket = ready_socket
        base.mkdir(parents=True, exist_ok=True)

    def prepare(self, comps: list[Comp], *, probes: bool = False) -> None:
        """Set up the system for ``comps`` without starting any of them."""
        raise NotImplementedError

    def boot(self) -> None:
        """Start every component (returns at once; readiness comes on the socket)."""
        raise NotImplementedError

    def halt(self) -> None:
        """Stop every component and the supervisor process, keeping what `prepare` made."""
        raise NotImplementedError

    def supervisor_pids(self) -> list[int]:
        raise NotImplementedError

    def unit_name(self, comp: str) -> str:
        """The systemd unit that runs ``comp`` ("" where there is none)."""
        return ""

    def timeline_sources(self) -> tuple[int, Path | None] | None:
        """For `bench.timeline`: the user manager's pid and razard's event log (None:
        this system writes down nothing the timeline can place)."""
        return None

    def unit_times(self, comp: str) -> dict[str, float]:
        """The unit's last transition times (CLOCK_MONOTONIC seconds) as its manager
        keeps them, read after a trial: {} where there is no unit."""
        return {}

    def close(self) -> None:
        """Stop everything `prepare` and `boot` started."""
        self.halt()

    def log_tail(self) -> str:
        return ""


#: Unit properties the recovery timeline reads after each trial (microseconds, monotonic).
UNIT_TIMES = (
    "ActiveExitTimestampMonotonic",
    "InactiveExitTimestampMonotonic",
    "ExecMainStartTimestampMonotonic",
    "ActiveEnterTimestampMonotonic",
)


def _unit_times(um: UserManager | None, unit: str) -> dict[str, float]:
    if um is None:
        return {}
    cp = um.systemctl("show", "-p", ",".join(UNIT_TIMES), unit, check=False)
    out: dict[str, float] = {}
    for line in cp.stdout.splitlines():
        key, _, value = line.partition("=")
        if value.isdigit() and int(value):
            out[key] = int(value) / 1e6
    return out


class Razard(System):
    name = "razard"
    #: the nice value razard runs at (0: as the harness)
    nice = 0
    #: each component's start_timeout without a probe: its up-time before it counts healthy
    start_timeout = START_TIMEOUT

    def __init__(self, base: Path, ready_socket: Path) -> None:
        super().__init__(base, ready_socket)
        self.um: UserManager | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.config = base / "razard.toml"
        self.state_dir = base / "state"
        self.stderr_path = base / "razard.stderr"

    def prepare(self, comps: list[Comp], *, probes: bool = False) -> None:
        self.um = start_user_manager(self.base / "um")
        self.metrics_port = free_port()
        parts = [
            textwrap.dedent(f"""\
            [razard]
            state_dir = "{self.state_dir}"
            bus = "user"
            metrics_port = {self.metrics_port}
            unit_dir = "{self.um.unit_dir}"
            """)
        ]
        for c in comps:
            argv = ", ".join(f'"{a}"' for a in component_argv(self.ready_socket, c))
            parts.append(
                textwrap.dedent(f"""
                [[component]]
                name = "{c.name}"
                layer = "crown"
                priority = {c.wave * 10}
                command = [{argv}]
                start_timeout = {PROBED_START_TIMEOUT if probes and c.port else self.start_timeout}
                [component.restart]
                attempts = 10000
                backoff_base = 0.0
                backoff_cap = 0.0
                jitter = 0.0
                """)
            )
            if probes and c.port:
                parts.append(
                    textwrap.dedent(f"""\
                    [component.probe]
                    type = "tcp"
                    port = {c.port}
                    interval = {PROBE_INTERVAL}
                    timeout = 2.0
                    """)
                )
        self.config.write_text("".join(parts))

    def boot(self) -> None:
        assert self.um is not None
        shutil.rmtree(self.state_dir, ignore_errors=True)  # a fresh boot, nothing to resume
        env = self.um.env()
        self._stderr = self.stderr_path.open("ab")
        argv = [str(BIN / "razard"), "--config", str(self.config)]
        if os.environ.get("RZB_PROFILE"):
            # where razard's CPU goes (bench README): cProfile writes when razard exits
            prof = self.base / f"razard-{time.monotonic_ns()}.prof"
            argv = [sys.executable, "-m", "cProfile", "-o", str(prof), *argv]
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=self._stderr,
            start_new_session=True,
        )
        if self.nice:
            # before razard starts any thread (its interpreter is still starting): the
            # threads it makes inherit it, as under the unit's Nice=
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, self.nice)

    def halt(self) -> None:
        _terminate(self.proc)
        if self.proc is not None:
            self._stderr.close()
        self.proc = None
        if self.um is not None and self.um.running:
            # razard leaves its units running on SIGTERM (a new razard adopts them)
            self.um.systemctl("stop", "razar-*.service", check=False, timeout=120)
            self.um.systemctl("reset-failed", check=False)

    def supervisor_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def unit_name(self, comp: str) -> str:
        return f"razar-{comp}.service"

    def unit_times(self, comp: str) -> dict[str, float]:
        return _unit_times(self.um, self.unit_name(comp))

    def timeline_sources(self) -> tuple[int, Path | None] | None:
        return (self.um.pid, self.state_dir / LOG_FILE) if self.um else None

    def close(self) -> None:
        self.halt()
        if self.um is not None:
            self.um.stop()
            self.um = None

    def log_tail(self) -> str:
        if not self.stderr_path.exists():
            return ""
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-20:])


class RazardNice(Razard):
    """razard at ``Nice=-5`` (what the unit may set): for the load scenario."""

    name = "razard-nice"
    nice = -5


class RazardNoUptime(Razard):
    """razard whose components count healthy as soon as they run (start_timeout 1 ms): no
    up-time, as systemd's ``Type=exec`` ordering and supervisord's ``startsecs=0`` have
    none. For the boot scenario: what razard's own up-time rule costs there."""

    name = "razard-no-uptime"
    start_timeout = 0.001


class SystemdNative(System):
    name = "systemd"

    def __init__(self, base: Path, ready_socket: Path) -> None:
        super().__init__(base, ready_socket)
        self.um: UserManager | None = None

    def prepare(self, comps: list[Comp], *, probes: bool = False) -> None:
        um = self.um = start_user_manager(self.base / "um")
        waves = sorted({c.wave for c in comps})
        for c in comps:
            after = f"After=bench-w{c.wave - 1}.target\n" if c.wave - 1 in waves else ""
            text = (
                "[Unit]\n"
                "StartLimitIntervalSec=0\n"
                "PartOf=bench.target\n"
                f"Before=bench-w{c.wave}.target\n{after}"
                "[Service]\nType=exec\n"
                "ExecStart=" + " ".join(component_argv(self.ready_socket, c)) + "\n"
                "Restart=always\nRestartSec=0\n"
            )
            (um.unit_dir / f"bench-{c.name}.service").write_text(text)
        for w in waves:
            # no default dependencies: they would order bench.target and the waves in a cycle
            (um.unit_dir / f"bench-w{w}.target").write_text(
                "[Unit]\nDefaultDependencies=no\nPartOf=bench.target\n"
            )
        wants = " ".join(
            [f"bench-{c.name}.service" for c in comps] + [f"bench-w{w}.target" for w in waves]
        )
        (um.unit_dir / "bench.target").write_text(
            f"[Unit]\nDefaultDependencies=no\nWants={wants}\n"
        )
        um.systemctl("daemon-reload")

    def boot(self) -> None:
        assert self.um is not None
        self.um.systemctl("start", "--no-block", "bench.target")

    def halt(self) -> None:
        if self.um is not None and self.um.running:
            self.um.systemctl("stop", "bench.target", check=False, timeout=120)
            self.um.systemctl("reset-failed", check=False)

    def supervisor_pids(self) -> list[int]:
        return [self.um.pid] if self.um else []

    def unit_name(self, comp: str) -> str:
        return f"bench-{comp}.service"

    def unit_times(self, comp: str) -> dict[str, float]:
        return _unit_times(self.um, self.unit_name(comp))

    def timeline_sources(self) -> tuple[int, Path | None] | None:
        return (self.um.pid, None) if self.um else None

    def close(self) -> None:
        # units first: Restart=always units still coming back while the manager is torn
        # down make it read cgroups that are gone by the time it lists them
        self.halt()
        if self.um is not None:
            self.um.stop()
            self.um = None


class Supervisord(System):
    name = "supervisord"

    def __init__(self, base: Path, ready_socket: Path) -> None:
        super().__init__(base, ready_socket)
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf = base / "supervisord.conf"

    def prepare(self, comps: list[Comp], *, probes: bool = False) -> None:
        b = self.base
        parts = [
            textwrap.dedent(f"""\
            [supervisord]
            nodaemon=true
            logfile={b / "supervisord.log"}
            pidfile={b / "supervisord.pid"}
            childlogdir={b}
            minfds={max(1024, 8 * len(comps) + 64)}
            minprocs={max(200, 2 * len(comps) + 64)}

            [unix_http_server]
            file={b / "supervisor.sock"}

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            """)
        ]
        for c in comps:
            parts.append(
                textwrap.dedent(f"""
                [program:{c.name}]
                command={" ".join(component_argv(self.ready_socket, c))}
                autorestart=true
                startsecs=0
                priority={(c.wave + 1) * 10}
                stdout_logfile=NONE
                stderr_logfile=NONE
                """)
            )
        self.conf.write_text("".join(parts))

    def boot(self) -> None:
        self._out = (self.base / "supervisord.stderr").open("ab")
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-n", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._out,
            start_new_session=True,
        )

    def halt(self) -> None:
        _terminate(self.proc, timeout=60)
        if self.proc is not None:
            self._out.close()
        self.proc = None

    def supervisor_pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def log_tail(self) -> str:
        p = self.base / "supervisord.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-20:]) if p.exists() else ""


SYSTEMS: dict[str, type[System]] = {
    "razard": Razard,
    "razard-nice": RazardNice,
    "razard-no-uptime": RazardNoUptime,
    "systemd": SystemdNative,
    "supervisord": Supervisord,
}


#: Component name prefixes per system: names are unique across the systems of a run.
PREFIX = {
    "razard": "ra",
    "razard-nice": "rn",
    "razard-no-uptime": "ru",
    "systemd": "sy",
    "supervisord": "su",
}


def kill_leftovers(pids: set[int]) -> int:
    """SIGKILL any component process still alive among ``pids``; returns how many."""
    n = 0
    for pid in list(pids):  # the listener thread may add to it meanwhile
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if str(COMPONENT).encode() in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                n += 1
    return n

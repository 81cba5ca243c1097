"""A private, throwaway systemd user manager (and journald) for the tests, the bench and the demo.

razard itself never uses this module: it supervises units of the node's own
manager (``bus = "system"``, or an operator's ``--user`` manager). The tests,
``bench/`` and ``razard demo`` start one of these so they can run real units
without touching the host's services.

``start_user_manager()`` runs ``/usr/lib/systemd/systemd --user`` with its own
``XDG_RUNTIME_DIR`` and ``XDG_CONFIG_HOME`` in a new session, waits until it
answers, and returns a `UserManager`: where its unit files go, its D-Bus
address, an environment that points tools at it, and ``stop()``, which leaves
no process of it or of its units behind::

    with start_user_manager() as um:
        write_unit(um, "hello.service", "[Service]\\nExecStart=/bin/sleep 60\\n")
        um.systemctl("start", "hello.service")

Where the cgroup file systems are writable (root), each manager gets its own
top-level cgroup (``razar-sandbox-<pid>-<hex>``) in the ``name=systemd`` and
cgroup2 hierarchies. Without that, a user manager started from a process in
``init.scope`` treats the cgroup root as its own and puts units in
``/app.slice/<unit>``, so two managers running a unit of the same name would
share (and kill) one cgroup. The cgroup name also lets `reap_stale_managers`
(run by every `start_user_manager`) clean up after a creator that was SIGKILLed.

Never start ``systemd --system`` here: its tmpfiles step empties the shared ``/tmp``.

One module (~720 lines): starting a manager, waiting for it and tearing it down without
leftovers share the cgroup and process helpers at the bottom, and it is test, bench and
demo tooling the daemon never imports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import psutil  # type: ignore[import-untyped]

from razard import storage
from razard.errors import RazarError

SYSTEMD: Final = Path("/usr/lib/systemd/systemd")
JOURNALD: Final = Path("/lib/systemd/systemd-journald")
JOURNAL_SOCKET: Final = Path("/run/systemd/journal/socket")
RUN_SYSTEMD_SYSTEM: Final = Path("/run/systemd/system")

#: Variables that tie a process to some other bus or service manager. Dropped from
#: `UserManager.env` so nothing started from it talks to the outer world by mistake.
FOREIGN_ENV: Final = (
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_STARTER_ADDRESS",
    "DBUS_STARTER_BUS_TYPE",
    "NOTIFY_SOCKET",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "MANAGERPID",
    "INVOCATION_ID",
    "SYSTEMD_EXEC_PID",
    "JOURNAL_STREAM",
)

# AF_UNIX paths are at most 107 bytes; the manager binds sockets such as
# ``systemd/private`` and ``gnupg/S.gpg-agent.browser`` under its runtime dir.
_MAX_RUNTIME_DIR_LEN: Final = 76
_UNIT_NAME_RE: Final = re.compile(
    r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|mount|automount|timer|path|slice|scope)$"
)
_LOG_TAIL_LINES: Final = 30
_CGROUP_NAME_RE: Final = re.compile(r"^razar-sandbox-(\d+)-[0-9a-f]+$")

_live: set[UserManager] = set()
#: In a manager's environment: left running on purpose (`razard demo --keep`), so
#: `reap_stale_managers` leaves it alone once the process that started it is gone.
KEEP_ENV: Final = "RAZAR_SANDBOX_KEEP"


class UserManagerError(RazarError):
    """A private user manager or journald could not be started, driven or stopped."""


@dataclass(eq=False)
class UserManager:
    """A running private ``systemd --user`` and everything needed to talk to it."""

    base: Path
    runtime_dir: Path
    config_home: Path
    unit_dir: Path
    pid: int
    log_path: Path
    cgroups: tuple[Path, ...] = ()
    remove_base: bool = False
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def bus_address(self) -> str:
        """The D-Bus address of this manager's user bus (its ``dbus.socket``)."""
        return f"unix:path={self.runtime_dir / 'bus'}"

    @property
    def running(self) -> bool:
        """True until `stop` has been called and while the manager process lives."""
        return not self._stopped and _alive(self.pid, self._process)

    def env(self) -> dict[str, str]:
        """A copy of ``os.environ`` pointed at this manager and no other bus or manager."""
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        return env

    def systemctl(
        self, *args: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run ``systemctl --user ARGS`` against this manager; raise `UserManagerError` on
        failure when ``check`` (the message carries the exit status and stderr)."""
        argv = ["systemctl", "--user", "--no-pager", *args]
        try:
            cp = subprocess.run(
                argv,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise UserManagerError(
                f"`{' '.join(argv)}` did not finish within {timeout:g}s"
            ) from None
        except OSError as e:
            raise UserManagerError(f"cannot run systemctl: {e}") from None
        if check and cp.returncode != 0:
            msg = (cp.stderr or cp.stdout).strip()
            raise UserManagerError(
                f"`{' '.join(argv)}` failed with exit status {cp.returncode}: {msg}"
            )
        return cp

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every unit and the manager, and kill whatever of it is left.

        First ``systemctl --user exit`` (SIGTERM if that fails) and up to ``timeout``
        seconds for the manager to stop its units and exit; then SIGKILL for the
        manager's process group, and for every process that belonged to it: its
        descendants seen before stopping, the members of its cgroup, and processes
        carrying its ``MANAGERPID``/``XDG_RUNTIME_DIR``. Removes its cgroups, and
        ``base`` when it was a directory made by `start_user_manager`. Calling it
        again does nothing. Raises `UserManagerError` if a process survives SIGKILL.
        """
        if self._stopped:
            return
        self._stopped = True
        _live.discard(self)
        try:
            members = self._members()
            if _alive(self.pid, self._process):
                self._ask_to_exit(timeout)
            if _alive(self.pid, self._process):
                _killpg(self.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                _wait_gone([(self.pid, None)], 5.0, self._process)
            members.update(self._members())
            members.pop(self.pid, None)
            survivors = _kill_all(members)
        finally:
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=5.0)
            _remove_cgroups(self.cgroups)
            if self.remove_base:
                shutil.rmtree(self.base, ignore_errors=True)
        if survivors:
            raise UserManagerError(
                f"processes of the user manager in {self.base} survived SIGKILL: "
                + ", ".join(str(p) for p in sorted(survivors))
            )

    def detach(self) -> None:
        """Leave the manager running when this process exits (it is not stopped at exit).

        Only a manager started with ``keep=True`` also survives `reap_stale_managers`;
        stop it with ``kill <pid>`` (its units go with it) or `stop`.
        """
        _live.discard(self)

    def __enter__(self) -> UserManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals

    def _ask_to_exit(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            cp = self.systemctl("exit", check=False, timeout=min(5.0, timeout))
            asked = cp.returncode == 0
        except UserManagerError:
            asked = False
        if not asked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        _wait_gone([(self.pid, None)], max(0.0, deadline - time.monotonic()), self._process)

    def _members(self) -> dict[int, float]:
        """Processes that belong to this manager now: pid -> create time."""
        found: dict[int, float] = {}
        me = os.getpid()
        try:
            mgr = psutil.Process(self.pid)
            found[mgr.pid] = mgr.create_time()
            for child in mgr.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    found[child.pid] = child.create_time()
        except psutil.Error:
            pass
        for pid in _cgroup_pids(self.cgroups):
            with contextlib.suppress(psutil.Error):
                found.setdefault(pid, psutil.Process(pid).create_time())
        manager_pid, runtime = str(self.pid), str(self.runtime_dir)
        for p in psutil.process_iter():
            if p.pid in found or p.pid == me:
                continue
            try:
                env = p.environ()
                if env.get("MANAGERPID") == manager_pid and env.get("XDG_RUNTIME_DIR") == runtime:
                    found[p.pid] = p.create_time()
            except psutil.Error:
                continue
        found.pop(me, None)
        return found


def start_user_manager(
    base: Path | None = None, timeout: float = 15.0, *, keep: bool = False
) -> UserManager:
    """Start a private ``systemd --user`` under ``base`` and wait until it answers.

    ``base`` None makes a new ``razar-sandbox-*`` temporary directory, removed again
    by `UserManager.stop`. Layout: ``base/run`` (``XDG_RUNTIME_DIR``, mode 700, holds
    the ``bus`` socket), ``base/config/systemd/user`` (unit files), ``base/data``,
    ``base/state``, ``base/cache`` and ``base/manager.log``. Raises `UserManagerError`,
    with the tail of the manager's log, if it does not reach ``running`` or
    ``degraded`` within ``timeout`` seconds; nothing of it is left running then.
    ``keep`` marks it as meant to outlive this process (see `UserManager.detach`).
    """
    if not SYSTEMD.exists():
        raise UserManagerError(f"{SYSTEMD} is missing: systemd is not installed")
    try:
        RUN_SYSTEMD_SYSTEM.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserManagerError(
            f"cannot create {RUN_SYSTEMD_SYSTEM} (systemd --user checks for it): {e.strerror}"
        ) from None
    with contextlib.suppress(Exception):
        reap_stale_managers()
    owned = base is None
    root = Path(tempfile.mkdtemp(prefix="razar-sandbox-")) if base is None else base.absolute()
    runtime_dir = root / "run"
    config_home = root / "config"
    unit_dir = config_home / "systemd" / "user"
    log_path = root / "manager.log"
    if len(str(runtime_dir)) > _MAX_RUNTIME_DIR_LEN:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
        raise UserManagerError(
            f"{runtime_dir} is too long for the manager's AF_UNIX sockets "
            f"(at most {_MAX_RUNTIME_DIR_LEN} characters): use a shorter base directory"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        runtime_dir.mkdir(mode=0o700, exist_ok=True)
        runtime_dir.chmod(0o700)
        unit_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "state", "cache"):
            (root / sub).mkdir(exist_ok=True)
    except OSError as e:
        if owned:
            shutil.rmtree(root, ignore_errors=True)
        raise UserManagerError(f"cannot prepare {root}: {e}") from None

    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(
        XDG_RUNTIME_DIR=str(runtime_dir),
        XDG_CONFIG_HOME=str(config_home),
        XDG_DATA_HOME=str(root / "data"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_CACHE_HOME=str(root / "cache"),
        DBUS_SESSION_BUS_ADDRESS=f"unix:path={runtime_dir / 'bus'}",
    )
    if keep:
        env[KEEP_ENV] = "1"
    proc, cgroups = _spawn_manager(env, log_path)
    um = UserManager(
        base=root,
        runtime_dir=runtime_dir,
        config_home=config_home,
        unit_dir=unit_dir,
        pid=proc.pid,
        log_path=log_path,
        cgroups=cgroups,
        remove_base=owned,
        _process=proc,
    )
    _live.add(um)
    try:
        reason = _wait_ready(um, proc, timeout)
    except BaseException:
        um.stop(timeout=2.0)
        raise
    if reason is not None:
        tail = _log_tail(log_path, proc.pid)
        with contextlib.suppress(UserManagerError):
            um.stop(timeout=2.0)
        raise UserManagerError(
            f"systemd --user in {root} did not come up: {reason}\n"
            f"--- manager log (last lines) ---\n{tail or '(empty)'}"
        )
    return um


def write_unit(um: UserManager, name: str, text: str, *, reload: bool = True) -> Path:
    """Write unit file ``name`` into ``um.unit_dir`` (atomically) and, unless
    ``reload`` is False, ``daemon-reload`` the manager. Returns the file's path."""
    if not _UNIT_NAME_RE.match(name):
        raise UserManagerError(f"{name!r} is not a unit file name like app.service")
    path = um.unit_dir / name
    data = (text if text.endswith("\n") else text + "\n").encode("utf-8")
    storage.write_atomic(path, data, mode=0o644)
    if reload:
        daemon_reload(um)
    return path


def daemon_reload(um: UserManager) -> None:
    """``systemctl --user daemon-reload`` on ``um``: re-read its unit files."""
    um.systemctl("daemon-reload")


def journald_running() -> bool:
    """True when something accepts datagrams on the native journal socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect(str(JOURNAL_SOCKET))
    except OSError:
        return False
    finally:
        s.close()
    return True


def ensure_journald(timeout: float = 10.0) -> subprocess.Popen[bytes] | None:
    """Start ``systemd-journald`` in the background unless one already listens.

    Returns the started process (pass it to `stop_journald` later), or None when
    a journald was already running. Raises `UserManagerError` if the journal socket
    does not answer within ``timeout`` seconds.
    """
    if journald_running():
        return None
    if not JOURNALD.exists():
        raise UserManagerError(f"{JOURNALD} is missing: cannot provide a journal")
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    try:
        proc = subprocess.Popen(
            [str(JOURNALD)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise UserManagerError(f"cannot start {JOURNALD}: {e}") from None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journald_running():
            return proc
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
            raise UserManagerError(
                f"{JOURNALD} exited with status {proc.returncode} before its socket "
                f"answered: {err[-2000:] or '(no output)'}"
            )
        time.sleep(0.05)
    stop_journald(proc)
    raise UserManagerError(
        f"{JOURNAL_SOCKET} did not answer within {timeout:g}s of starting journald"
    )


def stop_journald(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Stop a journald started by `ensure_journald` (None: nothing to do)."""
    if proc is None or proc.poll() is not None:
        if proc is not None and proc.stderr:
            proc.stderr.close()
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    if proc.stderr:
        proc.stderr.close()


def reap_stale_managers() -> list[int]:
    """Kill what is left of user managers whose creating process is gone; return the pids.

    A manager's cgroup is named after the process that started it
    (``razar-sandbox-<pid>-<hex>``). When that process died without `UserManager.stop`
    (SIGKILL, a killed test run), its manager and units live on; this kills every
    process in such cgroups and removes them, with the temporary base directory of
    such a manager when `start_user_manager` made it. `start_user_manager` calls it.
    """
    killed: list[int] = []
    stale: list[Path] = []
    for hierarchy in _cgroup_hierarchies():
        with contextlib.suppress(OSError):
            for cg in hierarchy.iterdir():
                m = _CGROUP_NAME_RE.match(cg.name)
                if m and cg.is_dir() and not psutil.pid_exists(int(m.group(1))):
                    if not _kept(cg):
                        stale.append(cg)
    if not stale:
        return killed
    members: dict[int, float] = {}
    temp_bases: set[Path] = set()
    for pid in _cgroup_pids(stale):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            members[pid] = proc.create_time()
            base = Path(proc.environ().get("XDG_RUNTIME_DIR", "/")).parent
            if base.parent == Path(tempfile.gettempdir()) and base.name.startswith(
                "razar-sandbox-"
            ):
                temp_bases.add(base)  # made by start_user_manager(base=None)
    _kill_all(members)
    killed.extend(sorted(members))
    _remove_cgroups(stale, timeout=1.0)
    for base in temp_bases:
        shutil.rmtree(base, ignore_errors=True)
    return killed


# --------------------------------------------------------------------------- internals


def _spawn_manager(
    env: dict[str, str], log_path: Path
) -> tuple[subprocess.Popen[bytes], tuple[Path, ...]]:
    """Start the manager, first moved into a fresh cgroup where that is possible.

    A shell waits on stdin, is moved into the cgroups, and only then execs systemd,
    so the manager never sees the cgroup it was started from. If this process dies
    before releasing it, the shell reads EOF and exits without starting anything.
    """
    cgroups = _make_cgroups()
    proc = _spawn_waiting_shell(env, log_path, cgroups)
    try:
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(f"{proc.pid}\n")
    except OSError as e:
        proc.kill()
        proc.wait()
        _remove_cgroups(cgroups)
        cgroups = ()
        with log_path.open("a") as log:
            log.write(
                f"razar sandbox: cannot move the manager into its own cgroup ({e}); "
                "running it in the inherited one\n"
            )
        proc = _spawn_waiting_shell(env, log_path, cgroups)
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"go\n")
        proc.stdin.close()
    except OSError:
        pass  # the shell died already; _wait_ready reports its exit status
    return proc, cgroups


def _spawn_waiting_shell(
    env: dict[str, str], log_path: Path, cgroups: tuple[Path, ...]
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        try:
            return subprocess.Popen(
                [
                    "/bin/sh",
                    "-c",
                    'read -r _ || exit 97; exec "$0" --user </dev/null',
                    str(SYSTEMD),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as e:
            _remove_cgroups(cgroups)
            raise UserManagerError(f"cannot start {SYSTEMD} --user: {e}") from None


def _kept(cgroup: Path) -> bool:
    """True when a manager in ``cgroup`` was started with ``keep=True``."""
    for pid in _cgroup_pids([cgroup]):
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).environ().get(KEEP_ENV) == "1":
                return True
    return False


def _cgroup_hierarchies() -> list[Path]:
    """Mount points of the hierarchies systemd tracks units in: ``name=systemd``
    (legacy and hybrid modes) and cgroup2."""
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        pre, sep, post = line.partition(" - ")
        if not sep:
            continue
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        mountpoint, fstype, superopts = fields[4], post_fields[0], post_fields[2]
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in superopts.split(",")):
            found.append(Path(mountpoint.replace("\\040", " ")))
    return found


def _make_cgroups() -> tuple[Path, ...]:
    """A fresh, empty cgroup in every hierarchy systemd uses; () if that is not possible."""
    if os.geteuid() != 0:
        return ()
    name = f"razar-sandbox-{os.getpid()}-{secrets.token_hex(4)}"
    made: list[Path] = []
    for hierarchy in _cgroup_hierarchies():
        try:
            (hierarchy / name).mkdir()
        except OSError:
            _remove_cgroups(made)
            return ()
        made.append(hierarchy / name)
    return tuple(made)


def _cgroup_pids(cgroups: Iterable[Path]) -> set[int]:
    pids: set[int] = set()
    for cg in cgroups:
        if not cg.is_dir():
            continue
        for procs in cg.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split() if int(x) > 0)
    return pids


def _remove_cgroups(cgroups: Iterable[Path], timeout: float = 3.0) -> None:
    """rmdir each cgroup tree, deepest first, retrying while exiting tasks leave it."""
    deadline = time.monotonic() + timeout
    for cg in cgroups:
        while cg.is_dir():
            dirs = sorted((d for d in cg.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts))
            for d in [*dirs, cg]:
                with contextlib.suppress(OSError):
                    d.rmdir()
            if not cg.is_dir() or time.monotonic() > deadline:
                break
            time.sleep(0.05)


def _wait_ready(um: UserManager, proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once the manager answers ``running``/``degraded``; else why not."""
    deadline = time.monotonic() + timeout
    state = "no answer"
    while True:
        rc = proc.poll()
        if rc is not None:
            return f"the manager exited with status {rc}"
        if (um.runtime_dir / "bus").exists():
            try:
                cp = um.systemctl("is-system-running", check=False, timeout=2.0)
                state = cp.stdout.strip() or cp.stderr.strip() or state
                if state in ("running", "degraded"):
                    return None
            except UserManagerError as e:
                state = str(e)
        left = deadline - time.monotonic()
        if left <= 0:
            return f"not running within {timeout:g}s (last state: {state})"
        time.sleep(min(0.05, left))


def _log_tail(log_path: Path, pid: int) -> str:
    """The last lines of the manager's own log file and of its journal entries."""
    parts: list[str] = []
    with contextlib.suppress(OSError):
        lines = log_path.read_text(errors="replace").splitlines()
        if lines:
            parts.append("\n".join(lines[-_LOG_TAIL_LINES:]))
    if journald_running():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cp = subprocess.run(
                [
                    "journalctl",
                    "--no-pager",
                    "-q",
                    "-o",
                    "short-monotonic",
                    "-n",
                    str(_LOG_TAIL_LINES),
                    f"_PID={pid}",
                ],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if cp.stdout.strip():
                parts.append(cp.stdout.strip())
    return "\n".join(parts)


def _alive(pid: int, proc: subprocess.Popen[bytes] | None = None) -> bool:
    """Whether ``pid`` still runs (a zombie does not)."""
    if proc is not None and proc.pid == pid:
        return proc.poll() is None
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _same_process_alive(pid: int, created: float | None) -> bool:
    try:
        p = psutil.Process(pid)
        if created is not None and abs(p.create_time() - created) > 0.01:
            return False  # the pid was reused
        return bool(p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(
    procs: Iterable[tuple[int, float | None]],
    timeout: float,
    popen: subprocess.Popen[bytes] | None = None,
) -> list[int]:
    """Wait until every (pid, create time) is gone; return the pids still alive."""
    deadline = time.monotonic() + timeout
    left = list(procs)
    while True:
        left = [
            (pid, ct)
            for pid, ct in left
            if (
                _alive(pid, popen)
                if popen is not None and popen.pid == pid
                else _same_process_alive(pid, ct)
            )
        ]
        if not left or time.monotonic() >= deadline:
            return [pid for pid, _ in left]
        time.sleep(0.02)


def _kill_all(members: dict[int, float]) -> list[int]:
    """SIGKILL each (pid, create time) still alive, and its process group where it
    leads one; return those that survive 5 s."""
    me = os.getpid()
    alive = [(pid, ct) for pid, ct in members.items() if pid != me and _same_process_alive(pid, ct)]
    for pid, _ in alive:
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid and pid != os.getpgid(me):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return _wait_gone(alive, 5.0)


def _killpg(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (the manager's session), never our own."""
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid and pid != os.getpgid(os.getpid()):
            os.killpg(pid, signal.SIGKILL)


@atexit.register
def _stop_leftovers() -> None:
    """Stop managers still running when the interpreter exits (a demo hit by Ctrl-C)."""
    for um in list(_live):
        with contextlib.suppress(Exception):
            um.stop(timeout=5.0)

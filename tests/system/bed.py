"""A real node for tests: Debian bookworm booted by ``systemd-nspawn -b``, systemd as PID 1.

A private user manager is not production: the system bus has a policy, PID 1
behaves differently and real nodes have other users. The tests in this
package therefore boot a minimal Debian 12 in a container and install razar
into it the way an operator does.

- `rootfs()` builds the root file system once with ``debootstrap`` and caches it
  under ``/var/tmp/razar-testbed`` (keyed by suite and package list; rebuilt when
  missing). Building takes about a minute; later runs reuse it.
- `boot()` lays an overlay over that cache (the cache itself is never written),
  and boots it with ``systemd-nspawn -b --private-network --keep-unit
  --register=no`` in a cgroup of its own (this host's PID 1 is not systemd, so
  nspawn cannot ask it for a scope). `Node.run` executes commands inside with
  ``nsenter`` into every namespace of the container's PID 1, as root or as a
  user of the container.
- `wheels()` fetches the wheels razar needs (and the build backend) on the host,
  where the package registry is reachable; the container has no network, so
  ``pip`` inside installs from them with ``PIP_NO_INDEX``/``PIP_FIND_LINKS``.

`skip_reason()` says why a test bed cannot run here (not root, no nspawn or
debootstrap, no cgroup file system); tests skip with it. Never start
``systemd --system`` on the host: only inside the container.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

CACHE: Final = Path(os.environ.get("RAZAR_TESTBED_CACHE", "/var/tmp/razar-testbed"))
SUITE: Final = "bookworm"
MIRROR: Final = os.environ.get("RAZAR_TESTBED_MIRROR", "http://deb.debian.org/debian")
#: What the node has before razar: an ordinary minimal Debian server with the
#: prerequisites the README names for installing razar (python3-venv, dbus).
PACKAGES: Final = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "python3",
    "python3-venv",
    "iproute2",
    "procps",
)
REPO: Final = Path(__file__).resolve().parents[2]
PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: where the wheels appear inside the container
WHEELS_IN_NODE: Final = "/var/cache/razar-wheels"
_CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


class BedError(RuntimeError):
    """The test bed could not be built, booted or driven."""


def skip_reason() -> str | None:
    """Why no container can be booted here, or None when one can."""
    if os.geteuid() != 0:
        return "needs root: boots a container with systemd-nspawn"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install systemd-container debootstrap util-linux)"
    if not _hierarchies():
        return "no writable cgroup file system for the container"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay file system"
    return None


def _hierarchies() -> list[Path]:
    """The cgroup hierarchies systemd uses: cgroup2 (unified) and the v1 name=systemd one."""
    found = []
    for p in (_CGROUP_ROOT / "unified", _CGROUP_ROOT / "systemd"):
        if (p / "cgroup.procs").exists() and os.access(p, os.W_OK):
            found.append(p)
    if not found and (_CGROUP_ROOT / "cgroup.controllers").exists():
        found.append(_CGROUP_ROOT)  # pure cgroup v2
    return found


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rootfs(timeout: float = 900) -> Path:
    """The cached bookworm root file system, built with debootstrap when missing."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    target = CACHE / f"rootfs-{SUITE}-{key}"
    with _locked(CACHE / "rootfs.lock"):
        if (target / "etc" / "os-release").exists():
            return target
        tmp = CACHE / f".build-{os.getpid()}-{secrets.token_hex(3)}"
        argv = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(tmp),
            MIRROR,
        ]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if cp.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = "\n".join((cp.stdout + cp.stderr).splitlines()[-15:])
            raise BedError(f"debootstrap failed (exit {cp.returncode}):\n{tail}")
        # a node with a machine id of its own each boot, and no units that would wait
        # for hardware a container has not got
        (tmp / "etc" / "machine-id").write_text("")
        (tmp / "etc" / "hostname").write_text("razar-node\n")
        for unit in ("getty@tty1.service", "console-getty.service"):
            mask = tmp / "etc" / "systemd" / "system" / unit
            mask.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                mask.symlink_to("/dev/null")
        tmp.rename(target)
        return target


def wheels() -> Path:
    """A directory with every wheel ``pip install .`` of razar needs, build backend included.

    Downloaded on the host (the container has no network), cached by razar's
    dependency list.
    """
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = [*project["project"]["dependencies"], *project["build-system"]["requires"], "wheel"]
    key = hashlib.sha256(" ".join(reqs).encode()).hexdigest()[:12]
    target = CACHE / f"wheels-{key}"
    with _locked(CACHE / "wheels.lock"):
        if (target / ".complete").exists():
            return target
        target.mkdir(parents=True, exist_ok=True)
        # `pip wheel`, not `download`: a dependency published only as an sdist
        # (sdnotify) is built here, so the node needs no compiler and no index
        argv = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(target), *reqs]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
        if cp.returncode != 0:
            raise BedError(f"pip wheel failed: {cp.stderr.strip()[-2000:]}")
        (target / ".complete").write_text("")
        return target


def source_files() -> list[str]:
    """The checkout as a fresh clone plus uncommitted work has it (tracked and
    untracked, not ignored)."""
    cp = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    )
    return [p for p in cp.stdout.decode().split("\0") if p and (REPO / p).is_file()]


@dataclass
class Result:
    """What a command inside the node did."""

    argv: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Result:
        if self.returncode != 0:
            raise BedError(
                f"`{shlex.join(self.argv)}` exited {self.returncode}\n"
                f"stdout: {self.stdout[-3000:]}\nstderr: {self.stderr[-3000:]}"
            )
        return self


@dataclass
class Node:
    """A booted container; `run` executes inside it."""

    name: str
    root: Path  # the container's / as the host sees it (the overlay's merged dir)
    base: Path
    process: subprocess.Popen[bytes]
    cgroups: list[Path]
    log: Path
    _leader: int = field(default=0, repr=False)

    @property
    def leader(self) -> int:
        """The host pid of the container's PID 1 (systemd)."""
        if self._leader and Path(f"/proc/{self._leader}").exists():
            return self._leader
        for child in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                exe = Path(f"/proc/{pid}/exe")
                with contextlib.suppress(OSError):
                    if os.readlink(exe).endswith("/systemd"):
                        self._leader = int(pid)
                        return self._leader
        raise BedError(f"container {self.name} has no PID 1 (nspawn exited?): {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        user: str | None = None,
        check: bool = True,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> Result:
        """Run ``cmd`` (a shell line, or an argv) in the container, as root or ``user``.

        The command gets a clean environment (PATH, HOME, LANG and ``env``), as a
        login would, never the test's own.
        """
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        home = "/root" if user in (None, "root") else f"/home/{user}"
        clean = {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb"}
        if user not in (None, "root"):
            clean["USER"] = clean["LOGNAME"] = str(user)
        clean.update(env or {})
        inner = ["env", "-i", *(f"{k}={v}" for k, v in clean.items()), *argv]
        if user not in (None, "root"):
            inner = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *inner]
        full = ["nsenter", "-t", str(self.leader), "-a", "--", *inner]
        try:
            cp = subprocess.run(
                full,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={"PATH": PATH},
            )
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else ""
            raise BedError(f"`{shlex.join(argv)}` did not finish within {timeout}s: {out}") from e
        res = Result(argv, cp.returncode, cp.stdout, cp.stderr)
        return res.check() if check else res

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> Result:
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p`` of one unit as a dict."""
        out = self.systemctl("show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", "-q", *args]).stdout

    def wait_for(
        self, what: str, pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2
    ) -> Any:
        """Poll ``pred()`` until truthy (tests only: the product never polls)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = pred()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")

    def copy_in(self, src: Path, dest: str, files: Sequence[str] | None = None) -> None:
        """Copy ``src`` (a file, or a tree; ``files`` relative to it) to ``dest`` in the node."""
        target = self.root / dest.lstrip("/")
        if files is None:
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
            return
        for rel in files:
            t = target / rel
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, t)

    def copy_in_text(self, dest: str, text: str, mode: int = 0o644) -> None:
        """Write ``text`` to ``dest`` in the node, owned by root."""
        target = self.root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(mode)
        tmp.rename(target)

    def stop(self, timeout: float = 30) -> None:
        """Power the container off (SIGKILL after ``timeout``) and remove its traces."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                # nspawn turns SIGTERM into an orderly poweroff of the container
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_cgroups(self.cgroups)
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(timeout=10)
        _kill_cgroups(self.cgroups)
        _remove_cgroups(self.cgroups)
        for _ in range(20):
            cp = subprocess.run(["umount", str(self.root)], capture_output=True, check=False)
            if cp.returncode != 0 and not os.path.ismount(self.root):
                break
            if cp.returncode == 0:
                break
            time.sleep(0.25)
        shutil.rmtree(self.base, ignore_errors=True)


def _kill_cgroups(cgroups: Sequence[Path]) -> None:
    for cg in cgroups:
        for procs in cg.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups(cgroups: Sequence[Path], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for cg in cgroups:
        while cg.is_dir() and time.monotonic() < deadline:
            for d in sorted((d for d in cg.rglob("*") if d.is_dir()), key=lambda d: -len(d.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                cg.rmdir()
            if cg.is_dir():
                time.sleep(0.1)


def reap_stale() -> None:
    """Power off what a killed test run left: containers whose creator is gone."""
    for hierarchy in _hierarchies():
        for cg in hierarchy.glob("razar-testbed-*"):
            try:
                creator = int(cg.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if Path(f"/proc/{creator}").exists():
                continue
            _kill_cgroups([cg])
            _remove_cgroups([cg])
    nodes = CACHE / "nodes"
    for base in nodes.glob("*") if nodes.is_dir() else ():
        try:
            creator = int(base.name.split("-")[0])
        except ValueError:
            continue
        if Path(f"/proc/{creator}").exists():
            continue
        merged = base / "merged"
        if os.path.ismount(merged):
            subprocess.run(["umount", "-l", str(merged)], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def boot(name: str = "razar-node", timeout: float = 60) -> Node:
    """Boot a fresh node over the cached rootfs; returns once systemd says it is up."""
    lower = rootfs()
    reap_stale()
    tag = f"{os.getpid()}-{secrets.token_hex(3)}"
    base = CACHE / "nodes" / tag
    upper, work, merged = base / "upper", base / "work", base / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ],
        check=True,
        capture_output=True,
    )
    cgroups = []
    for hierarchy in _hierarchies():
        cg = hierarchy / f"razar-testbed-{tag}"
        cg.mkdir()
        cgroups.append(cg)
    log = base / "console.log"

    def enter_cgroup() -> None:
        for cg in cgroups:
            (cg / "cgroup.procs").write_text(str(os.getpid()))

    argv = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={merged}",
        f"--machine={name}",
        "--keep-unit",
        "--register=no",
        "--private-network",
        "--console=passive",
        f"--bind-ro={wheels()}:{WHEELS_IN_NODE}",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=enter_cgroup,  # in the child, before exec: its own cgroup
            start_new_session=True,
            env={"PATH": PATH, "SYSTEMD_NSPAWN_LOCK": "0"},
        )
    node = Node(name, merged, base, proc, cgroups, log)
    deadline = time.monotonic() + timeout
    state = ""
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BedError(f"systemd-nspawn exited {proc.returncode}: {node.log_tail()}")
            with contextlib.suppress(BedError):
                state = node.run(
                    ["systemctl", "is-system-running"], check=False, timeout=10
                ).stdout.strip()
                if state in ("running", "degraded"):
                    return node
            time.sleep(0.2)
        raise BedError(
            f"the node did not boot within {timeout}s (state {state!r}): {node.log_tail()}"
        )
    except BaseException:
        node.stop()
        raise

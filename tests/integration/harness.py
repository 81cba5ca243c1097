"""Run a real razard against the test's private systemd user manager, drive it with razarctl.

Polls (`Razard.status`, `component`, `wait_state`, the readiness wait) ask razard's
``Status`` method on the manager's bus from this process: the same D-Bus call and
the same JSON shape as ``razarctl status --json``, without starting a Python
interpreter per poll. What an operator types goes through the real binary
(`Razard.ctl`); `Razard.status_via_ctl` is the status as razarctl prints it, and
tests compare the two.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from razard.control import ControlClient, SupervisorControl
from razard.ctl.components import status_json
from razard.errors import ControlError
from razard.usermanager import UserManager
from tests import canary

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _call_status(address: str, deadline_s: float) -> tuple[bool, str]:
    """(True, razard's status reply as JSON) or (False, why not) from one ``Status`` call
    through razarctl's own client."""
    try:
        client = await ControlClient.connect(address=address, deadline_s=deadline_s)
        async with client:
            return True, json.dumps(await client.call(SupervisorControl.status))
    except ControlError as e:
        return False, str(e)


def bus_status(address: str, timeout: float = 30.0) -> tuple[bool, str]:
    """`_call_status` from synchronous code, also where an event loop runs already."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_call_status(address, timeout))
    with ThreadPoolExecutor(1) as pool:  # an async test: a loop of our own, in a thread
        return pool.submit(asyncio.run, _call_status(address, timeout)).result()


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``pred`` until it returns something truthy (tests only; razard itself never polls)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


class Razard:
    """One razard process with its own config, state dir and components."""

    def __init__(self, um: UserManager, base: Path, components: str) -> None:
        self.um = um
        self.base = base
        self.state_dir = base / "state"
        self.metrics_port = free_port()
        self.config = base / "razard.toml"
        self.write_config(components)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = base / "razard.stderr"
        #: set or override variables in the environment of razard and razarctl
        self.extra_env: dict[str, str] = {}
        #: a command razard is started under (it must exec razard: the pid stays razard's)
        self.prefix: list[str] = []

    def write_config(self, components: str) -> None:
        self.config.write_text(
            textwrap.dedent(f"""\
            [razard]
            state_dir = "{self.state_dir}"
            bus = "user"
            metrics_port = {self.metrics_port}
            unit_dir = "{self.um.unit_dir}"
            """)
            + textwrap.dedent(components)
        )

    def env(self) -> dict[str, str]:
        env = self.um.env()
        env.pop("NOTIFY_SOCKET", None)
        env.pop("JOURNAL_STREAM", None)
        env.update(canary.TOKENS)  # secrets razard holds: none may show up anywhere
        env.update(self.extra_env)
        return env

    def start(self, *extra: str, wait_ready: bool = True) -> None:
        self.stderr = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(BIN / "razard"), "--config", str(self.config), *extra],
            env=self.env(),
            stdout=self.stderr,
            stderr=self.stderr,
            start_new_session=True,
        )
        if wait_ready:
            wait_for(lambda: self._ready_or_dead(), 60, "razard to be ready")
        else:  # at least on the bus, so razarctl answers
            wait_for(lambda: self._ready_or_dead(need_ready=False), 60, "razard on the bus")

    def _ready_or_dead(self, need_ready: bool = True) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"razard exited {self.proc.returncode}:\n{self.stderr_text()}")
        st = self.status(check=False)
        return bool(st and (st.get("ready") or not need_ready))

    def metrics_text(self) -> str:
        import httpx

        page = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        canary.assert_no_token(page, "the metrics page")
        return page

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def ctl(
        self, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [str(BIN / "razarctl"), "--bus", "user", "--address", self.um.bus_address, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        canary.assert_no_token(p.stdout + p.stderr, f"razarctl {' '.join(args)}")
        if check and p.returncode != 0:
            raise AssertionError(f"razarctl {' '.join(args)} -> {p.returncode}\n{p.stderr}")
        return p

    def status(self, check: bool = True) -> dict[str, Any] | None:
        """What ``razarctl status --json`` prints, read from razard's ``Status`` method
        on the bus in this process; None (or AssertionError when ``check``) if razard
        does not answer."""
        ok, text = bus_status(self.um.bus_address)
        canary.assert_no_token(text, "razard's Status reply")
        if not ok:
            if check:
                raise AssertionError(f"razard's Status call failed: {text}")
            return None
        return status_json(json.loads(text))

    def status_via_ctl(self, check: bool = True) -> dict[str, Any] | None:
        """``razarctl status --json``, run as the operator runs it."""
        p = self.ctl("status", "--json", check=check)
        if p.returncode != 0:
            return None
        result: dict[str, Any] = json.loads(p.stdout)
        return result

    def component(self, name: str) -> dict[str, Any]:
        st = self.status()
        assert st is not None
        for c in st["components"]:
            if c["name"] == name:
                return dict(c)
        raise AssertionError(f"{name} not in status: {st}")

    def wait_state(self, name: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
        """``name``'s status row once it is in ``state`` (also waits for razard to list
        it, as after a reload)."""

        def row() -> dict[str, Any] | None:
            st = self.status()
            assert st is not None
            for c in st["components"]:
                if c["name"] == name and c["state"] == state:
                    return dict(c)
            return None

        return dict(wait_for(row, timeout, f"{name} to be {state}"))

    def events(self, component: str | None = None) -> list[dict[str, Any]]:
        path = self.state_dir / "razar.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if component is None or rec.get("component") == component:
                out.append(rec)
        return out

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        self.stderr.close()
        return code

    def main_pid(self, unit: str) -> int:
        p = self.um.systemctl("show", "-p", "MainPID", "--value", unit)
        return int(p.stdout.strip() or 0)

    def cleanup_units(self, units: list[str]) -> None:
        for u in units:
            self.um.systemctl("stop", u, check=False)
            self.um.systemctl("reset-failed", u, check=False)
            f = self.um.unit_dir / u
            if f.exists():
                f.unlink()
        self.um.systemctl("daemon-reload", check=False)


def script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    path.chmod(0o755)
    return path


def py() -> str:
    return sys.executable


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sleepers(names: list[str], *, waves: int = 1, restart: str = "") -> str:
    """Components that sleep (crown layer), spread over ``waves`` priorities; ``restart`` is
    the inline table's body, e.g. ``"attempts = 3, backoff_base = 0.1"``."""
    policy = f"restart = {{ {restart} }}" if restart else ""
    return "".join(
        f"""
        [[component]]
        name = "{n}"
        layer = "crown"
        priority = {i % waves}
        command = ["/bin/sleep", "100000"]
        {policy}
        """
        for i, n in enumerate(names)
    )


def crash_loop(directory: Path, name: str, message: str) -> str:
    """A heart-layer component that prints ``message`` on stderr and exits 4, every time:
    two restarts and it is quarantined."""
    s = script(
        directory / f"{name}.py",
        f"import sys\nprint({message!r}, file=sys.stderr)\nsys.exit(4)\n",
    )
    return f"""
        [[component]]
        name = "{name}"
        layer = "heart"
        priority = 10
        command = ["{py()}", "{s}"]
        restart = {{ attempts = 2, backoff_base = 0.05, backoff_cap = 0.2, jitter = 0.0 }}
        """

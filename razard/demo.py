"""The embedded demo: razard on a private systemd user manager, healing and quarantining.

Nothing of the host's own services is touched: a private ``systemd --user`` is
started under a temporary directory, razard runs there as a ``Type=notify``
service (so ``systemctl --user start razard`` returns once razard is READY),
and four example components boot in three waves:

- ``api`` (throat) and ``gpu-feeder`` (sacral): healthy;
- ``flaky-model`` (third_eye): crashes on its first start, razard restarts it;
- ``broken-indexer`` (crown): crash-loops; razard spends its restart budget
  and quarantines it.

Then ``razarctl status`` is shown, and everything is torn down (or left
running with ``--keep``).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from razard.errors import RazarError
from razard.sandbox import UserManager, ensure_journald, start_user_manager, stop_journald

FLAKY = """\
import os, sys, time, pathlib
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("crashed once")
    print("flaky-model: CUDA context lost while loading weights (simulated)", file=sys.stderr)
    sys.exit(3)
print("flaky-model: serving", flush=True)
while True:
    time.sleep(3600)
"""

CRASHLOOP = """\
import sys
print("broken-indexer: error: index shard /srv/index/shard-7 is corrupt", file=sys.stderr)
sys.exit(4)
"""

WORKER = """\
import time
print("gpu-feeder: feeding", flush=True)
while True:
    time.sleep(3600)
"""


def razarctl() -> str:
    """The razarctl installed beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "razarctl"
    return str(beside) if beside.exists() else (shutil.which("razarctl") or "razarctl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_demo(base: Path, um: UserManager) -> Path:
    """Write the demo's scripts and razard.toml under ``base``; returns the config path."""
    bin_dir = base / "demo"
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "flaky.py").write_text(FLAKY)
    (bin_dir / "crashloop.py").write_text(CRASHLOOP)
    (bin_dir / "worker.py").write_text(WORKER)
    py = sys.executable
    api_port, metrics_port = _free_port(), _free_port()
    state = base / "state"
    cfg = textwrap.dedent(f"""\
        # razar demo config (written by `razard demo`)
        [razard]
        state_dir = "{state}"
        bus = "user"
        metrics_address = "127.0.0.1"
        metrics_port = {metrics_port}
        unit_dir = "{um.unit_dir}"

        [[component]]
        name = "api"
        layer = "throat"
        priority = 10
        command = ["{py}", "-m", "http.server", "{api_port}", "--bind", "127.0.0.1"]
        working_directory = "{bin_dir}"
        probe = {{ type = "http", url = "http://127.0.0.1:{api_port}/", interval = 1.0 }}
        restart = {{ attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }}

        [[component]]
        name = "gpu-feeder"
        layer = "sacral"
        priority = 10
        command = ["{py}", "{bin_dir / "worker.py"}"]
        environment = {{ PYTHONUNBUFFERED = "1" }}
        restart = {{ attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }}

        [[component]]
        name = "flaky-model"
        layer = "third_eye"
        priority = 20
        command = ["{py}", "{bin_dir / "flaky.py"}", "{base / "flaky.crashed"}"]
        probe = {{ type = "exec", command = ["/bin/test", "-e", "{base / "flaky.crashed"}"] }}
        restart = {{ attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }}
        working_directory = "{bin_dir}"
        artifacts = ["flaky.py"]

        [[component]]
        name = "broken-indexer"
        layer = "crown"
        priority = 30
        command = ["{py}", "{bin_dir / "crashloop.py"}"]
        restart = {{ attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }}
        """)
    path = base / "razard.toml"
    path.write_text(cfg)
    return path


def razard_unit(config: Path) -> str:
    """A razard.service for the private manager, shaped like the production unit."""
    return textwrap.dedent(f"""\
        [Unit]
        Description=razard demo (self-healing supervisor)

        [Service]
        Type=notify
        NotifyAccess=main
        ExecStart={shlex.quote(sys.executable)} -m razard --config {shlex.quote(str(config))}
        ExecReload=/bin/kill -HUP $MAINPID
        WatchdogSec=20s
        Restart=on-failure
        TimeoutStartSec=90s
        """)


def _status(um: UserManager) -> dict[str, Any] | None:
    p = subprocess.run(
        [razarctl(), "--bus", "user", "--address", um.bus_address, "status", "--json"],
        capture_output=True,
        text=True,
        env=um.env(),
        timeout=30,
        check=False,
    )
    if p.returncode != 0:
        return None
    parsed: dict[str, Any] = json.loads(p.stdout)
    return parsed


def _main_pid(um: UserManager) -> str:
    p = um.systemctl("show", "-p", "ExecMainPID", "--value", "razard.service", check=False)
    return p.stdout.strip() or "0"


def outcome_ok(status: dict[str, Any]) -> bool:
    """The demo's goal: the crash healed, the loop quarantined, the rest healthy."""
    by = {c["name"]: c for c in status["components"]}
    return bool(
        by["api"]["state"] == "healthy"
        and by["gpu-feeder"]["state"] == "healthy"
        and by["flaky-model"]["state"] == "healthy"
        and by["flaky-model"]["restarts"] >= 1
        and by["broken-indexer"]["state"] == "quarantined"
    )


def run_demo(keep: bool = False, wait: float = 60.0) -> int:
    """Run the demo; returns 0 when razard healed and quarantined as expected."""
    if os.geteuid() != 0:
        raise RazarError(
            "the demo starts a private systemd user manager and needs root "
            "(it creates /run/systemd/system, as systemd requires)"
        )
    base = Path(tempfile.mkdtemp(prefix="razar-demo-"))
    journald = ensure_journald()
    try:
        um = start_user_manager(base / "systemd")
    except RazarError:
        stop_journald(journald)
        raise
    ok = False
    try:
        config = write_demo(base, um)
        (um.unit_dir / "razard.service").write_text(razard_unit(config))
        um.systemctl("daemon-reload")
        print(f"==> private systemd user manager (pid {um.pid}) under {base}")
        print("==> systemctl --user start razard   (Type=notify: returns once razard is READY)")
        t0 = time.monotonic()
        started = um.systemctl("start", "razard.service", timeout=120, check=False)
        if started.returncode != 0:
            print(started.stderr.strip())
            print("==> razard's output:")
            journal = subprocess.run(
                ["journalctl", "--no-pager", "-o", "cat", "-n", "30", f"_PID={_main_pid(um)}"],
                capture_output=True,
                text=True,
                check=False,
            )
            print(textwrap.indent(journal.stdout or "(no journal)", "    "))
            return 1
        print(f"    razard READY after {time.monotonic() - t0:.1f}s")
        deadline = time.monotonic() + wait
        status = _status(um)
        while time.monotonic() < deadline and not (status and outcome_ok(status)):
            time.sleep(0.5)
            status = _status(um)
        ok = bool(status and outcome_ok(status))
        print("==> razarctl status")
        sys.stdout.flush()
        subprocess.run(
            [razarctl(), "--bus", "user", "--address", um.bus_address, "status"],
            env=um.env(),
            check=False,
            timeout=30,
        )
        qfile = base / "state" / "quarantine" / "broken-indexer.json"
        if qfile.exists():
            print(f"==> {qfile}:")
            print(textwrap.indent(qfile.read_text(), "    "))
        print("==> last events (razar.log):")
        log_lines = (base / "state" / "razar.log").read_text().splitlines()[-8:]
        for line in log_lines:
            rec = json.loads(line)
            print(
                f"    {rec.get('component') or '-':15} {rec.get('event'):20} {rec.get('message')}"
            )
        print(
            "==> "
            + (
                "OK: crash healed, crash loop quarantined"
                if ok
                else "UNEXPECTED: the demo did not reach its goal (see above)"
            )
        )
        if keep:
            env = um.env()
            print(
                textwrap.dedent(f"""
                Left running. To look around:
                  export XDG_RUNTIME_DIR={env["XDG_RUNTIME_DIR"]}
                  export DBUS_SESSION_BUS_ADDRESS={env["DBUS_SESSION_BUS_ADDRESS"]}
                  {razarctl()} --bus user status
                  {razarctl()} --bus user quarantine release broken-indexer
                  systemctl --user status razard
                To stop everything:
                  kill {um.pid}   # the private systemd; its units go with it
                """)
            )
            return 0 if ok else 1
    finally:
        if not keep:
            um.systemctl("stop", "razard.service", check=False)
            um.stop()
            stop_journald(journald)
            print(f"==> torn down (files kept in {base})")
    return 0 if ok else 1

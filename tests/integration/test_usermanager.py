"""The private systemd user manager the integration tests and the demo run on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from razard.usermanager import (
    UserManager,
    UserManagerError,
    reap_stale_managers,
    start_user_manager,
    write_unit,
)
from tests.processes import all_gone, gone

pytestmark = pytest.mark.integration


def _main_pid(um: UserManager, unit: str) -> int:
    return int(um.systemctl("show", "-p", "MainPID", "--value", unit).stdout.strip())


def _processes_of(runtime_dir: Path) -> list[int]:
    """Every live process whose environment points at ``runtime_dir``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("XDG_RUNTIME_DIR") == str(runtime_dir) and not gone(p.pid):
                found.append(p.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def unit_name(user_manager: UserManager) -> Iterator[str]:
    """A fresh unit name on the shared manager; the unit is stopped and removed afterwards."""
    name = f"razar-sbx-{uuid.uuid4().hex[:8]}.service"
    yield name
    user_manager.systemctl("stop", name, check=False)
    (user_manager.unit_dir / name).unlink(missing_ok=True)
    user_manager.systemctl("daemon-reload", check=False)


def test_fixture_manager_answers(user_manager: UserManager) -> None:
    """The session's user manager is up, owns its bus socket and answers systemctl."""
    state = user_manager.systemctl("is-system-running", check=False).stdout.strip()
    assert state in ("running", "degraded")
    assert (user_manager.runtime_dir / "bus").is_socket()
    assert user_manager.bus_address == f"unix:path={user_manager.runtime_dir}/bus"
    assert user_manager.unit_dir == user_manager.config_home / "systemd" / "user"
    env = user_manager.env()
    assert env["DBUS_SESSION_BUS_ADDRESS"] == user_manager.bus_address
    assert env["XDG_RUNTIME_DIR"] == str(user_manager.runtime_dir)
    assert "NOTIFY_SOCKET" not in env


async def test_manager_is_reachable_over_its_dbus(user_manager: UserManager) -> None:
    """dbus-fast reaches org.freedesktop.systemd1 on the manager's bus address."""
    bus = await MessageBus(bus_address=user_manager.bus_address).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.systemd1",
                path="/org/freedesktop/systemd1",
                interface="org.freedesktop.DBus.Properties",
                member="Get",
                signature="ss",
                body=["org.freedesktop.systemd1.Manager", "Version"],
            )
        )
    finally:
        bus.disconnect()
    assert reply is not None and reply.message_type == MessageType.METHOD_RETURN, reply
    assert str(reply.body[0].value).startswith("25")


def test_written_unit_starts_and_is_active(user_manager: UserManager, unit_name: str) -> None:
    """A unit written to unit_dir starts with `systemctl --user start` and is active."""
    path = write_unit(user_manager, unit_name, "[Service]\nExecStart=/bin/sleep 1000\n")
    assert path == user_manager.unit_dir / unit_name
    user_manager.systemctl("start", unit_name)
    show = user_manager.systemctl("show", "-p", "ActiveState", "-p", "SubState", unit_name)
    assert show.stdout.split() == ["ActiveState=active", "SubState=running"]
    assert psutil.Process(_main_pid(user_manager, unit_name)).cmdline() == [
        "/bin/sleep",
        "1000",
    ]


def test_failed_systemctl_raises_with_the_reason(user_manager: UserManager) -> None:
    """systemctl(check=True) raises UserManagerError carrying systemctl's own message."""
    with pytest.raises(UserManagerError, match="razar-sbx-no-such-unit.service"):
        user_manager.systemctl("start", "razar-sbx-no-such-unit.service")


def test_stop_leaves_no_unit_process_alive(tmp_path_factory: pytest.TempPathFactory) -> None:
    """stop() of a separate manager kills its units, their children and the manager."""
    um = start_user_manager(tmp_path_factory.mktemp("stop"))
    try:
        write_unit(um, "sleeper.service", "[Service]\nExecStart=/bin/sleep 1000\n")
        write_unit(
            um,
            "forker.service",
            "[Service]\nExecStart=/bin/sh -c 'sleep 1001 & sleep 1002 & wait'\n",
        )
        um.systemctl("start", "sleeper.service", "forker.service")
        sleeper = _main_pid(um, "sleeper.service")
        forker = psutil.Process(_main_pid(um, "forker.service"))
        deadline = time.monotonic() + 5
        while len(forker.children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # Type=simple: start returns before the shell forks
        pids = [um.pid, sleeper, forker.pid, *(c.pid for c in forker.children())]
        assert len(pids) == 5 and not any(gone(p) for p in pids)
    finally:
        um.stop()
    assert all_gone(pids, within=5), [p for p in pids if not gone(p)]
    assert not any(cg.exists() for cg in um.cgroups)
    um.stop()  # a second stop is harmless


def test_stop_after_the_manager_crashed_still_kills_its_units(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """When the manager died by SIGKILL, stop() still finds and kills its orphaned units."""
    um = start_user_manager(tmp_path_factory.mktemp("crash"))
    try:
        write_unit(um, "sleeper.service", "[Service]\nExecStart=/bin/sleep 1000\n")
        um.systemctl("start", "sleeper.service")
        sleeper = _main_pid(um, "sleeper.service")
        os.kill(um.pid, signal.SIGKILL)
        assert all_gone([um.pid], within=5)
        assert not gone(sleeper)  # orphaned, still running
    finally:
        um.stop()
    assert all_gone([sleeper], within=5)
    assert _processes_of(um.runtime_dir) == []


def test_owned_temporary_base_is_removed() -> None:
    """A manager started without a base lives in a razar-sandbox-* dir removed by stop()."""
    with start_user_manager() as um:
        assert um.base.name.startswith("razar-sandbox-")
        assert um.systemctl("is-system-running", check=False).stdout.strip() in (
            "running",
            "degraded",
        )
    assert not um.base.exists()
    assert not um.running


def test_start_failure_raises_and_leaves_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A manager that does not come up in time raises UserManagerError and is cleaned away."""
    base = tmp_path_factory.mktemp("late")
    with pytest.raises(UserManagerError, match="did not come up") as info:
        start_user_manager(base, timeout=0.001)
    assert "manager log" in str(info.value)
    assert all_gone(_processes_of(base / "run"), within=5)


def test_too_long_base_is_refused_clearly(tmp_path: Path) -> None:
    """A base whose socket paths would overflow AF_UNIX is refused before starting."""
    with pytest.raises(UserManagerError, match="too long"):
        start_user_manager(tmp_path / ("x" * 100))


_ABANDON = """
import os, sys
from pathlib import Path
from razard.usermanager import start_user_manager, write_unit
um = start_user_manager(Path(sys.argv[1]))
write_unit(um, "orphan.service", "[Service]\\nExecStart=/bin/sleep 1000\\n")
um.systemctl("start", "orphan.service")
print(um.systemctl("show", "-p", "MainPID", "--value", "orphan.service").stdout.strip())
print(um.pid, flush=True)
os._exit(0)  # dies like a SIGKILLed test run: no stop(), no atexit
"""


def test_sandboxes_of_dead_creators_are_reaped(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A manager whose creating process died unstopped is killed by reap_stale_managers()."""
    base = tmp_path_factory.mktemp("orphan")
    out = subprocess.run(
        [sys.executable, "-c", _ABANDON, str(base)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    unit_pid, manager_pid = int(out[0]), int(out[1])
    assert not gone(unit_pid) and not gone(manager_pid)
    killed = reap_stale_managers()
    assert {unit_pid, manager_pid} <= set(killed)
    assert all_gone([unit_pid, manager_pid], within=5)
    assert _processes_of(base / "run") == []


_KEEP = """
import sys
from pathlib import Path
from razard.usermanager import start_user_manager, write_unit
um = start_user_manager(Path(sys.argv[1]), keep=True)
write_unit(um, "kept.service", "[Service]\\nExecStart=/bin/sleep 1000\\n")
um.systemctl("start", "kept.service")
print(um.systemctl("show", "-p", "MainPID", "--value", "kept.service").stdout.strip())
print(um.pid, flush=True)
um.detach()  # `razard demo --keep`: a normal exit, atexit included, leaves it running
"""


def test_a_kept_manager_outlives_its_creator_and_the_reaper(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """keep=True + detach(): still running after its creator exited and after
    reap_stale_managers(); `kill <manager pid>` takes its units with it."""
    base = tmp_path_factory.mktemp("kept")
    out = subprocess.run(
        [sys.executable, "-c", _KEEP, str(base)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    unit_pid, manager_pid = int(out[0]), int(out[1])
    try:
        assert not gone(unit_pid) and not gone(manager_pid)
        killed = reap_stale_managers()
        assert unit_pid not in killed and manager_pid not in killed
        assert not gone(unit_pid) and not gone(manager_pid)
    finally:
        os.kill(manager_pid, signal.SIGTERM)  # what the demo tells the operator to do
    assert all_gone([unit_pid, manager_pid], within=10)
    reap_stale_managers()  # its empty cgroup

"""The shipped D-Bus policy on a system-type bus: only root and group razar reach razard.

A private dbus-daemon runs with the system bus's default policy (deny method
calls and name ownership unless a service file punches a hole, as Debian's
system.conf does) and includes ``units/org.razar.Supervisor1.conf`` unchanged.
razard's real control interface is served on it by root; users the test
creates call it through ``dbus-send`` and ``razarctl``.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from razard.control import export_control, unexport_control
from tests.integration.test_control import FakeSupervisor, start_dbus_daemon, stop_dbus_daemon
from tests.users import Users, throwaway_users

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "units" / "org.razar.Supervisor1.conf"
RAZARCTL = str(Path(sys.executable).with_name("razarctl"))

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates users and a system bus"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("dbus-daemon", "dbus-send", "setpriv", "useradd")),
        reason="needs dbus-daemon, dbus-send, setpriv and useradd",
    ),
]

SYSTEM_BUS = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    """Two throwaway system users, one of them in group razar."""
    with throwaway_users("rzt-") as made:
        yield made


@dataclass
class Bus:
    address: str
    supervisor: FakeSupervisor


@pytest.fixture
def bus_daemon() -> Iterator[str]:
    """A system-type dbus-daemon with the shipped policy; its address."""
    run = Path(f"/run/razar-policy-{uuid.uuid4().hex[:8]}")  # reachable by the test users
    run.mkdir(mode=0o755)
    config = run / "bus.conf"
    config.write_text(SYSTEM_BUS.format(socket=run / "bus", policy=POLICY))
    proc, address = start_dbus_daemon(run, config)
    try:
        yield address
    finally:
        stop_dbus_daemon(proc)
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture
async def system_bus(bus_daemon: str) -> AsyncIterator[Bus]:
    """razard's control interface served on that bus by root."""
    address = bus_daemon
    bus = await MessageBus(bus_address=address).connect()
    supervisor = FakeSupervisor()
    iface = await export_control(bus, supervisor)  # as root: the policy lets root own it
    try:
        yield Bus(address, supervisor)
    finally:
        await unexport_control(bus, iface)
        bus.disconnect()


async def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as ``user`` with that user's groups, while this loop serves the bus."""
    pw = pwd.getpwnam(user)
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *argv]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": "/"},
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode or 0, out.decode(), err.decode())


def dbus_send(address: str, member: str, *args: str) -> list[str]:
    return [
        "dbus-send",
        f"--bus={address}",
        "--print-reply",
        "--dest=org.razar.Supervisor1",
        "/org/razar/Supervisor1",
        f"org.razar.Supervisor1.{member}",
        *args,
    ]


async def test_an_ordinary_user_is_refused_and_changes_nothing(
    system_bus: Bus, users: Users
) -> None:
    """Status and Restart from a user outside group razar: AccessDenied, nothing restarted."""
    status = await as_user(users.outsider, *dbus_send(system_bus.address, "Status"))
    restart = await as_user(
        users.outsider, *dbus_send(system_bus.address, "Restart", "string:netcheck")
    )
    for p in (status, restart):
        assert p.returncode != 0
        assert "org.freedesktop.DBus.Error.AccessDenied" in p.stderr
    assert system_bus.supervisor.calls == []
    print("outsider: Status and Restart refused (AccessDenied)")


async def test_a_member_of_group_razar_is_allowed(system_bus: Bus, users: Users) -> None:
    """The same calls from a member of group razar reach razard."""
    status = await as_user(users.operator, *dbus_send(system_bus.address, "Status"))
    assert status.returncode == 0, status.stderr
    assert "netcheck" in status.stdout
    restart = await as_user(
        users.operator, *dbus_send(system_bus.address, "Restart", "string:netcheck")
    )
    assert restart.returncode == 0, restart.stderr
    assert system_bus.supervisor.calls == [("restart", "netcheck")]


async def test_razarctl_tells_an_outsider_why_and_an_operator_gets_the_table(
    system_bus: Bus, users: Users
) -> None:
    """razarctl as the outsider: exit 1 and the way in; as the operator: the status table."""
    probe = await as_user(users.outsider, sys.executable, "-c", "pass")
    if probe.returncode != 0:
        pytest.skip(f"the venv is not readable by other users here: {probe.stderr.strip()}")
    denied = await as_user(
        users.outsider, RAZARCTL, "--bus", "system", "--address", system_bus.address, "status"
    )
    assert denied.returncode == 1
    assert "permission denied" in denied.stderr and "group razar" in denied.stderr
    allowed = await as_user(
        users.operator, RAZARCTL, "--bus", "system", "--address", system_bus.address, "status"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "netcheck" in allowed.stdout


async def test_nobody_but_root_can_claim_razards_name(system_bus: Bus, users: Users) -> None:
    """An operator cannot impersonate razard: owning org.razar.Supervisor1 is root's alone."""
    probe = await as_user(users.operator, sys.executable, "-c", "pass")
    if probe.returncode != 0:
        pytest.skip(f"the venv is not readable by other users here: {probe.stderr.strip()}")
    claim = (
        "import asyncio\n"
        "from dbus_fast.aio import MessageBus\n"
        "from dbus_fast.errors import DBusError\n"
        "async def main():\n"
        f"    bus = await MessageBus(bus_address={system_bus.address!r}).connect()\n"
        "    try:\n"
        "        await bus.request_name('org.razar.Supervisor2')\n"
        "        print('owned other')\n"
        "    except DBusError as e:\n"
        "        print('other refused', e.type)\n"
        "    try:\n"
        "        await bus.request_name('org.razar.Supervisor1')\n"
        "        print('owned razard')\n"
        "    except DBusError as e:\n"
        "        print('razard refused', e.type)\n"
        "asyncio.run(main())\n"
    )
    p = await as_user(users.operator, sys.executable, "-c", claim)
    assert "razard refused org.freedesktop.DBus.Error.AccessDenied" in p.stdout, p.stderr

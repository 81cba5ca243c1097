"""The shipped systemd unit and D-Bus policy: valid, and saying what the design requires."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "units"
SERVICE = UNITS / "razard.service"
POLICY = UNITS / "org.razar.Supervisor1.conf"
BUS_NAME = "org.razar.Supervisor1"
SEND_INTERFACES = {
    "org.razar.Supervisor1",
    "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.Properties",
    "org.freedesktop.DBus.Peer",
}
DOCTYPE = (
    '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
)


def _razard_script() -> str:
    found = shutil.which("razard") or str(Path(sys.prefix) / "bin" / "razard")
    if not os.access(found, os.X_OK):
        pytest.skip("the razard console script is not installed")
    return found


def _service_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = ""
    for line in SERVICE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_service_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts razard.service with no warnings about it.

    verify checks that ExecStart's program exists, and razard need not be on
    systemd's search path on a test machine: the unit is copied into tmp_path with
    only that program replaced by this venv's razard console script.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = SERVICE.read_text()
    assert text.count("ExecStart=razard ") == 1
    copy = tmp_path / "razard.service"
    copy.write_text(text.replace("ExecStart=razard ", f"ExecStart={_razard_script()} "))

    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
    )

    output = (result.stdout + result.stderr).splitlines()
    assert result.returncode == 0, output
    assert [line for line in output if "razard.service" in line] == []


def test_service_settings_match_the_design() -> None:
    """razard.service is a notify service with a watchdog, restart, directories, hardening."""
    settings = _service_settings()
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        # a bare name, found in /usr/bin (package) or /usr/local/bin (by hand)
        "Service.ExecStart": ["razard --config /etc/razard/razard.toml"],
        "Service.ExecReload": ["/bin/kill -HUP $MAINPID"],
        "Service.WatchdogSec": ["30s"],
        "Service.Restart": ["on-failure"],
        "Service.RestartSec": ["2s"],
        "Service.StateDirectory": ["razard"],
        "Service.LogsDirectory": ["razard"],
        "Service.RuntimeDirectory": ["razard"],
        "Service.ConfigurationDirectory": ["razard"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.ProtectSystem": ["yes"],
        "Service.ProtectHome": ["read-only"],
        "Service.PrivateTmp": ["yes"],
        "Service.MemoryDenyWriteExecute": ["no"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert settings.get(key) == value, key
    # The metrics port, probes and remote agents need the host network; NVML needs the GPU's
    # device nodes, so devices are closed but for those (ProtectClock adds only the rtc).
    for forbidden in ("PrivateNetwork", "PrivateDevices", "User", "DynamicUser"):
        assert f"Service.{forbidden}" not in settings, forbidden
    assert settings["Service.DevicePolicy"] == ["closed"]
    assert settings["Service.DeviceAllow"] == [
        "char-nvidia-frontend rw",
        "char-nvidia-uvm rw",
        "char-nvidia-caps r",
    ]
    # privileges the healers need live in their own units, not in razard's
    caps = settings["Service.CapabilityBoundingSet"][0].split()
    assert "CAP_SYS_ADMIN" not in caps and "CAP_NET_ADMIN" not in caps


def _policy() -> ET.Element:
    return ET.parse(POLICY).getroot()


def _rules(root: ET.Element, verb: str, attribute: str) -> list[tuple[dict[str, str], str]]:
    """Every <allow>/<deny> with ``attribute`` naming our bus name, with its policy's scope."""
    found = []
    for policy in root.iter("policy"):
        for rule in policy.findall(verb):
            if rule.get(attribute) == BUS_NAME:
                found.append((dict(policy.attrib), rule.get("send_interface", "")))
    return found


def test_policy_is_well_formed_busconfig_with_standard_doctype() -> None:
    """The policy parses as XML, its root is <busconfig>, and it declares the busconfig DTD."""
    text = POLICY.read_text()
    assert DOCTYPE in text
    assert _policy().tag == "busconfig"


def test_policy_lets_only_root_own_the_name() -> None:
    """Only user root may own org.razar.Supervisor1; the default context denies it."""
    root = _policy()
    assert [scope for scope, _ in _rules(root, "allow", "own")] == [{"user": "root"}]
    assert [scope for scope, _ in _rules(root, "deny", "own")] == [{"context": "default"}]
    assert not any(r.get("own") == "*" or r.get("own_prefix") for r in root.iter("allow"))


def test_policy_lets_root_and_group_razar_send_and_denies_everyone_else() -> None:
    """root and group razar may send to the supervisor's interfaces; the default denies."""
    root = _policy()
    allowed: dict[str, set[str]] = {}
    for scope, interface in _rules(root, "allow", "send_destination"):
        allowed.setdefault(next(iter(scope.values())), set()).add(interface)
    assert allowed == {"root": SEND_INTERFACES, "razar": SEND_INTERFACES}
    assert {next(iter(s.items())) for s, _ in _rules(root, "allow", "send_destination")} == {
        ("user", "root"),
        ("group", "razar"),
    }
    assert _rules(root, "deny", "send_destination") == [({"context": "default"}, "")]


# --- a real dbus-daemon enforcing the policy --------------------------------------------

_OWNER_SCRIPT = """
import asyncio, sys
from dbus_fast.aio import MessageBus

async def main() -> None:
    bus = await asyncio.wait_for(MessageBus(bus_address=sys.argv[1]).connect(), 10)
    await asyncio.wait_for(bus.request_name(sys.argv[2]), 10)
    print("owned", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.fixture
def private_bus(tmp_path: Path) -> Iterator[str]:
    """A dbus-daemon on a socket in tmp_path whose only restrictions are the razar policy,
    with the name owned by a root process as razard will own it.

    The policy's group razar is swapped for nobody's group, nogroup, so an operator
    in "the razar group" can be played without adding a group to the machine.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to act as both root and nobody")
    for tool in ("dbus-daemon", "dbus-send", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    policy = tmp_path / "razar-policy.conf"
    policy.write_text(POLICY.read_text().replace('group="razar"', 'group="nogroup"'))
    # pytest's tmp_path root is private (0700); user nobody must reach the socket.
    socket_dir = Path(tempfile.mkdtemp(prefix="razar-bus-"))
    socket_dir.chmod(0o755)
    socket_path = socket_dir / "bus"
    config = tmp_path / "bus.conf"
    # A custom bus allows nothing by default, so the base policy opens everything
    # and the included razar policy is the only thing that restricts.
    config.write_text(
        f"""{DOCTYPE}
<busconfig>
  <type>custom</type>
  <listen>unix:path={socket_path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""
    )
    address = f"unix:path={socket_path}"
    daemon = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    owner: subprocess.Popen[str] | None = None
    try:
        assert daemon.stdout is not None
        assert daemon.stdout.readline().startswith(address), "dbus-daemon did not start"
        owner = subprocess.Popen(
            [sys.executable, "-c", _OWNER_SCRIPT, address, BUS_NAME],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "owned", "root could not own the name"
        yield address
    finally:
        for proc in (owner, daemon):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
        shutil.rmtree(socket_dir, ignore_errors=True)


def _dbus_send(
    address: str, uid: str | None, gid: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    command = ["dbus-send", f"--bus={address}", "--print-reply", "--reply-timeout=5000", *args]
    if uid is not None:
        command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def _call(
    address: str, uid: str | None, gid: str | None, method: str
) -> subprocess.CompletedProcess[str]:
    return _dbus_send(address, uid, gid, f"--dest={BUS_NAME}", "/org/razar/Supervisor1", method)


@pytest.mark.integration
def test_dbus_daemon_lets_root_and_group_send_and_refuses_others(private_bus: str) -> None:
    """On a real dbus-daemon root and the group may ping razard; another user is refused."""
    ping = "org.freedesktop.DBus.Peer.Ping"
    assert _call(private_bus, None, None, ping).returncode == 0
    member = _call(private_bus, "nobody", "nogroup", ping)
    assert member.returncode == 0, member.stderr

    outsider = _call(private_bus, "nobody", "daemon", ping)
    assert outsider.returncode != 0
    assert "AccessDenied" in outsider.stderr
    other_interface = _call(private_bus, "nobody", "nogroup", "org.example.Other.Do")
    assert "AccessDenied" in other_interface.stderr


@pytest.mark.integration
def test_dbus_daemon_refuses_the_name_to_non_root(private_bus: str) -> None:
    """On a real dbus-daemon a non-root member of the group cannot take razard's name."""
    result = _dbus_send(
        private_bus,
        "nobody",
        "nogroup",
        "--dest=org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        f"string:{BUS_NAME}",
        "uint32:0",
    )
    assert result.returncode != 0
    assert "not allowed to own" in result.stderr

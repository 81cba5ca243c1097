"""The root healer's parsing, planning and settings: no links touched, nothing needs root."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.healing.root import (
    Check,
    Runner,
    Settings,
    in_netns,
    networkd_manages,
    nm_manages,
    parse_addresses,
    parse_link,
    plan_steps,
    run,
)

LINK_UP = """[{"ifindex":5,"ifname":"vA","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
"operstate":"UP"}]"""
LINK_NO_CARRIER = """[{"ifname":"vA","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP"],
"operstate":"LOWERLAYERDOWN"}]"""
LINK_DOWN = """[{"ifname":"vA","flags":["BROADCAST","MULTICAST"],"operstate":"DOWN"}]"""
ADDRS = json.dumps(
    [
        {
            "ifname": "vA",
            "addr_info": [
                {"family": "inet", "local": "10.250.3.1", "prefixlen": 24, "scope": "global"},
                {"family": "inet6", "local": "fd00::1", "prefixlen": 64, "scope": "global"},
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
                {
                    "family": "inet6",
                    "local": "fd00::9",
                    "prefixlen": 64,
                    "scope": "global",
                    "dadfailed": True,
                },
            ],
        }
    ]
)


def test_link_flags_give_admin_state_and_carrier() -> None:
    up = parse_link(LINK_UP)
    assert (up.admin_up, up.carrier, up.operstate) == (True, True, "UP")
    no_carrier = parse_link(LINK_NO_CARRIER)
    assert (no_carrier.admin_up, no_carrier.carrier) == (True, False)
    down = parse_link(LINK_DOWN)
    assert (down.admin_up, down.carrier) == (False, False)
    with pytest.raises(ValueError):
        parse_link("[]")


def test_only_usable_global_addresses_count() -> None:
    assert parse_addresses(ADDRS) == ["10.250.3.1/24", "fd00::1/64"]
    assert parse_addresses('[{"ifname":"vA","addr_info":[]}]') == []


def test_networkd_manages_a_link_unless_unmanaged() -> None:
    out = "  2 eth0  ether routable   configured\n  3 vA    ether off        unmanaged\n"
    assert networkd_manages(out, "eth0")
    assert not networkd_manages(out, "vA")
    assert not networkd_manages(out, "eth1")


def test_networkmanager_manages_a_device_unless_unmanaged() -> None:
    out = "eth0:connected\nlo:unmanaged\nweird\\:name:disconnected\n"
    assert nm_manages(out, "eth0")
    assert nm_manages(out, "weird:name")
    assert not nm_manages(out, "lo")
    assert not nm_manages(out, "vA")


def test_commands_run_inside_the_namespace() -> None:
    assert in_netns(None, ["ip", "link"]) == ["ip", "link"]
    assert in_netns("ns1", ["ip", "-j", "link"]) == ["ip", "-n", "ns1", "-j", "link"]
    assert in_netns("ns1", ["ping", "-c", "1", "x"]) == [
        "ip", "netns", "exec", "ns1", "ping", "-c", "1", "x",
    ]  # fmt: skip


def test_plan_follows_the_manager() -> None:
    s = Settings(interface="vA", netns="ns1")
    assert [p.split(":")[0] for p in plan_steps("none", s)] == ["bounce"]
    networkd = plan_steps("networkd", s)
    assert [p.split(":")[0] for p in networkd] == ["renew", "bounce", "restart"]
    assert "ip netns exec ns1 networkctl reconfigure vA" in networkd[0]
    assert networkd[2] == "restart: systemctl restart systemd-networkd.service"
    nm = plan_steps("networkmanager", Settings(interface="eth0"))
    assert "nmcli device reapply eth0" in nm[0] and "NetworkManager.service" in nm[2]


def test_check_describes_the_evidence() -> None:
    c = Check("vA", admin_up=True, carrier=True, addresses=["10.0.0.1/24"], target="10.0.0.2")
    c.reachable = False
    assert not c.healthy
    assert c.describe() == "link up, address 10.0.0.1/24, target 10.0.0.2 unreachable"
    c.reachable = True
    assert c.healthy
    assert not Check("vA", admin_up=True, carrier=True).healthy  # no address
    assert Check("vA", admin_up=True, carrier=True, addresses=["10.0.0.1/24"]).healthy
    assert Check("vA").describe() == "link down (admin down), no global address"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RAZAR_ROOT_NETWORK_MANAGER", "systemd"),
        ("RAZAR_ROOT_INTERFACE", "../etc"),
        ("RAZAR_ROOT_INTERFACE", "a-much-too-long-name"),
        ("RAZAR_ROOT_NETNS", "a/b"),
        ("RAZAR_ROOT_TARGET", "-f"),
        ("RAZAR_ROOT_PING_COUNT", "0"),
        ("RAZAR_ROOT_SETTLE", "soon"),
        ("RAZAR_ROOT_MAX_RESETS_PER_HOUR", "-1"),
    ],
)
def test_a_wrong_setting_is_named(
    name: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"RAZAR_STATE_DIR": str(tmp_path), "RAZAR_ROOT_INTERFACE": "vA", name: value}
    assert run([], env) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "not_healed" and name in out["reason"]


def test_no_interface_is_not_applicable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([], {"RAZAR_STATE_DIR": str(tmp_path)}) == 2
    out = json.loads(capsys.readouterr().out)
    assert out["result"] == "not_applicable"
    assert out["reason"].startswith("no interface configured")


def test_restore_has_nothing_to_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "RAZAR_STATE_DIR": str(tmp_path),
        "RAZAR_ROOT_INTERFACE": "vA",
        "RAZAR_HEAL_MODE": "restore",
    }
    assert run([], env) == 0
    out = json.loads(capsys.readouterr().out)
    assert not any(s["changed"] for s in out["steps"])
    assert not (tmp_path / "healers").exists()


async def test_runner_reports_missing_programs_and_hangs() -> None:
    runner = Runner(None, {"PATH": "/usr/bin:/bin"})
    missing = await runner(["no-such-program-razar"], 5)
    assert missing.rc == 127 and "not found" in missing.describe()
    hung = await runner(["sleep", "30"], 0.2)
    assert hung.rc == 124 and "timed out" in hung.describe()
    ok = await runner(["true"], 5)
    assert ok.ok and ok.describe() == "true: ok"

"""The Debian package on a real node: installed, started, upgraded, removed, purged.

Two builds of the checkout (``make deb`` with two versions) on a freshly booted
Debian 12 container (systemd as PID 1; see bed.py). Checked from outside, as an
operator would: dpkg, systemctl, the journal, razarctl.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import deb
from tests.system import bed

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(deb.missing_tools() is not None, reason=str(deb.missing_tools())),
]

CONFIG = """\
[razard]
state_dir = "/var/lib/razard"
bus = "system"
metrics_port = 9360

[[component]]
name = "keeper"
layer = "throat"
priority = 10
command = ["/bin/sleep", "infinity"]
restart = { attempts = 3, backoff_base = 0.2, backoff_cap = 2.0 }
"""


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory, bed_ok: None) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("debs")
    return deb.build_deb(out, "0.1.1"), deb.build_deb(out, "0.1.2")


@pytest.fixture(scope="module")
def pkg_node(node: bed.Node, debs: tuple[Path, Path]) -> Iterator[bed.Node]:
    for d in debs:
        node.copy_in(d, f"/root/{d.name}")
    yield node


def dpkg(node: bed.Node, *args: str) -> bed.Result:
    # an edited conffile is kept without a question (the operator's answer "N")
    return node.run(
        ["dpkg", "--force-confdef", "--force-confold", *args],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        timeout=300,
    )


def version(node: bed.Node) -> str:
    return node.run(["razard", "--version"]).stdout.strip()


def test_install_enables_but_does_not_start(pkg_node: bed.Node, debs: tuple[Path, Path]) -> None:
    dpkg(pkg_node, "-i", f"/root/{debs[0].name}")
    assert pkg_node.run(["getent", "group", "razar"]).stdout.startswith("razar:")
    # the group existed before the policy landed: dbus-daemon never rejected it
    assert "Unknown group" not in pkg_node.journal("-u", "dbus.service")
    assert pkg_node.systemctl("is-enabled", "razard").stdout.strip() == "enabled"
    assert pkg_node.systemctl("is-enabled", "razar-notifier.timer").stdout.strip() == "enabled"
    active = pkg_node.systemctl("is-active", "razard", check=False).stdout.strip()
    assert active == "inactive", active
    conffiles = pkg_node.run(["dpkg-query", "-W", "-f=${Conffiles}", "razar"]).stdout
    for name in ("razard.toml", "razar_ai_agents.json", "error_registry.toml"):
        assert f"/etc/razard/{name}" in conffiles
    assert "0.1.1" in version(pkg_node)


def test_edited_config_then_start(pkg_node: bed.Node) -> None:
    pkg_node.copy_in_text("/etc/razard/razard.toml", CONFIG)
    pkg_node.run(["razard", "check-config", "/etc/razard/razard.toml"])
    pkg_node.systemctl("start", "razard", timeout=120)
    rows = json.loads(pkg_node.run(["razarctl", "status", "--json"]).stdout)["components"]
    assert [r["name"] for r in rows] == ["keeper"]
    pkg_node.wait_for(
        "keeper running",
        lambda: pkg_node.show("razar-keeper.service", "ActiveState")["ActiveState"] == "active",
    )


def test_upgrade_keeps_config_restarts_razard_adopts_components(
    pkg_node: bed.Node, debs: tuple[Path, Path]
) -> None:
    razard_before = int(pkg_node.show("razard.service", "MainPID")["MainPID"])
    keeper_before = int(pkg_node.show("razar-keeper.service", "MainPID")["MainPID"])
    dpkg(pkg_node, "-i", f"/root/{debs[1].name}")
    assert "0.1.2" in version(pkg_node)
    assert pkg_node.run(["cat", "/etc/razard/razard.toml"]).stdout == CONFIG
    props = pkg_node.show("razard.service", "ActiveState", "MainPID")
    assert props["ActiveState"] == "active"
    assert int(props["MainPID"]) not in (0, razard_before)  # runs the new code
    assert int(pkg_node.show("razar-keeper.service", "MainPID")["MainPID"]) == keeper_before
    started = pkg_node.journal("_SYSTEMD_UNIT=razard.service", "RAZAR_EVENT=razard_starting")
    assert re.search(r"razard 0\.1\.2", started), started


def test_remove_stops_razard_keeps_config(pkg_node: bed.Node) -> None:
    dpkg(pkg_node, "-r", "razar")
    assert pkg_node.systemctl("is-active", "razard", check=False).stdout.strip() != "active"
    assert pkg_node.run(["test", "-e", "/usr/bin/razard"], check=False).returncode != 0
    assert pkg_node.run(["cat", "/etc/razard/razard.toml"]).stdout == CONFIG
    assert pkg_node.run(["test", "-d", "/var/lib/razard"], check=False).returncode == 0


def test_purge_removes_config_and_state(pkg_node: bed.Node) -> None:
    dpkg(pkg_node, "-P", "razar")
    for path in ("/etc/razard", "/var/lib/razard", "/opt/razar"):
        assert pkg_node.run(["test", "-e", path], check=False).returncode != 0, path
    assert pkg_node.run(["dpkg-query", "-W", "razar"], check=False).returncode != 0

"""The root healer on real veth links in network namespaces this test makes.

Each test gets a fresh pair: namespace ``razar-<random>-a`` holds ``vA``
(10.250.N.1/24), ``razar-<random>-b`` holds its peer ``vB`` (10.250.N.2/24).
The healer runs as a separate process (``python -m agents.healing.root`` or
the script in ``scripts/chakra_healing/``) inside namespace A, as razard would
start it. The host's own links are never touched: every test checks that the
host namespace's links keep their flags and state.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "chakra_healing" / "root_restore_network.sh"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the test makes network namespaces and veth links"
    if shutil.which("ip") is None:
        return "needs ip (iproute2)"
    if shutil.which("ping") is None:
        return "needs ping (iputils-ping)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"ip netns is unavailable here: {probe.stderr.strip()}"
    return None


_REASON = _skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(60),
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command (argv, no shell) for the test's own set-up and checks."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=check)


def host_links() -> dict[str, str]:
    """The host namespace's links: name -> ``<flags> state X``, from ``ip -o link show``."""
    links: dict[str, str] = {}
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        m = re.match(r"\d+: ([^:@]+)[^:]*: <([^>]*)>.* state (\S+)", line)
        if m:
            links[m.group(1)] = f"<{m.group(2)}> state {m.group(3)}"
    return links


@dataclass
class Pair:
    """A veth pair across two namespaces, with the helpers the tests need."""

    ns_a: str
    ns_b: str
    addr_a: str
    addr_b: str
    state_dir: Path

    def link(self, ns: str | None = None, dev: str = "vA") -> dict[str, Any]:
        out = sh("ip", "-n", ns or self.ns_a, "-j", "addr", "show", "dev", dev).stdout
        link: dict[str, Any] = json.loads(out)[0]
        return link

    def flags(self, ns: str | None = None, dev: str = "vA") -> list[str]:
        return list(self.link(ns, dev)["flags"])

    def addresses(self, ns: str | None = None, dev: str = "vA") -> list[str]:
        return [a["local"] for a in self.link(ns, dev)["addr_info"] if a.get("scope") == "global"]

    def set_down(self) -> None:
        sh("ip", "-n", self.ns_a, "link", "set", "dev", "vA", "down")

    def pings(self) -> bool:
        """Our own check, independent of the healer: does B answer from A over vA?"""
        ran = sh(
            "ip", "netns", "exec", self.ns_a,
            "ping", "-n", "-c", "1", "-W", "1", "-I", "vA", self.addr_b,
            check=False,
        )  # fmt: skip
        return ran.returncode == 0

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAZAR_")}
        env.update(
            RAZAR_LAYER="root",
            RAZAR_COMPONENT="network",
            RAZAR_STATE_DIR=str(self.state_dir),
            RAZAR_ROOT_INTERFACE="vA",
            RAZAR_ROOT_NETNS=self.ns_a,
            RAZAR_ROOT_TARGET=self.addr_b,
            RAZAR_ROOT_NETWORK_MANAGER="none",
            RAZAR_ROOT_SETTLE="2",
            RAZAR_ROOT_PING_TIMEOUT="1",
            RAZAR_ROOT_PING_COUNT="1",
        )
        env.update(extra)
        return env

    def resets(self) -> list[float]:
        path = self.state_dir / "healers" / "root_restore_network" / "resets.json"
        if not path.exists():
            return []
        return list(json.loads(path.read_text())["times"])


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    """A fresh veth pair in two new namespaces, both ends up and addressed; removed after.

    Also checks, after teardown, that the host's links kept their flags and
    state and that neither end ever showed up in the host namespace.
    """
    before = host_links()
    tag = secrets.token_hex(3)
    net = 1 + secrets.randbelow(254)
    p = Pair(
        f"razar-{tag}-a", f"razar-{tag}-b", f"10.250.{net}.1", f"10.250.{net}.2", tmp_path / "st"
    )
    made: list[str] = []
    try:
        for ns in (p.ns_a, p.ns_b):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        # both ends are created directly inside their namespaces: never in the host's
        sh(
            "ip", "link", "add", "name", "vA", "netns", p.ns_a,
            "type", "veth", "peer", "name", "vB", "netns", p.ns_b,
        )  # fmt: skip
        sh("ip", "-n", p.ns_a, "addr", "add", f"{p.addr_a}/24", "dev", "vA")
        sh("ip", "-n", p.ns_b, "addr", "add", f"{p.addr_b}/24", "dev", "vB")
        sh("ip", "-n", p.ns_a, "link", "set", "dev", "vA", "up")
        sh("ip", "-n", p.ns_b, "link", "set", "dev", "vB", "up")
        # a link just set up carries nothing until the kernel's link watch activates it
        # (up to a second later, more on a busy machine)
        deadline = time.monotonic() + 10
        while not p.pings() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert p.pings(), "the fresh pair should answer before any test breaks it"
        yield p
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)
    after = host_links()
    assert "vA" not in after and "vB" not in after
    assert {name: after.get(name) for name in before} == before


def heal(pair: Pair, *args: str, script: bool = False, **extra: str) -> tuple[int, dict[str, Any]]:
    """Run the healer as razard would; its exit status and its one JSON object."""
    if script:
        argv = [str(SCRIPT), *args]
        env = pair.env(RAZAR_PYTHON=sys.executable, **extra)
    else:
        argv = [sys.executable, "-m", "agents.healing.root", *args]
        env = pair.env(**extra)
    ran = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=45)
    lines = ran.stdout.splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {ran.stdout!r} (stderr {ran.stderr!r})"
    return ran.returncode, json.loads(lines[0])


def test_healthy_link_is_confirmed_and_nothing_changes(pair: Pair) -> None:
    flags, addresses = pair.flags(), pair.addresses()
    rc, out = heal(pair)
    assert rc == 0, out
    assert out["result"] == "healed" and out["healed_by"] == "confirm"
    assert [s["step"] for s in out["steps"]] == ["confirm"]
    assert not any(s["changed"] for s in out["steps"])
    d = out["details"]
    assert d["interface"] == "vA" and d["netns"] == pair.ns_a and d["manager"] == "none"
    assert d["carrier"] is True and d["reachable"] is True and d["target"] == pair.addr_b
    assert d["addresses"] == [f"{pair.addr_a}/24"]
    assert d["rate_limit"] == "0/6 in the last 1h"
    assert pair.resets() == []
    assert pair.flags() == flags and pair.addresses() == addresses


@pytest.mark.parametrize("how", ["module", "script"])
def test_link_set_down_comes_back_by_bounce(pair: Pair, how: str) -> None:
    pair.set_down()
    assert "UP" not in pair.flags() and not pair.pings()
    rc, out = heal(pair, script=how == "script")
    assert rc == 0, out
    assert out["result"] == "healed" and out["healed_by"] == "bounce"
    steps = {s["step"]: s for s in out["steps"]}
    assert steps["confirm"]["ok"] is False and "link down" in steps["confirm"]["detail"]
    assert steps["renew"]["detail"].startswith("skipped") and not steps["renew"]["changed"]
    assert steps["bounce"]["ok"] and steps["bounce"]["changed"]
    assert "restart" not in steps  # the ladder stopped at the rung that worked
    assert out["details"]["rate_limit"] == "1/6 in the last 1h"
    assert {"UP", "LOWER_UP"} <= set(pair.flags())
    assert pair.addresses() == [pair.addr_a]
    assert pair.pings()
    # safe to run twice: the second run finds it healthy and changes nothing
    rc, again = heal(pair, script=how == "script")
    assert rc == 0 and again["healed_by"] == "confirm"
    assert len(pair.resets()) == 1


def test_unreachable_target_on_a_healthy_link_is_not_healed(pair: Pair) -> None:
    sh("ip", "-n", pair.ns_b, "addr", "flush", "dev", "vB")  # nobody answers for addr_b now
    rc, out = heal(pair)
    assert rc == 1, out
    assert out["result"] == "not_healed" and out["healed_by"] is None
    assert f"target {pair.addr_b} unreachable" in out["reason"]
    assert "link up" in out["reason"] and f"address {pair.addr_a}/24" in out["reason"]
    assert out["details"]["reachable"] is False and out["details"]["carrier"] is True
    assert {"UP", "LOWER_UP"} <= set(pair.flags())
    assert pair.addresses() == [pair.addr_a]


def test_peer_down_is_not_healed_and_the_peer_is_left_alone(pair: Pair) -> None:
    sh("ip", "-n", pair.ns_b, "link", "set", "dev", "vB", "down")
    rc, out = heal(pair)
    assert rc == 1, out
    assert "no carrier" in out["reason"]
    assert "UP" not in pair.flags(pair.ns_b, "vB")  # only RAZAR_ROOT_INTERFACE is touched
    assert "UP" in pair.flags()  # the bounce left vA up, as it found it


def test_rate_limit_is_kept_across_runs(pair: Pair) -> None:
    pair.set_down()
    rc, first = heal(pair, RAZAR_ROOT_MAX_RESETS_PER_HOUR="1")
    assert rc == 0 and first["healed_by"] == "bounce", first
    assert len(pair.resets()) == 1
    pair.set_down()
    rc, second = heal(pair, RAZAR_ROOT_MAX_RESETS_PER_HOUR="1")
    assert rc == 1, second
    assert second["reason"].startswith("rate limited: 1/1 resets in the last 1h")
    assert not any(s["changed"] for s in second["steps"])
    assert "UP" not in pair.flags()
    assert len(pair.resets()) == 1


def test_dry_run_on_a_down_link_plans_and_changes_nothing(pair: Pair) -> None:
    pair.set_down()
    rc, out = heal(pair, "--dry-run")
    assert rc == 1, out
    assert out["dry_run"] is True and out["result"] == "not_healed"
    assert [p.split(":")[0] for p in out["plan"]] == ["bounce"]
    assert f"ip -n {pair.ns_a} link set dev vA down" in out["plan"][0]
    assert not any(s["changed"] for s in out["steps"])
    assert "UP" not in pair.flags()
    assert pair.resets() == []
    rc, planned = heal(pair, "--dry-run", RAZAR_ROOT_NETWORK_MANAGER="networkd")
    assert [p.split(":")[0] for p in planned["plan"]] == ["renew", "bounce", "restart"]
    assert "UP" not in pair.flags()


def test_missing_interface_is_not_applicable(pair: Pair) -> None:
    rc, out = heal(pair, RAZAR_ROOT_INTERFACE="vNope")
    assert rc == 2, out
    assert out["result"] == "not_applicable" and out["reason"] == "no such link vNope"


def test_no_interface_setting_is_not_applicable(pair: Pair) -> None:
    rc, out = heal(pair, "--dry-run", script=True, RAZAR_ROOT_INTERFACE="")
    assert rc == 2, out
    assert out["reason"].startswith("no interface configured")

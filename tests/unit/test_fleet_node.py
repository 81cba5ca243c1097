"""razard's side of the fleet without etcd: signatures, artifact hashes, where the
shared-fixes rung goes in the roster, and which layer healers a fleet gates."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from razard.fleet.config import FleetConfig
from razard.fleet.core import Fleet
from razard.fleet.node import FIX_AGENT, FleetNode, artifact_hash, failure_signature, with_fix_rung
from razard.journal import EventLog
from razard.repair.handover import RosterEntry


def test_failure_signature_ignores_what_changes_between_nodes() -> None:
    a = failure_signature("api", "unit razar-api.service died: status=4 pid 4121 at 10:00:01")
    b = failure_signature("api", "unit razar-api.service died: status=4 pid 977 at 11:02:03")
    assert a == b and a.startswith("api: ")
    assert failure_signature("web", "unit razar-api.service died: status=4") != a


def test_artifact_hash_is_of_the_bytes_and_paths() -> None:
    one = artifact_hash({"app.conf": "mode = brokn\n"})
    assert one == artifact_hash({"app.conf": "mode = brokn\n"})
    assert one != artifact_hash({"app.conf": "mode = brokn \n"})
    assert one != artifact_hash({"other.conf": "mode = brokn\n"})
    assert len(one) == 64 and int(one, 16) >= 0


def _entry(name: str, remote: bool) -> RosterEntry:
    return RosterEntry(
        name=name, kind="registry" if not remote else "openai", factory=None, remote=remote
    )


def _node(tmp_path: Path, **kw: object) -> FleetNode:
    cfg = FleetConfig(
        enabled=True,
        endpoints=("http://127.0.0.1:1",),  # nothing listens: etcd unreachable
        node="n1",
        slot_wait=0.0,
        timeout=0.5,
        **kw,  # type: ignore[arg-type]
    )
    return FleetNode(Fleet(cfg), EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no")))


def test_the_fix_rung_goes_after_the_registry_and_before_remote_agents(tmp_path: Path) -> None:
    node = _node(tmp_path)
    roster = [_entry("registry", False), _entry("crown", True), _entry("rstar", True)]
    assert [e.name for e in with_fix_rung(roster, node)] == [
        "registry",
        FIX_AGENT,
        "crown",
        "rstar",
    ]
    assert [e.name for e in with_fix_rung(roster[1:], node)] == [FIX_AGENT, "crown", "rstar"]
    assert with_fix_rung(roster, None) == roster
    assert with_fix_rung([], node) == []  # no agents configured: no repair rung appears


@pytest.mark.parametrize(
    ("layer", "settings", "allowed", "env"),
    [
        ("crown", {}, False, {}),
        ("sacral", {}, True, {}),  # a flush: not gated in this fleet
        ("sacral", {"RAZAR_GPU_ALLOW_RESET": "yes"}, False, {}),  # may reset: gated
        ("root", {}, True, {"RAZAR_ROOT_NETWORK_MANAGER": "none"}),  # a link bounce only
        ("heart", {}, True, {}),
        ("throat", {}, True, {}),
    ],
)
async def test_which_healers_are_gated_and_what_a_denial_leaves(
    tmp_path: Path, layer: str, settings: dict[str, str], allowed: bool, env: dict[str, str]
) -> None:
    node = _node(
        tmp_path,
        gated=frozenset({"crown_full_restart", "sacral_gpu_reset", "root_network_restart"}),
    )
    try:
        async with node.healer_gate(layer, "app", settings) as verdict:
            assert verdict.allowed is allowed
            assert dict(verdict.env) == env
            if not allowed:
                assert "etcd unreachable" in verdict.reason
    finally:
        await node.stop()
    log = tmp_path / "razar.log"
    lines = log.read_text().splitlines() if log.exists() else []
    denied = [ln for ln in lines if "fleet_budget_denied" in ln]
    assert bool(denied) == (not allowed or bool(env))  # the journal says every denial


async def test_the_observer_takes_the_failure_from_the_event_s_error_field(tmp_path: Path) -> None:
    """The signature noted fleet-wide is of the runner's ``error`` field, not of the
    message's text (which goes on with the ladder's decision); no field, nothing noted."""
    node = _node(tmp_path)
    noted: list[tuple[str, str]] = []

    async def record_signature(signature: str, component: str = "") -> bool:
        noted.append((signature, component))
        return False

    node.fleet.record_signature = record_signature  # type: ignore[method-assign]
    node.events.observers.append(node.observe)
    node.events.emit(
        "component_failed",
        "exited: status=4 (pid 4121); next: restart 1 of 3",
        component="api",
        error="exited: status=4 (pid 4121)",
    )
    node.events.emit("component_failed", "said by someone else; next: x", component="web")
    for _ in range(10):  # the note runs as a task of the loop
        await asyncio.sleep(0)
    assert noted == [(failure_signature("api", "exited: status=4 (pid 977)"), "api")]
    await node.stop()


async def test_a_breaker_seen_clear_again_is_said_once(tmp_path: Path) -> None:
    """Each change of the breaker's keys the watch sees: only the last key going (an
    operator's reset of the breaker and every stopped signature) says fleet_breaker_reset."""
    node = _node(tmp_path)
    node.fleet.on_breaker_cleared = node.breaker_reset
    fleet = node.fleet
    sig = fleet.breaker_sigs + "ab" * 8
    fleet._breaker_seen({sig})
    assert not fleet.breaker_tripped
    fleet._breaker_seen({sig, fleet.breaker_key})
    assert fleet.breaker_tripped
    fleet._breaker_seen({sig})  # half of one reset's deletes
    fleet._breaker_seen(set())
    fleet._breaker_seen(set())  # read again after the watch was opened anew
    assert not fleet.breaker_tripped
    lines = (tmp_path / "razar.log").read_text().splitlines()
    said = [json.loads(ln) for ln in lines if "fleet_breaker_reset" in ln]
    assert len(said) == 1 and said[0]["node"] == "n1"
    await node.stop()

"""The fleet core against a real etcd on loopback: membership, the budget, the breaker,
shared fixes, garbage under the prefix, an unreachable or refusing etcd, and a three-member
cluster losing its leader and then its quorum."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from razard.fleet.config import Budget, FleetConfig
from razard.fleet.core import Fleet, FleetStore, probe
from razard.fleet.etcd import Etcd, EtcdAuthError, EtcdUnavailable
from tests.etcd import EtcdCluster, make_tls

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("etcd") is None or shutil.which("etcdctl") is None,
        reason="needs etcd (apt-get install etcd-server etcd-client; scripts/setup.sh test)",
    ),
]


@pytest.fixture(scope="module")
def etcd1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd1"), 1)
    cluster.start()
    yield cluster
    cluster.stop()


def make_cfg(endpoints: list[str], node: str, **kw: object) -> FleetConfig:
    base = FleetConfig(
        enabled=True,
        endpoints=tuple(endpoints),
        node=node,
        lease_ttl=3.0,
        timeout=2.0,
        slot_wait=10.0,
        breaker_threshold=2,
        breaker_window=60.0,
        fix_failures=2,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: one etcd holds several fleets."""
    return f"/t-{uuid.uuid4().hex[:8]}/"


@pytest.fixture
async def fleets(etcd1: EtcdCluster, prefix: str) -> AsyncIterator[list[Fleet]]:
    """Three started nodes a, b, c sharing the module's etcd under this test's prefix."""
    made = [Fleet(make_cfg(etcd1.endpoints, n, prefix=prefix)) for n in "abc"]
    for f in made:
        assert await f.start(), f.last_error
    yield made
    for f in made:
        await f.stop()


async def test_members_are_listed_with_their_counts_and_vanish_with_their_lease(
    etcd1: EtcdCluster, prefix: str
) -> None:
    a = Fleet(make_cfg(etcd1.endpoints, "a", prefix=prefix, lease_ttl=2.0))
    b = Fleet(make_cfg(etcd1.endpoints, "b", prefix=prefix))
    assert await a.start() and await b.start()
    assert await a.update(healthy=3, restarting=1, quarantined=0, chakra="aligned")
    store = FleetStore(make_cfg(etcd1.endpoints, "reader", prefix=prefix))
    status = await store.status()
    nodes = {n["node"]: n for n in status["nodes"]}
    assert set(nodes) == {"a", "b"}
    assert (nodes["a"]["healthy"], nodes["a"]["restarting"], nodes["a"]["chakra"]) == (
        3,
        1,
        "aligned",
    )
    await b.stop()  # a clean stop revokes the lease: gone at once
    assert {n["node"] for n in (await store.status())["nodes"]} == {"a"}
    # a dies without a word: its keepalive stops, the lease (2 s) expires
    assert a._task is not None
    a._task.cancel()
    lease = a.lease
    deadline = asyncio.get_running_loop().time() + 2.0 + 1.5
    while asyncio.get_running_loop().time() < deadline:
        if not (await store.status())["nodes"]:
            break
        await asyncio.sleep(0.1)
    assert (await store.status())["nodes"] == [], "a dead node's record outlived its lease"
    assert await store.etcd.keepalive(lease) == 0
    await a.close()
    await store.close()


def max_concurrent(events: list[tuple[str, str]]) -> tuple[int, int]:
    """From etcd's ordered history of slot keys: the most held at once, and how many taken."""
    held: set[str] = set()
    most = taken = 0
    for kind, key in events:
        if kind == "PUT":
            held.add(key)
            taken += 1
        else:
            held.discard(key)
        most = max(most, len(held))
    return most, taken


async def test_a_budget_of_one_is_never_held_twice_by_three_contenders(
    fleets: list[Fleet], prefix: str
) -> None:
    start_rev = (await fleets[0].etcd.range(prefix))[1]
    order: list[str] = []

    async def node(f: Fleet) -> None:
        for _ in range(3):
            async with f.slot("sacral_gpu_flush", 15.0) as grant:
                assert grant, grant.reason
                order.append(f.node)
                await asyncio.sleep(0.05)

    await asyncio.gather(*(node(f) for f in fleets))
    history = await fleets[0].etcd.history(f"{prefix}slots/", start_rev + 1)
    most, taken = max_concurrent([(e.kind, e.key) for e in history])
    assert taken == 9 and len(order) == 9
    assert most == 1, "two nodes held the only slot at once"
    # a plain restart is not gated: no slot, no wait
    grant = await fleets[0].acquire("restart")
    assert grant and grant.reason == "not gated" and not grant.key


async def test_a_dead_holders_slot_frees_when_its_lease_ends(
    etcd1: EtcdCluster, prefix: str
) -> None:
    ttl = 2.0
    a = Fleet(make_cfg(etcd1.endpoints, "a", prefix=prefix, lease_ttl=ttl))
    b = Fleet(make_cfg(etcd1.endpoints, "b", prefix=prefix))
    assert await a.start() and await b.start()
    held = await a.acquire("crown_full_restart")
    assert held and held.key
    busy = await b.acquire("crown_full_restart", 0.3)
    assert not busy and busy.reason == "budget full"
    assert a._task is not None
    a._task.cancel()  # a dies holding the slot
    grant = await b.acquire("crown_full_restart", ttl + 5)
    assert grant, grant.reason
    assert grant.waited <= ttl + 1.0, f"the slot took {grant.waited:.1f}s to free"
    assert await b.etcd.get(held.key) is None
    await b.release(grant)
    # revoked (razard stopped cleanly or an operator revoked it): freed at once
    c = Fleet(make_cfg(etcd1.endpoints, "c", prefix=prefix))
    assert await c.start()
    g1 = await c.acquire("patch_apply")
    assert g1
    await c.etcd.revoke(c.lease)
    g2 = await b.acquire("patch_apply", 2.0)
    assert g2 and g2.waited < 2.0
    await b.release(g2)
    # c's lease is gone under it: its next slot comes with a new lease, not an error
    old_lease = c.lease
    g3 = await c.acquire("patch_apply", 2.0)
    assert g3, g3.reason
    assert c.lease not in (0, old_lease) and c.reachable
    assert {n["node"] for n in await c.live_nodes()} >= {"b", "c"}
    await b.stop()
    await c.stop()
    await a.close()


async def test_a_lease_lost_at_the_deadline_is_no_outage_and_the_next_slot_rejoins(
    etcd1: EtcdCluster, prefix: str
) -> None:
    """A lease revoked under a node that asks with no time to wait: that ask is denied,
    but etcd answered, so the node is not marked unreachable and its next ask joins again
    with a new lease (it neither spins nor answers "etcd unreachable")."""
    a = Fleet(make_cfg(etcd1.endpoints, "a", prefix=prefix, lease_ttl=60.0))
    assert await a.start()
    try:
        await a.etcd.revoke(a.lease)  # an operator, or an expiry while etcd was away
        first = await a.acquire("patch_apply", 0.0)
        assert not first and a.lease == 0
        assert a.reachable, a.last_error
        second = await a.acquire("patch_apply", 5.0)
        assert second, second.reason
        assert second.reason == "slot" and a.lease
        kv = await a.etcd.get(second.key)
        assert kv is not None and kv.lease == a.lease  # held under the new lease
        await a.release(second)
    finally:
        await a.stop()


async def test_percent_budget_counts_live_nodes(fleets: list[Fleet], prefix: str) -> None:
    cfg = replace(fleets[0].cfg, budget=Budget(count=0, percent=67), node="d")
    async with Fleet(cfg) as d:  # 4 live nodes: ceil(2.68) = 3 slots
        grants = [await d.acquire("sacral_gpu_reset", 0.2) for _ in range(4)]
        assert [bool(g) for g in grants] == [True, True, True, False]
        status = await d.status()
        assert status["budget"] == {"configured": "67%", "slots": 3, "held": 3}


async def test_the_breaker_trips_on_more_than_k_nodes_and_only_a_reset_clears_it(
    fleets: list[Fleet], prefix: str
) -> None:
    a, b, c = fleets  # breaker_threshold = 2: a third node acting trips it
    assert not await a.record_action("sacral_gpu_flush", "trainer")
    assert not await b.record_action("quarantine", "trainer")
    held = await a.acquire("sacral_gpu_flush", 0.5)
    assert held
    await a.release(held)
    tripped = await asyncio.gather(c.record_action("crown_full_restart", "x"))
    assert list(tripped) == [True]  # gather's result is a list (typeshed says tuple)
    assert not await b.record_action("sacral_gpu_flush", "y"), "tripped twice: two alerts"
    # every node's view (STATUS=, razar_fleet_breaker_tripped) follows etcd with no slot
    # asked for: the breaker's watch
    assert await _until(lambda: all(f.breaker_tripped for f in fleets)), [
        f.breaker_tripped for f in fleets
    ]
    for f in fleets:
        denied = await f.acquire("sacral_gpu_reset", 0.5)
        assert not denied and denied.reason == "breaker tripped"
    state = (await a.status())["breaker"]
    assert state["tripped"] and set(state["nodes"]) == {"a", "b", "c"}
    await asyncio.sleep(0.5)
    assert (await a.breaker())["tripped"], "the breaker cleared itself"
    assert (await a.reset_breaker())["breaker_keys"] == 1
    assert not (await a.breaker())["tripped"]
    assert await _until(lambda: not any(f.breaker_tripped for f in fleets)), "reset not seen"
    assert await b.acquire("sacral_gpu_reset", 5.0)


async def _until(cond: Callable[[], bool], wait: float = 10.0) -> bool:
    """Whether ``cond`` came true within ``wait`` seconds (checked every 50 ms)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while not cond():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_the_same_signature_on_k_nodes_stops_patching_of_that_signature(
    fleets: list[Fleet],
) -> None:
    a, b, _ = fleets
    sig = "trainer: CUDA error: an illegal memory access"
    assert not await a.record_signature(sig, "trainer")
    assert not await a.record_signature(sig, "trainer"), "one node twice is still one node"
    assert await b.record_signature(sig, "trainer")
    assert await a.signature_stopped(sig)
    denied = await a.acquire("patch_apply", 0.3, signature=sig)
    assert not denied and "signature" in denied.reason
    other = await a.acquire("patch_apply", 1.0, signature="something else")
    assert other, other.reason
    await a.release(other)
    sigs = (await a.breaker())["signatures"]
    assert [s["signature"] for s in sigs] == [sig]
    await a.reset_breaker()
    assert not await a.signature_stopped(sig)


async def test_a_fix_shared_by_one_node_is_found_by_another_and_withdrawn_after_failures(
    fleets: list[Fleet],
) -> None:
    a, b, c = fleets
    sig, art = "trainer: KeyError 'lr'", "ab" * 32
    diff = (
        "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-lr = cfg['lr']\n+lr = cfg.get('lr', 1e-3)\n"
    )
    published = await a.publish_fix("trainer", sig, art, diff)
    assert published.node == "a" and published.kept == ("a",)
    found = await b.find_fixes("trainer", sig, art, node="b")
    assert [f.diff for f in found] == [diff]
    assert await b.find_fixes("trainer", sig, "cd" * 32) == []  # other bytes: not this fix
    assert await b.find_fixes("trainer", "another signature", art) == []
    assert (await b.fix_kept(found[0])).kept == ("a", "b")  # type: ignore[union-attr]
    assert b.counters.fixes_kept == 1
    again = await c.publish_fix("trainer", sig, art, diff)  # c found the same fix itself
    assert again.kept == ("a", "b", "c") and c.counters.fixes_tried == 0
    after_b = await b.fix_failed(found[0])
    assert after_b is not None and after_b.failures == ("b",) and not after_b.withdrawn
    assert await b.find_fixes("trainer", sig, art, node="b") == []  # not again on b
    assert len(await c.find_fixes("trainer", sig, art, node="c")) == 1
    after_c = await c.fix_failed(found[0])
    assert after_c is not None and after_c.withdrawn
    assert await a.find_fixes("trainer", sig, art, node="a") == []
    listed = await a.list_fixes()
    assert [(f.component, f.withdrawn, f.failures) for f in listed] == [
        ("trainer", True, ("b", "c"))
    ]


async def test_garbage_under_the_prefix_is_ignored_not_trusted(
    fleets: list[Fleet], prefix: str, tmp_path: Path, etcd1: EtcdCluster
) -> None:
    a = fleets[0]
    raw = Etcd(a.cfg.endpoints)
    await raw.put(f"{prefix}nodes/evil", b"\xff\xfe not json")
    await raw.put(f"{prefix}nodes/mallory", json.dumps({"node": "someone-else"}))
    await raw.put(f"{prefix}slots/x/sacral_gpu_flush/1", json.dumps({"node": "x"}))  # no lease
    await raw.put(f"{prefix}fixes/trainer/zz/yy/xx", "[1, 2, 3]")
    await raw.put(f"{prefix}fixes/trainer/a/b/c", json.dumps({"diff": 5, "component": []}))
    await raw.put(f"{prefix}unrelated/config", "{}")
    await raw.put(f"{prefix}breaker/signatures/zz", "\x00")
    status = await a.status()
    assert {n["node"] for n in status["nodes"]} == {"a", "b", "c"}
    assert status["slots"] == []
    assert f"{prefix}nodes/evil" in status["invalid_keys"]
    assert f"{prefix}unrelated/config" in status["invalid_keys"]
    assert await a.list_fixes() == []
    assert len(status["breaker"]["signatures"]) == 1  # a stopped signature, even unreadable
    grant = await a.acquire("sacral_gpu_flush", 1.0)  # a lease-less slot does not count
    assert grant, grant.reason
    # a record that looks like ours, written to repaint the operator's terminal
    lease = await raw.grant(30)
    evil = {"node": "mallory", "last_alert": "[/bold][red]\x1b[2J\x1b]0;owned\x07", "chakra": "\n"}
    await raw.put(f"{prefix}nodes/mallory", json.dumps(evil), lease)
    config = write_config(tmp_path, etcd1.endpoints, prefix)
    out = await asyncio.to_thread(cli, "razarctl", "fleet", "status", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "mallory" in out.stdout and "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "[/bold][red]" in out.stdout  # shown as text, not taken as markup
    await raw.revoke(lease)
    await raw.close()


async def test_an_unreachable_etcd_denies_gated_actions_unless_fail_open(
    free_port: int,
) -> None:
    cfg = make_cfg([f"http://127.0.0.1:{free_port}"], "lonely", timeout=1.0, prefix="/r/")
    f = Fleet(replace(cfg, fail_open=frozenset({"patch_apply"})))
    assert not await f.start(wait=1.5)
    assert not f.reachable and "127.0.0.1" in f.last_error
    denied = await f.acquire("sacral_gpu_flush", 5.0)
    assert not denied and denied.reason.startswith("etcd unreachable")
    allowed = await f.acquire("patch_apply")
    assert allowed and allowed.reason == "fail open" and not allowed.key
    assert await f.acquire("restart")  # never gated
    with pytest.raises(EtcdUnavailable, match="did not answer"):
        await f.status()
    reach = await probe(cfg)
    assert not reach.reachable and f"127.0.0.1:{free_port}" in reach.detail
    await f.stop()


def enable_auth(endpoint: str) -> None:
    """etcd auth on: root, and a user razar (password "right") allowed /razar/ only."""
    ctl = ["etcdctl", f"--endpoints={endpoint}"]
    env = {"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}
    for args in (
        ["user", "add", "root:rootpw"],
        ["user", "add", "razar:right"],
        ["role", "add", "razar"],
        ["role", "grant-permission", "razar", "--prefix=true", "readwrite", "/razar/"],
        ["user", "grant-role", "razar", "razar"],
        ["auth", "enable"],
    ):
        subprocess.run([*ctl, *args], env=env, check=True, capture_output=True, timeout=20)


async def test_wrong_credentials_are_refused_clearly(tmp_path: Path) -> None:
    cluster = EtcdCluster(tmp_path / "auth", 1)
    cluster.start()
    try:
        await asyncio.to_thread(enable_auth, cluster.endpoints[0])
        (tmp_path / "good").write_text("right\n")
        (tmp_path / "bad").write_text("wrong\n")
        base = make_cfg(cluster.endpoints, "n", prefix="/razar/", username="razar")
        good = Fleet(replace(base, password_file=tmp_path / "good"))
        assert await good.start(), good.last_error
        assert await good.acquire("sacral_gpu_flush", 1.0)
        await good.stop()
        bad = Fleet(replace(base, password_file=tmp_path / "bad"))
        assert not await bad.start()
        assert "authentication failed" in bad.last_error
        assert "wrong" not in bad.last_error
        denied = await bad.acquire("sacral_gpu_flush", 1.0)
        assert not denied and "authentication failed" in denied.reason
        with pytest.raises(EtcdAuthError):
            await bad.status()
        await bad.stop()
        anon = Fleet(replace(base, username="", password_file=None))
        assert not await anon.start()
        assert "user name is empty" in anon.last_error or "permission" in anon.last_error
        await anon.stop()
    finally:
        cluster.stop()


async def test_tls_with_the_right_ca_works_and_a_mismatch_says_so(tmp_path: Path) -> None:
    tls = await asyncio.to_thread(make_tls, tmp_path / "tls")
    other = await asyncio.to_thread(make_tls, tmp_path / "other")
    cluster = EtcdCluster(tmp_path / "e", 1, tls=tls)
    await asyncio.to_thread(cluster.start)
    try:
        base = make_cfg(cluster.endpoints, "n", prefix="/razar/")
        async with Fleet(replace(base, ca_file=tls[0])) as good:
            assert good.reachable, good.last_error
            assert await good.acquire("sacral_gpu_flush", 1.0)
        wrong = Fleet(replace(base, ca_file=other[0]))
        assert not await wrong.start()
        assert "TLS with etcd failed" in wrong.last_error
        assert "CERTIFICATE_VERIFY_FAILED" in wrong.last_error
        await wrong.stop()
        missing = Fleet(replace(base, ca_file=tmp_path / "nope.pem"))
        assert not await missing.start()
        assert "cannot load the fleet's TLS files" in missing.last_error
        await missing.stop()
    finally:
        await asyncio.to_thread(cluster.stop)


async def test_a_three_member_cluster_loses_its_leader_then_its_quorum_and_comes_back(
    tmp_path: Path,
) -> None:
    cluster = EtcdCluster(tmp_path / "c3", 3)
    cluster.start()
    try:
        cfg = make_cfg(cluster.endpoints, "n1", prefix="/razar/", lease_ttl=4.0, timeout=2.0)
        f = Fleet(cfg)
        assert await f.start()
        first_lease = f.lease
        leader = cluster.leader()
        cluster.kill(leader)  # the leader dies: the client goes on with the others
        grant = await f.acquire("sacral_gpu_flush", 10.0)
        assert grant, grant.reason
        await f.release(grant)
        assert await f.update(healthy=2)
        assert f.lease == first_lease
        # a majority gone: no quorum, every call fails with a clear error, gated actions denied
        other = next(i for i in range(3) if i != leader and cluster.members[i].proc)
        cluster.kill(other)
        with pytest.raises(EtcdUnavailable, match="did not answer"):
            await f.status()
        denied = await f.acquire("sacral_gpu_flush", 1.0)
        assert not denied and denied.reason.startswith("etcd unreachable")
        assert await f.acquire("restart")  # plain restarts go on
        # the members return: the fleet recovers by itself, with a new lease if the old expired
        cluster.start_member(leader)
        cluster.start_member(other)
        cluster.wait_healthy(30)
        assert await f.wait_reachable(20), f.last_error
        grant = await f.acquire("sacral_gpu_flush", 10.0)
        assert grant, grant.reason
        nodes = (await f.status())["nodes"]
        assert [n["node"] for n in nodes] == ["n1"]
        await f.stop()
    finally:
        cluster.stop()


BIN = Path(sys.executable).parent


def write_config(tmp_path: Path, endpoints: list[str], prefix: str) -> Path:
    config = tmp_path / "razard.toml"
    config.write_text(
        f'[razard]\nstate_dir = "{tmp_path / "state"}"\nbus = "user"\n\n'
        f"[fleet]\nendpoints = {json.dumps(endpoints)}\n"
        f'prefix = "{prefix}"\nnode = "ctl-node"\nbreaker_threshold = 1\ntimeout = 1.0\n'
    )
    return config


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )


async def test_a_watch_on_a_member_that_loses_its_leader_ends_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """The breaker's long watch asks etcd to require a leader: a member cut off from the
    others ends it ("no leader"), so the node reads again elsewhere instead of waiting
    on a silent stream until it is re-opened."""
    cluster = EtcdCluster(tmp_path / "c3", 3)
    cluster.start()
    try:
        etcd = Etcd(cluster.endpoints[:1], timeout=2.0)
        watching = asyncio.create_task(etcd.watch("/razar/breaker/fleet", 1, print, wait=60.0))
        await asyncio.sleep(0.5)
        assert not watching.done()
        cluster.kill(1)
        cluster.kill(2)
        with pytest.raises(EtcdUnavailable, match="no leader"):  # not the 60 s running out
            await watching
        await etcd.close()
    finally:
        cluster.stop()


async def test_operators_read_the_fleet_and_reset_the_breaker_with_razarctl(
    fleets: list[Fleet], etcd1: EtcdCluster, prefix: str, tmp_path: Path, free_port: int
) -> None:
    a, b, c = fleets
    await a.update(healthy=4, quarantined=1, chakra="misaligned", last_alert="gpu0 Xid 79")
    held = await b.acquire("sacral_gpu_flush")
    assert held
    await a.publish_fix("trainer", "trainer: KeyError 'lr'", "ab" * 32, "--- a\n+++ b\n")
    for f in (a, b, c):  # threshold 2 in these nodes' config: the third trips it
        await f.record_action("crown_full_restart", "x")
    config = write_config(tmp_path, etcd1.endpoints, prefix)

    online = await asyncio.to_thread(
        cli, "razard", "check-config", "--no-host", "--online", str(config)
    )
    assert online.returncode == 0, online.stderr
    assert "etcd 3.4" in online.stdout and "answers" in online.stdout
    assert "a change to [fleet] takes effect when razard restarts" in online.stdout

    st = await asyncio.to_thread(
        cli, "razarctl", "fleet", "status", "--json", "--config", str(config)
    )
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    nodes = {n["node"]: n for n in status["nodes"]}
    assert set(nodes) == {"a", "b", "c"}
    assert (nodes["a"]["quarantined"], nodes["a"]["last_alert"]) == (1, "gpu0 Xid 79")
    assert [(s["node"], s["action"]) for s in status["slots"]] == [("b", "sacral_gpu_flush")]
    assert status["breaker"]["tripped"]

    text = await asyncio.to_thread(cli, "razarctl", "fleet", "status", "--config", str(config))
    assert text.returncode == 0, text.stderr
    assert "TRIPPED" in text.stdout and "sacral_gpu_flush since" in text.stdout, text.stdout

    fixes = await asyncio.to_thread(cli, "razarctl", "fleet", "fixes", "--config", str(config))
    assert fixes.returncode == 0 and "trainer" in fixes.stdout and "offered" in fixes.stdout

    reset = await asyncio.to_thread(
        cli, "razarctl", "fleet", "breaker", "reset", "--config", str(config)
    )
    assert reset.returncode == 0 and "1 trip(s) cleared" in reset.stdout
    assert not (await a.breaker())["tripped"]

    # etcd away: a clear error and a non-zero exit, from both
    (tmp_path / "dead").mkdir()
    dead = write_config(tmp_path / "dead", [f"http://127.0.0.1:{free_port}"], prefix)
    off = await asyncio.to_thread(cli, "razard", "check-config", "--no-host", "--online", str(dead))
    assert off.returncode == 1 and "etcd does not answer" in off.stderr
    st = await asyncio.to_thread(cli, "razarctl", "fleet", "status", "--config", str(dead))
    assert st.returncode == 1 and f"127.0.0.1:{free_port}" in st.stderr
    none = await asyncio.to_thread(
        cli, "razarctl", "fleet", "status", "--config", str(config.with_name("x.toml"))
    )
    assert none.returncode == 1 and "x.toml" in none.stderr


async def test_the_ladders_gate_writes_why_an_action_waited_or_was_denied(
    fleets: list[Fleet], tmp_path: Path
) -> None:
    from razard.fleet.gate import fleet_gate
    from razard.journal import EventLog

    a, b, _ = fleets
    log = tmp_path / "razar.log"
    events = EventLog(log, socket_path=str(tmp_path / "no-journal"))
    async with fleet_gate(None, events, "sacral_gpu_flush", component="trainer") as free:
        assert free and free.grant.reason == "no fleet"
    assert not log.exists()  # no [fleet]: nothing changes, nothing written
    async with fleet_gate(a, events, "sacral_gpu_flush", component="trainer") as held:
        assert held and held.grant.key
        async with fleet_gate(
            b, events, "crown_full_restart", component="api", layer="crown", wait=0.3
        ) as denied:
            assert not denied
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["component"]) for r in lines] == [
        ("fleet_budget_wait", "api"),
        ("fleet_budget_denied", "api"),
    ]
    assert lines[1]["reason"] == "budget full" and lines[1]["action"] == "crown_full_restart"
    async with fleet_gate(b, events, "crown_full_restart", component="api", wait=2.0) as ok:
        assert ok  # a's slot was given back when its block ended
    async with fleet_gate(b, events, "restart", component="api") as plain:
        assert plain and plain.grant.reason == "not gated"


async def test_open_fleet_needs_no_etcd_without_a_fleet_table_and_reports_an_absent_one(
    free_port: int,
) -> None:
    from razard.fleet.gate import open_fleet, status_note

    assert await open_fleet(FleetConfig()) is None
    assert status_note(None) == ""
    f = await open_fleet(make_cfg([f"http://127.0.0.1:{free_port}"], "n", timeout=0.5))
    assert f is not None and not f.reachable
    assert status_note(f) == "fleet: etcd unreachable, disruptive actions denied"
    await f.stop()

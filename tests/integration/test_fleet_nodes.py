"""Several real razard processes, each with its own private systemd user manager and state
directory, sharing one real etcd on loopback: the budget keeps disruptive healers apart, a
dead holder's slot frees itself, one signature on many nodes trips the breaker once, a fix
kept on one node heals another, and losing etcd denies gated actions but not restarts.

The disruptive action is a crown full restart whose healer (the layer's configured
``healer``) writes down when it ran: gated like the real one, safe on this host."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from razard.demo import razard_unit
from razard.fleet.config import FleetConfig
from razard.fleet.core import Fleet, FleetStore
from razard.fleet.node import failure_signature
from razard.usermanager import UserManager, start_user_manager
from tests.etcd import EtcdCluster
from tests.integration.fake_openai import completion
from tests.integration.harness import Razard, crash_loop, py, script, wait_for
from tests.integration.test_escalation_alertmanager import alertmanager  # noqa: F401
from tests.integration.test_repair import APP, ThreadedFake, _edit

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("etcd") is None,
        reason="needs etcd (apt-get install etcd-server etcd-client; scripts/setup.sh test)",
    ),
]

TTL = 3.0  # lease TTL of every node here: a dead node's slot is free within it

CROWN_HEALER = """\
#!{py}
import json, os, pathlib, time
log = pathlib.Path(os.environ["RAZAR_STATE_DIR"]) / "crown-runs.jsonl"
start = time.time()
time.sleep(float(os.environ.get("RAZAR_TEST_SLEEP", "1")))
with log.open("a") as f:
    f.write(json.dumps({{"start": start, "end": time.time()}}) + "\\n")
print(json.dumps({{"reason": "test crown healer: nothing restarted", "steps": []}}))
raise SystemExit(1)
"""


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), 1)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def managers(journald: object) -> Iterator[list[UserManager]]:
    """Three private user managers: one per node."""
    made: list[UserManager] = []
    try:
        for _ in range(3):
            made.append(start_user_manager())
        yield made
    finally:
        for um in made:
            um.stop()


@pytest.fixture
def nodes(managers: list[UserManager]) -> Iterator[list[Razard]]:
    """The razards of this test (made with `node`); stopped and their units removed after."""
    made: list[Razard] = []
    yield made
    for r in made:
        r.stop()
        r.um.systemctl("stop", "razar-heal-*", check=False)
        r.cleanup_units([f"razar-{n}.service" for n in ("crown-app", "crash", "app")])


def fleet_toml(endpoints: list[str], prefix: str, name: str, **keys: Any) -> str:
    settings = {
        "endpoints": endpoints,
        "prefix": prefix,
        "node": name,
        "budget": 1,
        "lease_ttl": TTL,
        "slot_wait": 30.0,
        "timeout": 2.0,
        "breaker_threshold": 10,
        **keys,
    }
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"\n[fleet]\n{body}\n"


def node(nodes: list[Razard], um: UserManager, base: Path, components: str, fleet: str) -> Razard:
    base.mkdir(parents=True, exist_ok=True)
    r = Razard(um, base, components + fleet)
    nodes.append(r)
    return r


def crown(base: Path, *, sleep: float = 1.0, attempts: int = 0) -> str:
    """A crown component (restarted ``attempts`` times, then the crown healer) and the crown
    layer's healer: it sleeps, writes when it ran, and says not healed."""
    base.mkdir(parents=True, exist_ok=True)
    healer = script(base / "crown_healer.py", CROWN_HEALER.format(py=py()))
    return f"""
        [chakra]
        runtime_dir = "{base / "run"}"

        [chakra.crown]
        healer = ["{healer}"]
        healer_env = {{ RAZAR_TEST_SLEEP = "{sleep}" }}

        [[component]]
        name = "crown-app"
        layer = "crown"
        priority = 1
        command = ["/bin/sleep", "100000"]
        restart = {{ attempts = {attempts}, backoff_base = 0.05, backoff_cap = 0.1 }}
        """


def broken_app(base: Path, agent_url: str) -> str:
    """A throat component ``app`` whose artifact ``app/app.conf`` says ``mode = brokn`` (it
    exits until that reads ``ok``), one restart, and one remote repair agent at
    ``agent_url`` asked once per failure."""
    app = base / "app"
    app.mkdir(parents=True)
    script(app / "app.py", APP)
    (app / "app.conf").write_text("# app settings\nmode = brokn\n")
    agent = {
        "name": "remote",
        "kind": "openai",
        "endpoint": agent_url,
        "auth": "none",
        "model": "test-model",
        "timeout": 20,
        "max_attempts": 1,
    }
    (base / "razar_ai_agents.json").write_text(json.dumps({"active": "remote", "agents": [agent]}))
    return f"""
        [[component]]
        name = "app"
        layer = "throat"
        priority = 1
        command = ["{py()}", "{app / "app.py"}"]
        working_directory = "{app}"
        artifacts = ["app.conf"]
        restart = {{ attempts = 1, backoff_base = 0.05, backoff_cap = 0.1 }}
        """


def runs(r: Razard) -> list[dict[str, float]]:
    path = r.state_dir / "crown-runs.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(r: Razard, name: str) -> list[dict[str, Any]]:
    return [e for e in r.events() if e.get("event") == name]


def store(etcd: EtcdCluster, prefix: str) -> FleetStore:
    return FleetStore(
        FleetConfig(enabled=True, endpoints=tuple(etcd.endpoints), prefix=prefix, timeout=2.0)
    )


async def held_slots(etcd: EtcdCluster, prefix: str) -> list[dict[str, Any]]:
    s = store(etcd, prefix)
    try:
        return (await s.held_slots())[0]
    finally:
        await s.close()


def slots(etcd: EtcdCluster, prefix: str) -> list[dict[str, Any]]:
    return asyncio.run(held_slots(etcd, prefix))


def kill_unit(r: Razard, unit: str) -> None:
    r.um.systemctl("kill", "-s", "KILL", unit)


@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:8]}/"


def test_budget_of_one_keeps_three_nodes_crown_restarts_apart(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
) -> None:
    """Three nodes fail together; with a budget of 1 their crown healers run one after the
    other (the healers' own start/end times), the later ones waiting for the slot."""
    made = []
    for i, um in enumerate(managers):
        base = tmp_path / f"n{i}"
        base.mkdir()
        made.append(node(nodes, um, base, crown(base), fleet_toml(etcd.endpoints, prefix, f"n{i}")))
    for r in made:
        r.start()
    for r in made:
        r.wait_state("crown-app", "healthy", 60)
    for r in made:  # all three fail at once
        kill_unit(r, "razar-crown-app.service")
    wait_for(lambda: all(runs(r) for r in made), 90, "every node's crown healer to run")
    spans = sorted((s["start"], s["end"]) for r in made for s in runs(r))
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"two crown full restarts overlapped: {spans}"
    assert any(events(r, "fleet_budget_wait") for r in made)
    assert not any(events(r, "fleet_budget_denied") for r in made)
    assert "razar_fleet_etcd_reachable 1.0" in made[0].metrics_text()


def test_a_node_killed_holding_a_slot_frees_it_within_the_lease_ttl(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
) -> None:
    base = tmp_path / "a"
    a = node(
        nodes, managers[0], base, crown(base, sleep=30), fleet_toml(etcd.endpoints, prefix, "a")
    )
    a.start()
    a.wait_state("crown-app", "healthy", 60)
    kill_unit(a, "razar-crown-app.service")
    held = wait_for(lambda: slots(etcd, prefix), 30, "node a to hold a slot")
    assert [s["node"] for s in held] == ["a"] and held[0]["action"] == "crown_full_restart"
    a.stop(signal.SIGKILL)  # dies holding it: nobody gives it back
    assert slots(etcd, prefix), "the slot went before the lease ended"
    wait_for(lambda: not slots(etcd, prefix), TTL + 2, "the dead node's slot to free itself")


def test_same_signature_on_three_nodes_trips_the_breaker_and_one_alert_goes_out(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
    alertmanager: str,  # noqa: F811
) -> None:
    made = []
    for i, um in enumerate(managers):
        base = tmp_path / f"n{i}"
        base.mkdir()
        comps = crash_loop(
            base, "crash", "fatal: bad rollout of model server v2"
        ) + textwrap.dedent(
            f"""
            [escalation]
            poll_interval = 0.5

            [escalation.alertmanager]
            url = "{alertmanager}"
            """
        )
        made.append(
            node(
                nodes,
                um,
                base,
                comps,
                fleet_toml(etcd.endpoints, prefix, f"n{i}", breaker_threshold=3),
            )
        )
    for r in made:
        r.start(wait_ready=False)
    for r in made:
        r.wait_state("crash", "quarantined", 60)

    def fleet_alerts() -> list[dict[str, Any]]:
        got = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
        return [a for a in got if a["labels"].get("alertname") == "RazarFleetBreakerTripped"]

    alerts = wait_for(fleet_alerts, 30, "the fleet breaker alert in Alertmanager")
    assert len(alerts) == 1 and alerts[0]["labels"]["component"] == "fleet:breaker"
    tripped = [r for r in made if events(r, "fleet_breaker_tripped")]
    assert len(tripped) == 1, "exactly one node says it tripped the breaker"

    async def breaker() -> dict[str, Any]:
        s = store(etcd, prefix)
        try:
            return await s.breaker()
        finally:
            await s.close()

    state = asyncio.run(breaker())
    assert [sorted(s["nodes"]) for s in state["signatures"]] == [["n0", "n1", "n2"]]
    assert state["signatures"][0]["signature"].startswith("crash: ")

    async def members() -> list[dict[str, Any]]:
        s = store(etcd, prefix)
        try:
            return await s.live_nodes()
        finally:
            await s.close()

    def all_quarantined() -> list[dict[str, Any]]:
        got = asyncio.run(members())
        ok = len(got) == 3 and all(n["quarantined"] == 1 and n["healthy"] == 0 for n in got)
        return got if ok else []

    # each node's record in etcd follows its components and names its last alert
    for n in wait_for(all_quarantined, 10, "every node's record to count its quarantine"):
        assert "crash quarantined" in n["last_alert"]

    # the signature is of the runner's error field, not of the message's decision
    failed = events(made[0], "component_failed")
    assert failed and all(f"{e['error']}; next: " in e["message"] for e in failed)
    noted = state["signatures"][0]["signature"]
    assert any(noted == failure_signature("crash", e["error"]) for e in failed), noted

    # an operator's reset resolves the one alert in Alertmanager (long before its endsAt)
    out = made[0].ctl("fleet", "breaker", "reset", "--config", str(made[0].config))
    assert "breaker reset: 1 trip(s) cleared" in out.stdout
    wait_for(lambda: not fleet_alerts(), 30, "the fleet breaker alert to be resolved")
    wait_for(lambda: all(events(r, "fleet_breaker_reset") for r in made), 10, "each node to see it")

    def said(r: Razard, event: str) -> list[dict[str, Any]]:
        return [e for e in events(r, event) if e.get("component") == "fleet:breaker"]

    # every notifier that raised it resolved it (these razards share one host's journal, so
    # more than one may have raised it; Alertmanager holds it once)
    raised = [r for r in made if said(r, "escalation_raised")]
    assert raised
    wait_for(
        lambda: all(said(r, "escalation_resolved") for r in raised), 15, "every one to resolve it"
    )
    assert not fleet_alerts()
    assert not asyncio.run(breaker())["signatures"]


def test_a_fix_kept_on_one_node_heals_another_without_asking_a_remote_agent(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
) -> None:
    with ThreadedFake() as server:
        server.queue(completion(_edit("mode = brokn", "mode = ok")))
        made = []
        for i, um in enumerate(managers[:2]):
            base = tmp_path / f"n{i}"
            comps = broken_app(base, server.url)
            made.append(node(nodes, um, base, comps, fleet_toml(etcd.endpoints, prefix, f"n{i}")))
        a, b = made
        a.start(wait_ready=False)
        a.wait_state("app", "healthy", 90)
        wait_for(lambda: events(a, "fleet_fix_published"), 10, "node a to publish its fix")
        assert len(server.requests) == 1
        b.start(wait_ready=False)
        b.wait_state("app", "healthy", 90)
        assert (tmp_path / "n1" / "app" / "app.conf").read_text() == "# app settings\nmode = ok\n"
        assert len(server.requests) == 1, "node b asked the remote agent"

        def healed() -> list[str]:
            # written once the patch is kept, which may come after the unit is healthy
            path = b.state_dir / "razar_ai_invocations.json"
            inv = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
            return [i["agent"] for i in inv if i["status"] == "healed"]

        assert wait_for(healed, 10, "node b's healed invocation record") == ["fleet"]

        async def shared() -> list[Any]:
            s = store(etcd, prefix)
            try:
                return await s.list_fixes()
            finally:
                await s.close()

        # node b reports its keep to etcd after its own record: wait for it there too
        (fix,) = wait_for(
            lambda: (got := asyncio.run(shared())) and got[0].kept == ("n0", "n1") and got,
            15,
            "both nodes recorded as keeping the fix in etcd",
        )
        assert fix.kept == ("n0", "n1") and not fix.failures


def test_etcd_lost_denies_gated_actions_restarts_go_on_and_it_recovers(
    managers: list[UserManager], nodes: list[Razard], tmp_path: Path, prefix: str
) -> None:
    cluster = EtcdCluster(tmp_path / "etcd", 1)
    cluster.start()
    try:
        base = tmp_path / "a"
        a = node(
            nodes,
            managers[0],
            base,
            crown(base, sleep=0.1, attempts=1),
            fleet_toml(cluster.endpoints, prefix, "a", slot_wait=1.0),
        )
        # as a Type=notify unit, so its STATUS= can be read back from systemd
        unit = a.um.unit_dir / "razard-fleet-a.service"
        unit.write_text(razard_unit(a.config))
        a.um.systemctl("daemon-reload")
        a.um.systemctl("start", "razard-fleet-a.service", timeout=90)  # returns on READY=1

        def status_text() -> str:
            p = a.um.systemctl("show", "-p", "StatusText", "--value", "razard-fleet-a.service")
            return p.stdout.strip()

        a.wait_state("crown-app", "healthy", 60)
        assert "fleet" not in status_text()
        cluster.kill(0)
        wait_for(lambda: events(a, "fleet_unreachable"), 20, "razard to say etcd is gone")
        wait_for(lambda: "fleet: etcd unreachable" in status_text(), 10, "STATUS= to say it")
        assert "razar_fleet_etcd_reachable 0.0" in a.metrics_text()
        pid = a.main_pid("razar-crown-app.service")
        kill_unit(a, "razar-crown-app.service")  # a restart: never gated
        c = wait_for(
            lambda: (
                (c := a.component("crown-app"))["state"] == "healthy"
                and a.main_pid("razar-crown-app.service") not in (0, pid)
                and c
            ),
            30,
            "the restart without etcd",
        )
        assert c["state"] == "healthy"
        kill_unit(a, "razar-crown-app.service")  # the restart budget is spent: the healer rung
        denied = wait_for(lambda: events(a, "fleet_budget_denied"), 30, "the gate to deny")
        assert "etcd unreachable" in denied[0]["reason"]
        assert denied[0]["action"] == "crown_full_restart"
        a.wait_state("crown-app", "quarantined", 30)
        assert runs(a) == [], "the crown healer ran without a slot"

        cluster.start_member(0)
        cluster.wait_healthy()
        wait_for(lambda: events(a, "fleet_reachable"), 30, "razard to say etcd is back")
        wait_for(lambda: "razar_fleet_etcd_reachable 1.0" in a.metrics_text(), 10, "the metric")
        wait_for(lambda: "fleet" not in status_text(), 10, "STATUS= to drop the note")
        a.ctl("quarantine", "release", "crown-app")
        a.wait_state("crown-app", "healthy", 30)
        # "restarts" counts every restart so far: wait for this kill's own restart (a new
        # pid, one more restart, healthy) before the next kill, or the next kill can land
        # before razard saw this one and the two make one failure
        before, pid = a.component("crown-app")["restarts"], a.main_pid("razar-crown-app.service")
        kill_unit(a, "razar-crown-app.service")
        wait_for(
            lambda: (
                (c := a.component("crown-app"))["restarts"] > before
                and c["state"] == "healthy"
                and a.main_pid("razar-crown-app.service") not in (0, pid)
            ),
            30,
            "the restart after the release",
        )
        kill_unit(a, "razar-crown-app.service")
        wait_for(lambda: runs(a), 30, "the crown healer to run once etcd is back")
    finally:
        a.um.systemctl("stop", "razard-fleet-a.service", check=False)
        (a.um.unit_dir / "razard-fleet-a.service").unlink(missing_ok=True)
        a.um.systemctl("daemon-reload", check=False)
        cluster.stop()


async def test_a_shared_fix_that_fails_here_is_marked_and_withdrawn_after_m(
    etcd: EtcdCluster, tmp_path: Path, prefix: str
) -> None:
    """The fleet rung's proposal is the published diff; a failed try marks it on this node,
    and after ``fix_failures`` nodes it is withdrawn and offered to nobody."""
    from dataclasses import replace

    from razard.fleet.core import Fleet
    from razard.fleet.node import (
        FleetNode,
        RepairHooks,
        SharedFixAgent,
        artifact_hash,
        failure_signature,
    )
    from razard.journal import EventLog
    from razard.repair.types import AgentSkipped, RepairContext

    cfg = FleetConfig(
        enabled=True, endpoints=tuple(etcd.endpoints), prefix=prefix, timeout=2.0, fix_failures=2
    )
    artifacts = {"app.conf": "mode = brokn\n"}
    diff = "--- a/app.conf\n+++ b/app.conf\n@@ -1 +1 @@\n-mode = brokn\n+mode = ok\n"
    events = EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no-journal"))
    origin = Fleet(replace(cfg, node="origin"))
    nodes = [FleetNode(Fleet(replace(cfg, node=f"n{i}")), events) for i in range(3)]
    try:
        await origin.start()
        await origin.publish_fix(
            "app", failure_signature("app", "exit 4"), artifact_hash(artifacts), diff
        )
        ctx = RepairContext(
            component="app",
            unit="razar-app.service",
            layer="throat",
            error="exit 4",
            artifacts=artifacts,
        )
        for node in nodes:
            await node.fleet.start()
        for node in nodes[:2]:
            proposal = await SharedFixAgent(node).propose(ctx)
            assert proposal.diff == diff and proposal.agent == "fleet"
            await RepairHooks(node).after(
                "app",
                "exit 4",
                artifacts,
                "fleet",
                {"status": "reverted", "patched": True},
                lambda: "",
            )
        (fix,) = await origin.list_fixes()
        assert fix.failures == ("n0", "n1") and fix.withdrawn
        with pytest.raises(AgentSkipped):  # withdrawn: offered to nobody
            await SharedFixAgent(nodes[2]).propose(ctx)
        assert "withdrawn" in (tmp_path / "razar.log").read_text()
    finally:
        for node in nodes:
            await node.stop()
        await origin.stop()


async def test_a_signature_tripped_on_k_nodes_stops_ai_patching_of_it_everywhere(
    etcd: EtcdCluster, tmp_path: Path, prefix: str
) -> None:
    """Once the breaker holds a signature, the handover skips remote agents for it and the
    gate refuses to apply a patch for it; another signature is still patched."""
    from dataclasses import replace

    from razard.fleet.core import Fleet
    from razard.fleet.node import FleetNode, RepairHooks, failure_signature
    from razard.journal import EventLog

    cfg = FleetConfig(
        enabled=True,
        endpoints=tuple(etcd.endpoints),
        prefix=prefix,
        timeout=2.0,
        breaker_threshold=3,
        slot_wait=1.0,
    )
    events = EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no-journal"))
    nodes = [FleetNode(Fleet(replace(cfg, node=f"n{i}")), events) for i in range(3)]
    try:
        for node in nodes:
            await node.fleet.start()
        tripped = [
            await n.fleet.record_signature(failure_signature("app", "exit 4"), "app") for n in nodes
        ]
        assert tripped == [False, False, True]
        hooks = RepairHooks(nodes[0])
        assert "stopped AI patching" in await hooks.patching_stopped("app", "exit 4")
        assert await hooks.patching_stopped("app", "another failure") == ""
        async with hooks.apply_gate("app", "throat", "exit 4") as denied:
            assert "breaker tripped for this signature" in denied
        async with hooks.apply_gate("app", "throat", "another failure") as denied:
            assert denied == ""
    finally:
        for node in nodes:
            await node.stop()


def test_a_changed_fleet_table_on_reload_is_warned_about_and_kept_until_restart(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
) -> None:
    """[fleet] is read at start: SIGHUP with another [fleet] says config_partial (the change
    takes effect at restart), restarts nothing, and the node stays in its fleet as it was."""
    base = tmp_path / "a"
    comps = crown(base)
    a = node(nodes, managers[0], base, comps, fleet_toml(etcd.endpoints, prefix, "a"))
    a.start()
    a.wait_state("crown-app", "healthy", 60)
    pid = a.main_pid("razar-crown-app.service")
    a.write_config(comps + fleet_toml(etcd.endpoints, f"{prefix}other/", "a2"))
    a.send(signal.SIGHUP)
    wait_for(lambda: events(a, "config_reloaded"), 30, "the reload")
    (partial,) = events(a, "config_partial")
    assert partial["tables"] == "fleet" and partial["level"] == "warning"
    assert "[fleet] take effect at the next restart of razard" in partial["message"]
    assert a.main_pid("razar-crown-app.service") == pid

    async def names(under: str) -> list[str]:
        s = store(etcd, under)
        try:
            return [n["node"] for n in await s.live_nodes()]
        finally:
            await s.close()

    assert asyncio.run(names(prefix)) == ["a"]
    assert asyncio.run(names(f"{prefix}other/")) == []


async def test_a_patch_is_denied_and_not_applied_while_another_node_holds_the_only_slot(
    etcd: EtcdCluster,
    managers: list[UserManager],
    nodes: list[Razard],
    tmp_path: Path,
    prefix: str,
) -> None:
    """Budget 1, its slot held by another node: the repair agent's patch waits ``slot_wait``,
    is denied (``fleet_budget_denied`` for patch_apply), the artifact's bytes stay as they
    were, and the ladder goes on to quarantine."""
    holder = Fleet(
        FleetConfig(
            enabled=True,
            endpoints=tuple(etcd.endpoints),
            prefix=prefix,
            node="holder",
            timeout=2.0,
            lease_ttl=TTL,
        )
    )
    await holder.start()  # its lease is kept by this test's loop while razard runs
    try:
        held = await holder.acquire("crown_full_restart", 5.0)
        assert held
        with ThreadedFake() as server:
            server.queue(completion(_edit("mode = brokn", "mode = ok")))
            base = tmp_path / "a"
            comps = broken_app(base, server.url)
            conf = base / "app" / "app.conf"
            before = conf.read_bytes()
            fleet = fleet_toml(etcd.endpoints, prefix, "a", slot_wait=1.0)
            a = node(nodes, managers[0], base, comps, fleet)
            a.start(wait_ready=False)
            await asyncio.to_thread(a.wait_state, "app", "quarantined", 90)
            assert len(server.requests) == 1, "the agent was not asked for its patch"
        (denied,) = events(a, "fleet_budget_denied")
        assert (denied["action"], denied["reason"]) == ("patch_apply", "budget full")
        assert denied["component"] == "app" and events(a, "fleet_budget_wait")
        assert conf.read_bytes() == before, "the patch was applied without a slot"
        inv = [
            json.loads(line)
            for line in (a.state_dir / "razar_ai_invocations.json").read_text().splitlines()
        ]
        ended = [i for i in inv if i["agent"] == "remote" and i["status"] != "started"]
        assert [(i["status"], i["patched"], i["reason"]) for i in ended] == [
            ("failed", False, "fleet: patch_apply not taken: budget full")
        ]
        assert [(s["node"], s["action"]) for s in await held_slots(etcd, prefix)] == [
            ("holder", "crown_full_restart")
        ]
        await holder.release(held)
    finally:
        await holder.stop()

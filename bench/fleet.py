"""Scenario "fleet": many razard fleet cores on one real etcd (``python -m bench fleet``).

Each simulated node is the real `razard.fleet.core.Fleet` with an etcd client (and HTTP
connection pool) of its own, run as an asyncio task; all of them share this one
process (the CPU of 200 Python processes would measure the host, not the protocol).
The etcd is a real one, started here on loopback with a temporary data directory.

Two phases:

1. **idle**: ``nodes`` nodes with the default ``lease_ttl`` join and do nothing for
   ``idle_seconds``; the requests etcd served meanwhile (its own
   ``grpc_server_started_total``, every method) and the requests the clients sent
   (`Etcd.requests`) are divided by nodes and minutes.
2. **contention**: ``nodes`` nodes with a short ``ttl`` (so kills resolve within the
   run) loop: think (exponential, mean ``think`` s), take a slot of a budget of
   ``budget`` (waiting up to ``wait`` s), hold it (uniform ``hold``), give it back.
   Every ``kill_every`` s one node is killed (half of the time one holding a slot):
   its tasks are cancelled and its connections dropped, nothing given back, as
   SIGKILL would leave it; a fresh node takes its place. Afterwards the history of
   every slot key is read back from etcd (a watch from the first revision: etcd's
   linearizable order) and the slots held are counted at every revision.

Figures: the most slots held at any revision (never over budget); time to take a
slot that was free (no wait) p50/p99; handover (a slot given back to the next node
holding it, from an observer's watch) p50/p99; a dead holder's slot freed after the
kill (max, against ``ttl`` + 1 s); idle requests per node per minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import re
import resource
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.stats import percentile, summary
from razard.fleet.config import DEFAULT_LEASE_TTL, Budget, FleetConfig
from razard.fleet.core import _REWATCH, Fleet
from razard.fleet.etcd import Etcd, Event, KeyValue, b64, prefix_end
from tests.etcd import EtcdCluster

log = logging.getLogger("bench.fleet")
PREFIX = "/bench/"


@dataclass(frozen=True)
class Sizes:
    nodes: int = 200
    budget: int = 5
    ttl: float = 5.0  # the contention phase's lease TTL
    seconds: float = 90.0  # the contention phase
    think: float = 40.0  # mean seconds between a node's actions
    hold: tuple[float, float] = (0.5, 1.5)
    wait: float = 20.0  # slot_wait
    kill_every: float = 3.0
    idle_seconds: float = 60.0
    idle_ttl: float = DEFAULT_LEASE_TTL


SMOKE = Sizes(
    nodes=8, budget=2, ttl=3.0, seconds=8.0, think=1.0, hold=(0.1, 0.3), wait=5.0,
    kill_every=2.0, idle_seconds=3.0, idle_ttl=6.0,
)  # fmt: skip


@dataclass
class Node:
    fleet: Fleet
    task: asyncio.Task[None] | None = None


@dataclass
class Run:
    """What the contention phase saw, as it happened."""

    free_ms: list[float] = field(default_factory=list)  # granted with no wait
    waited_ms: list[float] = field(default_factory=list)  # granted after waiting
    granted: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    kills: list[tuple[str, float, bool]] = field(default_factory=list)  # node, at, held
    seen: list[tuple[float, Event]] = field(default_factory=list)  # observer's watch
    lag_ms: list[float] = field(default_factory=list)  # this process's event loop, late by


async def _loop_lag(run: Run) -> None:
    """How late this process's event loop wakes a 100 ms sleep: when it is busy, every
    figure above includes this simulation's own queueing, not only etcd's and razar's."""
    while True:
        t0 = time.monotonic()
        await asyncio.sleep(0.1)
        run.lag_ms.append((time.monotonic() - t0 - 0.1) * 1000.0)


def _cfg(endpoints: list[str], node: str, sz: Sizes, ttl: float) -> FleetConfig:
    return FleetConfig(
        enabled=True,
        endpoints=tuple(endpoints),
        prefix=PREFIX,
        node=node,
        budget=Budget(count=sz.budget),
        lease_ttl=ttl,
        slot_wait=sz.wait,
        timeout=10.0,
        breaker_threshold=100_000,  # the breaker is not what this measures
        gated=frozenset({"sacral_gpu_flush"}),
    )


def _etcd_requests(url: str) -> int:
    """Requests etcd has started serving, all gRPC methods (the JSON gateway goes
    through them)."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(
        int(float(m.group(1)))
        for m in re.finditer(r"^grpc_server_started_total\{[^}]*\} (\S+)$", text, re.M)
    )


async def _start(nodes: list[Node], spread: float) -> None:
    """Start the nodes spread over ``spread`` seconds (nodes boot at different times)."""

    async def one(i: int, n: Node) -> None:
        await asyncio.sleep(spread * i / max(1, len(nodes)))
        await n.fleet.start(wait=30.0)

    await asyncio.gather(*(one(i, n) for i, n in enumerate(nodes)))


async def idle(endpoints: list[str], sz: Sizes) -> dict[str, Any]:
    nodes = [
        Node(Fleet(_cfg(endpoints, f"idle-{i:03d}", sz, sz.idle_ttl))) for i in range(sz.nodes)
    ]
    await _start(nodes, min(10.0, sz.idle_ttl / 3))
    joined = sum(1 for n in nodes if n.fleet.lease)
    await asyncio.sleep(1.0)
    server0 = await asyncio.to_thread(_etcd_requests, endpoints[0])
    client0 = sum(n.fleet.etcd.requests for n in nodes)
    t0 = time.monotonic()
    await asyncio.sleep(sz.idle_seconds)
    secs = time.monotonic() - t0
    server = await asyncio.to_thread(_etcd_requests, endpoints[0]) - server0
    client = sum(n.fleet.etcd.requests for n in nodes) - client0
    await asyncio.gather(*(n.fleet.stop() for n in nodes))
    per_min = 60.0 / secs / max(1, joined)
    return {
        "nodes": sz.nodes,
        "joined": joined,
        "lease_ttl": sz.idle_ttl,
        "seconds": secs,
        "server_requests": server,
        "client_requests": client,
        "server_per_node_min": server * per_min,
        "client_per_node_min": client * per_min,
    }


async def _observe(etcd: Etcd, start: int, run: Run) -> None:
    """Stamp every slot change with the time this process saw it (a watch stream; the
    task is cancelled when the run ends)."""
    body = {
        "create_request": {
            "key": b64(PREFIX + "slots/"),
            "range_end": b64(prefix_end(PREFIX + "slots/")),
            "start_revision": str(start),
        }
    }
    try:
        async with etcd._http().stream(
            "POST", etcd.endpoints[0] + "/v3/watch", json=body, timeout=None
        ) as resp:
            async for line in resp.aiter_lines():
                now = time.monotonic()
                for ev in (json.loads(line).get("result") or {}).get("events") or []:
                    kv = KeyValue.of(ev.get("kv") or {})
                    kind = ev.get("type") or "PUT"
                    run.seen.append((now, Event(kind, kv.key, kv.mod_revision, b"")))
    finally:
        await etcd.close()


async def _worker(n: Node, sz: Sizes, run: Run, rng: random.Random) -> None:
    f = n.fleet
    while True:
        await asyncio.sleep(rng.expovariate(1.0 / sz.think))
        waited = False

        def on_wait() -> None:
            nonlocal waited
            waited = True

        t0 = time.monotonic()
        grant = await f.acquire("sacral_gpu_flush", on_wait=on_wait)
        ms = (time.monotonic() - t0) * 1000.0
        if not grant:
            run.denied[grant.reason] = run.denied.get(grant.reason, 0) + 1
            continue
        run.granted += 1
        (run.waited_ms if waited else run.free_ms).append(ms)
        # a kill lands here or anywhere above, and gives nothing back (as SIGKILL)
        await asyncio.sleep(rng.uniform(*sz.hold))
        await f.release(grant)


async def _kill(n: Node) -> None:
    """Stop a node as SIGKILL would: no release, no revoke; its lease must expire."""
    tasks = [t for t in (n.task, n.fleet._task, n.fleet._breaker_task) if t is not None]
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    n.fleet._task = n.fleet._breaker_task = None
    await n.fleet.etcd.close()  # its connections go down with it


async def contention(endpoints: list[str], sz: Sizes, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    run = Run()
    admin = Etcd(endpoints, timeout=10.0)
    await admin.delete(PREFIX, prefix=True)
    _, start = await admin.range(PREFIX + "slots/", prefix=True)
    observer = asyncio.create_task(_observe(Etcd(endpoints, timeout=10.0), start + 1, run))
    serial = 0

    def make() -> Node:
        nonlocal serial
        serial += 1
        return Node(Fleet(_cfg(endpoints, f"node-{serial:04d}", sz, sz.ttl)))

    nodes = [make() for _ in range(sz.nodes)]
    await _start(nodes, 2.0)
    lag = asyncio.create_task(_loop_lag(run))
    requests0 = sum(n.fleet.etcd.requests for n in nodes)
    for n in nodes:
        n.task = asyncio.create_task(_worker(n, sz, run, random.Random(rng.random())))
    t_end = time.monotonic() + sz.seconds
    killed: list[Node] = []
    while time.monotonic() < t_end:
        await asyncio.sleep(sz.kill_every)
        holders = [n for n in nodes if n.fleet.held]
        pool = holders if holders and rng.random() < 0.5 else nodes
        victim = rng.choice(pool)
        run.kills.append((victim.fleet.node, time.monotonic(), victim.fleet.held > 0))
        await _kill(victim)
        killed.append(victim)
        nodes.remove(victim)
        fresh = make()
        await fresh.fleet.start(wait=10.0)
        fresh.task = asyncio.create_task(_worker(fresh, sz, run, random.Random(rng.random())))
        nodes.append(fresh)
    lag.cancel()
    requests = sum(n.fleet.etcd.requests for n in [*nodes, *killed]) - requests0
    for n in nodes:  # the survivors stop acting, and leave cleanly
        if n.task is not None:
            n.task.cancel()
    for n in nodes:
        if n.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await n.task
    await asyncio.gather(*(n.fleet.stop() for n in nodes))
    await asyncio.sleep(sz.ttl + 2.0)  # the last killed holders' leases run out
    observer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await observer
    history = await admin.history(PREFIX + "slots/", start + 1, idle=1.0)
    await admin.close()
    return {**_judge(sz, run, history), "requests": requests}


def _judge(sz: Sizes, run: Run, history: list[Event]) -> dict[str, Any]:
    held: set[str] = set()
    peak, revisions, over = 0, 0, []
    by_rev: dict[int, list[Event]] = {}
    for ev in history:
        by_rev.setdefault(ev.revision, []).append(ev)
    for rev in sorted(by_rev):
        for ev in by_rev[rev]:
            if ev.kind == "DELETE":
                held.discard(ev.key)
            else:
                held.add(ev.key)
        revisions += 1
        peak = max(peak, len(held))
        if len(held) > sz.budget:
            over.append(rev)
    # handover: a slot given back (or expired) while the budget was full, to the next take
    seen = sorted(run.seen, key=lambda s: s[1].revision)
    handover, live, full_since = [], set[str](), None
    for at, ev in seen:
        if ev.kind == "DELETE":
            if len(live) >= sz.budget and ev.key in live:
                full_since = at
            live.discard(ev.key)
        else:
            live.add(ev.key)
            if full_since is not None:
                handover.append((at - full_since) * 1000.0)
                full_since = None
    # a killed holder's slots: from the kill to the delete etcd made when its lease ended
    deleted = {ev.key: at for at, ev in seen if ev.kind == "DELETE"}
    frees, never = [], []
    for node, at, _ in run.kills:
        keys = {ev.key for _, ev in seen if ev.key.startswith(f"{PREFIX}slots/{node}/")}
        for key in keys:
            if key not in deleted:
                never.append(key)
            elif deleted[key] > at:
                frees.append(deleted[key] - at)
    return {
        "budget": sz.budget,
        "nodes": sz.nodes,
        "ttl": sz.ttl,
        "seconds": sz.seconds,
        "events": len(history),
        "revisions": revisions,
        "peak_held": peak,
        "over_budget_revisions": over[:20],
        "granted": run.granted,
        "denied": run.denied,
        "free_ms": _stats(run.free_ms),
        "waited_ms": _stats(run.waited_ms),
        "handover_ms": _stats(handover),
        "kills": len(run.kills),
        "kills_holding": sum(1 for k in run.kills if k[2]),
        "dead_slot_free_s": _stats(frees),
        "dead_slots_never_freed": never,
        "observed_events": len(run.seen),
        "loop_lag_ms": _stats(run.lag_ms),
    }


def _stats(xs: list[float]) -> dict[str, Any]:
    """median (p50), p90, p99, min, max and n."""
    return {**summary(xs), "p99": percentile(xs, 0.99)}


async def _main(endpoints: list[str], sz: Sizes, seed: int) -> dict[str, Any]:
    res: dict[str, Any] = {"sizes": asdict(sz), "seed": seed}
    async with Etcd(endpoints) as etcd:
        res["etcd_version"] = (await etcd.status()).get("version", "?")
    log.info("fleet: idle, %d nodes for %.0f s", sz.nodes, sz.idle_seconds)
    res["idle"] = await idle(endpoints, sz)
    log.info("fleet: contention, %d nodes for %.0f s", sz.nodes, sz.seconds)
    res["contention"] = await contention(endpoints, sz, seed)
    return res


def run(sz: Sizes, seed: int = 1, keep: bool = False) -> dict[str, Any]:
    for name in ("httpx", "razard.fleet"):  # a line per request or join would drown the log
        logging.getLogger(name).setLevel(logging.WARNING)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # a connection pool per node
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    # SIGTERM unwinds like Ctrl-C, so the etcd started here is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="rzb-fleet-", dir="/tmp"))
    cluster = EtcdCluster(work / "etcd", 1)
    try:
        cluster.start()
        return asyncio.run(_main(cluster.endpoints, sz, seed))
    finally:
        cluster.stop()
        if not keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    c, i = res["contention"], res["idle"]
    free, never = c["dead_slot_free_s"], len(c["dead_slots_never_freed"])
    worst = free.get("max", math.nan) if free.get("n") else math.nan
    measured = i["server_per_node_min"] / 6.0
    rewatch = 2 * 10.0 / _REWATCH  # the breaker watch's read and watch, every _REWATCH s
    per10 = measured + rewatch
    return [
        {
            "target": f"Never over budget ({c['budget']}) in etcd's history",
            "figure": f"at most {c['peak_held']} held over {c['revisions']} revisions",
            "met": not c["over_budget_revisions"] and c["peak_held"] <= c["budget"],
        },
        {
            "target": f"A dead holder's slot free within TTL + 1 s ({c['ttl'] + 1:g} s)",
            "figure": (
                f"max {worst:.2f} s over {free.get('n', 0)} slots"
                + (f", {never} never freed" if never else "")
            ),
            "met": (None if not free.get("n") else worst <= c["ttl"] + 1.0 and not never),
        },
        {
            "target": "Idle cost under 1 request per node per 10 s",
            "figure": (
                f"{per10:.2f} per 10 s ({measured:.2f} measured + {rewatch:.2f} breaker "
                f"watch; lease_ttl {i['lease_ttl']:g} s)"
            ),
            "met": per10 < 1.0,
        },
    ]


def markdown(res: dict[str, Any], command: str) -> str:
    c, i, sz = res["contention"], res["idle"], res["sizes"]
    f, w, h = c["free_ms"], c["waited_ms"], c["handover_ms"]
    d = c["dead_slot_free_s"]

    def q(s: dict[str, Any], digits: int = 1) -> str:
        if not s.get("n"):
            return "–"
        return f"{s['median']:.{digits}f} / {s['p99']:.{digits}f} (n={s['n']})"

    denied = ", ".join(f"{k}: {v}" for k, v in sorted(c["denied"].items())) or "none"
    lines = [
        "# razar fleet benchmark: simulated nodes on one etcd",
        "",
        f"Run {res['date']} on {res['host']}; `{command}` ({res['seconds']:.0f} s; "
        f"etcd {res.get('etcd_version', '?')}). Nodes: the real `razard.fleet` core, one "
        "asyncio task and one etcd client each, all in one process.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| nodes / budget | {c['nodes']} / {c['budget']} |",
        f"| contention phase | {c['seconds']:g} s, lease_ttl {c['ttl']:g} s, think "
        f"{sz['think']:g} s (mean), hold {sz['hold'][0]:g}–{sz['hold'][1]:g} s, "
        f"slot_wait {sz['wait']:g} s |",
        f"| slots taken / denied | {c['granted']} / {denied} |",
        f"| most slots held at any revision (etcd history, {c['revisions']} revisions) "
        f"| **{c['peak_held']}** |",
        f"| take a free slot, ms p50 / p99 | {q(f)} |",
        f"| take a slot after waiting, ms p50 / p99 | {q(w)} |",
        f"| handover (slot given back → next holder), ms p50 / p99 | {q(h)} |",
        f"| etcd requests in the phase (per slot taken) | {c['requests']} "
        f"({c['requests'] / max(1, c['granted']):.1f}) |",
        f"| this process's event loop late by, ms p50 / p99 | {q(c['loop_lag_ms'])} |",
        f"| kills (of them holding a slot) | {c['kills']} ({c['kills_holding']}) |",
        "| dead holder's slot free after the kill, s p50 / max | "
        + (f"{d['median']:.2f} / {d['max']:.2f} (n={d['n']})" if d.get("n") else "–")
        + " |",
        f"| idle: requests per node per minute, etcd's count (client's) | "
        f"**{i['server_per_node_min']:.2f}** ({i['client_per_node_min']:.2f}) over "
        f"{i['seconds']:.0f} s, {i['joined']} nodes, lease_ttl {i['lease_ttl']:g} s |",
        "",
        f"Idle, each node also keeps one watch on the breaker open, opened again every "
        f"{_REWATCH:g} s (a read and a watch: {2 * 60 / _REWATCH:.1f} requests a minute, "
        "outside a window shorter than that). Slots are taken from a shared key range "
        "checked in one transaction, so a slot given back wakes every waiter: the requests "
        "per slot taken grow with the waiters.",
        "",
        "## Targets",
        "",
        "| target | figure | met |",
        "|---|---|---|",
    ]
    for t in res["targets"]:
        met = {True: "met", False: "**not met**", None: "no figure"}[t["met"]]
        lines.append(f"| {t['target']} | {t['figure']} | {met} |")
    return "\n".join(lines) + "\n"


def main(args: Any, command: str) -> int:
    import platform
    from datetime import UTC, datetime

    sz = SMOKE if args.smoke else Sizes()
    if args.nodes:
        sz = replace(sz, nodes=args.nodes)
    if args.seconds:
        sz = replace(sz, seconds=args.seconds)
    if args.idle_seconds:
        sz = replace(sz, idle_seconds=args.idle_seconds)
    started = time.monotonic()
    res = run(sz, seed=args.seed, keep=args.keep)
    res.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        host=f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
        command=command,
        seconds=time.monotonic() - started,
    )
    res["targets"] = targets(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = json.dumps(_clean(res), indent=1, default=str, allow_nan=False)
    (out / "fleet.json").write_text(doc + "\n")
    md = markdown(res, command)
    (out / "fleet.md").write_text(md)
    print(md)
    return 0 if all(t["met"] is not False for t in res["targets"][:2]) else 1


def _clean(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    return o

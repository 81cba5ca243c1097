"""The fleet core: membership, the remediation budget, the circuit breaker and shared fixes,
all kept in etcd under one key prefix.

Layout under ``prefix`` (default ``/razar/``), every value a small JSON object::

    nodes/<node>                       this node's record, attached to its lease
    slots/<node>/<action>/<id>         a budget slot held, attached to the holder's lease
    breaker/fleet                      present while the breaker is tripped (no lease)
    breaker/signatures/<sig-hash>      present while AI patching of a signature is stopped
    events/actions/<node>/<ns>         a disruptive action or quarantine (lease = window)
    events/signatures/<sig-hash>/<node> a failure signature seen on a node (lease = window)
    fixes/<component>/<sig-hash>/<artifact-hash>/<diff-hash>   a shared fix

`FleetStore` reads and writes these without a lease (what ``razarctl fleet``
uses); `Fleet` is one node's membership: its lease kept alive in the
background, slots taken under it, and the reachability it reports.

A slot is taken with one transaction that compares every key under
``slots/``: none may have changed since the revision the free count was read
at, and the breaker key must not exist. etcd applies it atomically, so two
nodes can never both take the last slot; the loser reads again. Anything
someone else wrote under the prefix that does not parse is ignored (and
listed as invalid), never trusted.

One module (~880 lines) on purpose: `FleetStore` (read and reset, no lease) and `Fleet`
(this node's lease, slots, breaker and fixes) read and write the same keys through the
record helpers above, and the key layout is written down once, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from razard import __version__
from razard.fleet.config import ACTION_RE, NODE_RE, FleetConfig
from razard.fleet.etcd import (
    Etcd,
    EtcdAuthError,
    EtcdError,
    EtcdUnavailable,
    Event,
    KeyValue,
    cmp_mod,
    cmp_mod_below,
    cmp_version,
    op_put,
)

log = logging.getLogger("razard.fleet")

_REWATCH: Final = 600.0  # seconds one breaker watch stream is kept before it is opened again
_HEX_RE: Final = re.compile(r"^[0-9a-f]{8,128}$")
_COMPONENT_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def signature_hash(signature: str) -> str:
    """The key-safe name of a failure signature."""
    return hashlib.sha256(signature.encode()).hexdigest()[:32]


def diff_hash(diff: str) -> str:
    return hashlib.sha256(diff.encode()).hexdigest()[:32]


def etcd_for(cfg: FleetConfig) -> Etcd:
    """The etcd client the ``[fleet]`` table describes."""
    return Etcd(
        cfg.endpoints,
        timeout=cfg.timeout,
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        username=cfg.username,
        password_file=cfg.password_file,
    )


def _record(kv: KeyValue) -> dict[str, Any] | None:
    """A value we wrote: a JSON object; anything else is someone else's garbage."""
    if len(kv.value) > 1 << 20:
        return None
    try:
        data = json.loads(kv.value)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _str(value: Any, limit: int = 512) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _dump(data: Mapping[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Grant:
    """The answer to "may I take this disruptive action now?"; true when it may."""

    granted: bool
    action: str
    reason: str  # not gated | slot | fail open | budget full | breaker tripped | etcd unreachable
    key: str = ""  # the slot's key while held
    waited: float = 0.0

    def __bool__(self) -> bool:
        return self.granted


@dataclass(frozen=True)
class Fix:
    """A fix shared through the fleet: a diff verified on ``node`` for one artifact's bytes."""

    key: str
    component: str
    signature: str
    artifact_hash: str
    diff: str
    node: str
    published: float
    failures: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    withdrawn: bool = False
    mod_revision: int = 0

    @property
    def id(self) -> str:
        return diff_hash(self.diff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "component": self.component,
            "signature": self.signature,
            "artifact_hash": self.artifact_hash,
            "node": self.node,
            "published": self.published,
            "failures": list(self.failures),
            "kept": list(self.kept),
            "withdrawn": self.withdrawn,
            "diff": self.diff,
        }


@dataclass
class Counters:
    """What the metrics read (``razar_fleet_*``)."""

    waiting: int = 0
    granted: int = 0
    denied: int = 0
    fixes_tried: int = 0
    fixes_kept: int = 0
    fixes_failed: int = 0


class FleetStore:
    """The fleet's keys in etcd, read and written without a lease of its own."""

    def __init__(self, cfg: FleetConfig, etcd: Etcd | None = None) -> None:
        self.cfg = cfg
        self.etcd = etcd if etcd is not None else etcd_for(cfg)
        p = cfg.prefix
        self.nodes = f"{p}nodes/"
        self.slots = f"{p}slots/"
        self.breaker_key = f"{p}breaker/fleet"
        self.breaker_sigs = f"{p}breaker/signatures/"
        self.events = f"{p}events/"
        self.actions = f"{p}events/actions/"
        self.sigs = f"{p}events/signatures/"
        self.fixes = f"{p}fixes/"

    async def close(self) -> None:
        await self.etcd.close()

    # ---- reading

    async def live_nodes(self) -> list[dict[str, Any]]:
        kvs, _ = await self.etcd.range(self.nodes, prefix=True)
        return self._nodes_of(kvs)

    def _nodes_of(self, kvs: list[KeyValue]) -> list[dict[str, Any]]:
        out = []
        for kv in kvs:
            rec = _record(kv)
            name = kv.key[len(self.nodes) :]
            ours = rec is not None and kv.lease != 0  # a record razard wrote has a lease
            if ours and rec is not None and NODE_RE.fullmatch(name) and rec.get("node") == name:
                out.append({**_node_fields(rec), "lease": kv.lease})
        return out

    async def held_slots(self) -> tuple[list[dict[str, Any]], int]:
        """Every valid slot record and the revision they were read at."""
        kvs, rev = await self.etcd.range(self.slots, prefix=True)
        return self._slots_of(kvs), rev

    def _slots_of(self, kvs: list[KeyValue]) -> list[dict[str, Any]]:
        out = []
        for kv in kvs:
            rec = _record(kv)
            if rec is None or not isinstance(rec.get("node"), str) or not kv.lease:
                continue
            out.append(
                {
                    "key": kv.key,
                    "node": _str(rec.get("node")),
                    "action": _str(rec.get("action")),
                    "since": _num(rec.get("since")),
                    "revision": kv.create_revision,
                }
            )
        return out

    async def breaker(self) -> dict[str, Any]:
        """The breaker: tripped or not, why and since when; and the signatures stopped."""
        kvs, _ = await self.etcd.range(f"{self.cfg.prefix}breaker/", prefix=True)
        state: dict[str, Any] = {"tripped": False, "signatures": []}
        for kv in kvs:
            rec = _record(kv) or {}
            if kv.key == self.breaker_key:
                state.update(
                    tripped=True,
                    reason=_str(rec.get("reason")) or "(unreadable record)",
                    since=_num(rec.get("since")),
                    nodes=[n for n in rec.get("nodes") or [] if isinstance(n, str)][:100],
                )
            elif kv.key.startswith(self.breaker_sigs):
                state["signatures"].append(
                    {
                        "signature": _str(rec.get("signature"), 2000),
                        "hash": kv.key[len(self.breaker_sigs) :],
                        "since": _num(rec.get("since")),
                        "nodes": [n for n in rec.get("nodes") or [] if isinstance(n, str)][:100],
                    }
                )
        return state

    async def signature_stopped(self, signature: str) -> bool:
        return await self.etcd.get(self.breaker_sigs + signature_hash(signature)) is not None

    async def status(self) -> dict[str, Any]:
        """Everything ``razarctl fleet status`` shows."""
        all_kvs, rev = await self.etcd.range(self.cfg.prefix, prefix=True)
        nodes = await self.live_nodes()
        slots, _ = await self.held_slots()
        breaker = await self.breaker()
        fixes = await self.list_fixes()
        known = (self.nodes, self.slots, f"{self.cfg.prefix}breaker/", self.events, self.fixes)
        invalid = [kv.key for kv in all_kvs if _record(kv) is None or not kv.key.startswith(known)][
            :50
        ]
        return {
            "prefix": self.cfg.prefix,
            "revision": rev,
            "nodes": sorted(nodes, key=lambda n: str(n["node"])),
            "budget": {
                "configured": str(self.cfg.budget),
                "slots": self.cfg.budget.slots(len(nodes)),
                "held": len(slots),
            },
            "slots": sorted(slots, key=lambda s: s["revision"]),
            "breaker": breaker,
            "fixes": {
                "total": len(fixes),
                "withdrawn": sum(1 for f in fixes if f.withdrawn),
            },
            "invalid_keys": invalid,
        }

    # ---- the breaker

    async def _events_nodes(self, prefix: str, now: float) -> set[str]:
        kvs, _ = await self.etcd.range(prefix, prefix=True)
        nodes: set[str] = set()
        for kv in kvs:
            rec = _record(kv)
            if rec is None:
                continue
            node = rec.get("node")
            if isinstance(node, str) and now - _num(rec.get("time")) <= self.cfg.breaker_window:
                nodes.add(node)
        return nodes

    async def _trip(self, key: str, record: Mapping[str, Any]) -> bool:
        """Create ``key`` unless it exists; True when this call tripped it."""
        ok, _ = await self.etcd.txn([cmp_version(key, "EQUAL", 0)], [op_put(key, _dump(record))])
        return ok

    async def reset_breaker(self) -> dict[str, int]:
        """Clear the breaker, every stopped signature and the window's events (a fresh start)."""
        cleared = await self.etcd.delete(f"{self.cfg.prefix}breaker/", prefix=True)
        events = await self.etcd.delete(self.events, prefix=True)
        return {"breaker_keys": cleared, "events": events}

    # ---- shared fixes

    def fix_key(self, component: str, signature: str, artifact_hash: str, diff: str) -> str:
        return (
            f"{self.fixes}{component}/{signature_hash(signature)}/{artifact_hash}/{diff_hash(diff)}"
        )

    async def list_fixes(self, prefix: str = "") -> list[Fix]:
        kvs, _ = await self.etcd.range(prefix or self.fixes, prefix=True)
        out = []
        for kv in kvs:
            fix = _fix(kv)
            if fix is not None:
                out.append(fix)
        return sorted(out, key=lambda f: (f.published, f.key))

    async def find_fixes(
        self, component: str, signature: str, artifact_hash: str, *, node: str = ""
    ) -> list[Fix]:
        """Fixes for this component, signature and artifact bytes, not withdrawn, not failed
        on ``node``; the most kept first."""
        if not _COMPONENT_RE.fullmatch(component) or not _HEX_RE.fullmatch(artifact_hash):
            return []
        prefix = f"{self.fixes}{component}/{signature_hash(signature)}/{artifact_hash}/"
        fixes = [
            f
            for f in await self.list_fixes(prefix)
            if not f.withdrawn
            and f.signature == signature
            and f.component == component
            and f.artifact_hash == artifact_hash
            and node not in f.failures
        ]
        return sorted(fixes, key=lambda f: (-len(f.kept), f.published))

    async def _update_fix(self, fix: Fix, change: Callable[[dict[str, Any]], None]) -> Fix | None:
        for _ in range(20):
            kv = await self.etcd.get(fix.key)
            if kv is None:
                return None
            rec = _record(kv)
            if rec is None:
                return None
            change(rec)
            ok, _ = await self.etcd.txn(
                [cmp_mod(fix.key, kv.mod_revision)], [op_put(fix.key, _dump(rec))]
            )
            if ok:
                return _fix(KeyValue(fix.key, _dump(rec).encode(), 0, 0, 0))
        raise EtcdError(f"fix {fix.key} changed too often to update")


def _node_fields(rec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "node": _str(rec.get("node"), 253),
        "version": _str(rec.get("version"), 64),
        "started": _num(rec.get("started")),
        "updated": _num(rec.get("updated")),
        "healthy": int(_num(rec.get("healthy"))),
        "restarting": int(_num(rec.get("restarting"))),
        "quarantined": int(_num(rec.get("quarantined"))),
        "chakra": _str(rec.get("chakra"), 64),
        "last_alert": _str(rec.get("last_alert"), 512),
    }


def _fix(kv: KeyValue) -> Fix | None:
    rec = _record(kv)
    if rec is None:
        return None
    diff = rec.get("diff")
    comp = rec.get("component")
    sig = rec.get("signature")
    art = rec.get("artifact_hash")
    if not (isinstance(diff, str) and isinstance(comp, str) and isinstance(sig, str)):
        return None
    if not isinstance(art, str) or not _HEX_RE.fullmatch(art):
        return None

    def names(v: Any) -> tuple[str, ...]:
        return tuple(sorted({n for n in v if isinstance(n, str)})) if isinstance(v, list) else ()

    return Fix(
        key=kv.key,
        component=comp,
        signature=sig,
        artifact_hash=art,
        diff=diff,
        node=_str(rec.get("node"), 253),
        published=_num(rec.get("published")),
        failures=names(rec.get("failures")),
        kept=names(rec.get("kept")),
        withdrawn=rec.get("withdrawn") is True,
        mod_revision=kv.mod_revision,
    )


@dataclass
class _NodeState:
    healthy: int = 0
    restarting: int = 0
    quarantined: int = 0
    chakra: str = ""
    last_alert: str = ""


class Fleet(FleetStore):
    """This node in the fleet: its lease and record, its slots, its view of etcd."""

    def __init__(
        self,
        cfg: FleetConfig,
        etcd: Etcd | None = None,
        *,
        version: str = __version__,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(cfg, etcd)
        self.node = cfg.node_name
        self.version = version
        self.clock = clock
        self.started = clock()
        self.lease = 0
        self.reachable = False
        self.last_error = "not started"
        self.counters = Counters()
        self.breaker_tripped = False  # as last read (taking a slot, noting an action)
        #: every ``breaker/`` key the breaker's watch saw present: the fleet breaker and
        #: each stopped signature
        self.breaker_keys: set[str] = set()
        #: called when the watch sees the last of `breaker_keys` go (an operator's reset)
        self.on_breaker_cleared: Callable[[], None] | None = None
        self._state = _NodeState()
        self._held: dict[str, str] = {}  # slot key -> action
        self._unreleased: set[str] = set()
        self._seen_rev = 0  # the revision the last attempt read the slots at
        self._task: asyncio.Task[None] | None = None
        self._breaker_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._up = asyncio.Event()

    # ---- lifecycle

    async def start(self, wait: float | None = None) -> bool:
        """Start keeping the lease; True when etcd answered within ``wait`` (default: the
        call deadline). Never raises for an unreachable etcd: it keeps trying."""
        if self._task is None:
            self._task = asyncio.create_task(self._keepalive(), name="razard-fleet-lease")
        if self._breaker_task is None:
            self._breaker_task = asyncio.create_task(
                self._follow_breaker(), name="razard-fleet-breaker"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.cfg.timeout if wait is None else wait):
                await self._ready.wait()
        return self.reachable

    def _mark(self, reachable: bool, error: str) -> None:
        self.reachable, self.last_error = reachable, error
        if reachable:
            self._up.set()
        else:
            self._up.clear()

    async def wait_reachable(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds for the keepalive to reach etcd; whether it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._up.wait()
        return self.reachable

    async def stop(self) -> None:
        """Stop: give back every slot and the lease (so the record goes at once)."""
        for task in (self._task, self._breaker_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._breaker_task = None
        if self.lease:
            # best effort, briefly: with etcd away the lease ends by itself within its TTL
            with contextlib.suppress(EtcdError, TimeoutError):
                async with asyncio.timeout(min(2.0, self.cfg.timeout)):
                    await self.etcd.revoke(self.lease)
        self.lease = 0
        self._held.clear()
        await self.close()

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _record(self) -> dict[str, Any]:
        s = self._state
        return {
            "node": self.node,
            "version": self.version,
            "started": self.started,
            "updated": self.clock(),
            "healthy": s.healthy,
            "restarting": s.restarting,
            "quarantined": s.quarantined,
            "chakra": s.chakra,
            "last_alert": s.last_alert,
        }

    async def _register(self) -> None:
        """A new lease and this node's record under it."""
        lease = await self.etcd.grant(self.cfg.lease_ttl)
        await self.etcd.put(self.nodes + self.node, _dump(self._record()), lease)
        self.lease = lease
        self._held.clear()  # slots under an old lease are gone with it
        log.info("fleet: node %s joined with lease %x", self.node, lease)

    async def _keepalive(self) -> None:
        period = max(0.5, self.cfg.lease_ttl / 3)
        backoff = 0.2
        while True:
            try:
                async with self._lock:
                    if not self.lease:
                        await self._register()
                    elif await self.etcd.keepalive(self.lease) <= 0:
                        log.warning("fleet: lease %x expired; joining again", self.lease)
                        self.lease = 0
                        await self._register()
                for key in list(self._unreleased):
                    await self.etcd.delete(key)
                    self._unreleased.discard(key)
                if not self.reachable:
                    log.info("fleet: etcd reachable")
                self._mark(True, "")
                backoff = 0.2
                self._ready.set()
                await asyncio.sleep(period)
            except Exception as e:  # noqa: BLE001  the keepalive must outlive any one failure
                if not isinstance(e, EtcdError):
                    log.exception("fleet: unexpected error keeping the lease")
                elif self.reachable or self.last_error == "not started":
                    log.warning("fleet: etcd unreachable: %s", e)
                self._mark(False, str(e) or type(e).__name__)
                self._ready.set()
                await asyncio.sleep(min(backoff, period))
                backoff = min(backoff * 2, period)

    def _breaker_seen(self, keys: set[str]) -> None:
        """The watch's view of ``breaker/``: `breaker_tripped` follows the fleet breaker's
        key, and `on_breaker_cleared` is called when the last key went (the breaker and
        every stopped signature reset)."""
        cleared = bool(self.breaker_keys) and not keys
        self.breaker_keys = keys
        self.breaker_tripped = self.breaker_key in keys
        if cleared and self.on_breaker_cleared is not None:
            try:
                self.on_breaker_cleared()
            except Exception:  # noqa: BLE001  the watch must outlive its listener
                log.exception("fleet: saying the breaker was reset")

    async def _follow_breaker(self) -> None:
        """Keep `breaker_tripped` current for STATUS= and the metric without polling: one
        read, then one long watch on the breaker's keys (the fleet breaker and the stopped
        signatures), opened again after an error or every ``_REWATCH`` seconds (so a
        stream a network dropped silently is replaced): 2 requests per ``_REWATCH`` while
        nothing changes. A reset seen while the watch was down is seen by the next read."""
        backoff = 0.5
        under = f"{self.cfg.prefix}breaker/"
        while True:
            t0 = time.monotonic()
            try:
                kvs, rev = await self.etcd.range(under, prefix=True)
                self._breaker_seen({kv.key for kv in kvs})

                def seen(ev: Event) -> None:
                    keys = set(self.breaker_keys)
                    if ev.kind == "DELETE":
                        keys.discard(ev.key)
                    else:
                        keys.add(ev.key)
                    self._breaker_seen(keys)

                await self.etcd.watch(under, rev + 1, seen, wait=_REWATCH, prefix=True)
            except EtcdError as e:
                log.debug("fleet: breaker watch: %s", e)  # the keepalive reports outages
            except Exception:  # noqa: BLE001  the watch must outlive any one failure
                log.exception("fleet: unexpected error watching the breaker")
            if time.monotonic() - t0 >= 5.0:
                backoff = 0.5
            else:  # ended (or failed) at once: etcd away, or refusing: do not spin
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(1.0, self.cfg.lease_ttl / 3))

    async def update(
        self,
        *,
        healthy: int | None = None,
        restarting: int | None = None,
        quarantined: int | None = None,
        chakra: str | None = None,
        last_alert: str | None = None,
    ) -> bool:
        """Change this node's record; True when etcd has it (False: kept for the next join)."""
        s = self._state
        s.healthy = s.healthy if healthy is None else healthy
        s.restarting = s.restarting if restarting is None else restarting
        s.quarantined = s.quarantined if quarantined is None else quarantined
        s.chakra = s.chakra if chakra is None else chakra
        s.last_alert = s.last_alert if last_alert is None else last_alert[:512]
        if not self.lease:
            return False
        try:
            await self.etcd.put(self.nodes + self.node, _dump(self._record()), self.lease)
        except EtcdError as e:
            if not self._lease_lost(e):
                self._mark(False, str(e))
            return False
        return True

    def _lease_lost(self, error: EtcdError) -> bool:
        """True (and the lease forgotten, so the keepalive joins again) when etcd says the
        lease is gone: it expired while etcd was away, or someone revoked it."""
        if not self.lease or "lease not found" not in str(error):
            return False  # none to lose (an error about one already forgotten ends here)
        log.warning("fleet: lease %x is gone; joining again", self.lease)
        self.lease = 0
        self._held.clear()
        return True

    # ---- the remediation budget

    def gated(self, action: str) -> bool:
        return action in self.cfg.gated

    @property
    def held(self) -> int:
        return len(self._held)

    @contextlib.asynccontextmanager
    async def slot(
        self, action: str, wait: float | None = None, *, signature: str = ""
    ) -> AsyncIterator[Grant]:
        """Hold a budget slot for ``action`` while the block runs::

        async with fleet.slot("sacral_gpu_flush") as grant:
            if grant:
                ...  # the disruptive action
            else:
                ...  # the rung failed: grant.reason says why
        """
        grant = await self.acquire(action, wait, signature=signature)
        try:
            yield grant
        finally:
            await self.release(grant)

    async def acquire(
        self,
        action: str,
        wait: float | None = None,
        *,
        signature: str = "",
        on_wait: Callable[[], None] | None = None,
    ) -> Grant:
        """Take a slot for ``action``, waiting up to ``wait`` seconds (default ``slot_wait``)."""
        if not ACTION_RE.fullmatch(action):
            raise ValueError(f"not an action name: {action!r}")
        if not self.gated(action):
            return Grant(True, action, "not gated")
        wait = self.cfg.slot_wait if wait is None else wait
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + wait
        delay = 0.05
        outage = not self.reachable  # the keepalive found etcd away before this call
        self.counters.waiting += 1
        try:
            while True:
                try:
                    grant = await self._try_take(action, signature)
                except EtcdError as e:
                    lost = self._lease_lost(e)  # etcd answered: it is no outage
                    if lost and loop.time() < deadline:
                        continue  # the next attempt joins again with a new lease
                    # a known outage answers at once; a new one (a leader election, a member
                    # restarting) is retried until the wait ends
                    if not lost:
                        self._mark(False, str(e))
                    if isinstance(e, EtcdAuthError) or outage or loop.time() >= deadline:
                        if self.cfg.fail_closed(action):
                            waited = loop.time() - start
                            return self._deny(action, f"etcd unreachable: {e}", waited)
                        return Grant(True, action, "fail open", waited=loop.time() - start)
                    grant = None
                else:
                    if not self.reachable and self.lease:
                        self._mark(True, "")
                if grant is not None:
                    if grant.granted:
                        self.counters.granted += 1
                        return Grant(True, action, "slot", grant.key, loop.time() - start)
                    return self._deny(action, grant.reason, loop.time() - start)
                left = deadline - loop.time()
                if left <= 0:
                    return self._deny(action, "budget full", loop.time() - start)
                if on_wait is not None:  # once: the first time no slot was free
                    on_wait()
                    on_wait = None
                # sleep until a slot changes (a holder gives back, a lease ends) or a while
                # has passed, then read again; a watch that fails at once (etcd away, history
                # compacted) falls back to polling with backoff
                watch_for = min(left, 5.0)
                t0 = loop.time()
                changed = self._seen_rev > 0 and await self.etcd.watch_once(
                    self.slots, self._seen_rev + 1, watch_for, deletes_only=True
                )  # only a slot given back (or expired) makes room: a slot taken wakes no one
                if not changed and loop.time() - t0 < watch_for - 0.05:
                    left = max(0.0, deadline - loop.time())
                    await asyncio.sleep(min(left, delay * (0.5 + random.random())))
                    delay = min(delay * 2, 1.0)
        finally:
            self.counters.waiting -= 1

    def _deny(self, action: str, reason: str, waited: float) -> Grant:
        self.counters.denied += 1
        return Grant(False, action, reason, waited=waited)

    async def _try_take(self, action: str, signature: str) -> Grant | None:
        """One attempt: a granted or denied Grant, or None while the budget is full."""
        self._seen_rev = 0
        if not self.lease:
            if not self.reachable and self.last_error not in ("", "not started"):
                raise EtcdUnavailable(self.last_error)
            async with self._lock:
                if not self.lease:
                    await self._register()
        lease = self.lease  # the slot goes under this one, even if the keepalive drops it meanwhile
        sig_key = self.breaker_sigs + signature_hash(signature) if signature else ""
        # one request reads what the decision needs, all at one revision: the slots, the
        # breaker, the signature's stop and (for a percentage budget) the live nodes
        ranges = [(self.slots, True), (self.breaker_key, False)]
        ranges += [(sig_key, False)] if sig_key else []
        ranges += [(self.nodes, True)] if self.cfg.budget.percent else []
        found, rev = await self.etcd.read(ranges)
        slots = self._slots_of(found[0])
        nodes = self._nodes_of(found[-1]) if self.cfg.budget.percent else []
        limit = self.cfg.budget.slots(max(1, len(nodes)))
        self._seen_rev = rev
        self.breaker_tripped = bool(found[1])
        if found[1]:
            return Grant(False, action, "breaker tripped")
        if sig_key and found[2]:
            return Grant(False, action, "breaker tripped for this signature")
        if len(slots) >= limit:
            return None
        key = f"{self.slots}{self.node}/{action}/{uuid.uuid4().hex[:12]}"
        record = {"node": self.node, "action": action, "since": self.clock()}
        compare = [cmp_mod_below(self.slots, rev + 1), cmp_version(self.breaker_key, "EQUAL", 0)]
        if sig_key:
            compare.append(cmp_version(sig_key, "EQUAL", 0))
        if not lease:  # never a slot without a lease: it would outlive its holder
            return None
        ok, _ = await self.etcd.txn(compare, [op_put(key, _dump(record), lease)])
        if not ok:
            return None  # someone took or changed a slot (or tripped the breaker): read again
        self._held[key] = action
        return Grant(True, action, "slot", key)

    async def release(self, grant: Grant) -> None:
        """Give a slot back (a no-op for a grant that holds none)."""
        if not grant.key:
            return
        self._held.pop(grant.key, None)
        try:
            await self.etcd.delete(grant.key)
        except EtcdError:
            self._unreleased.add(grant.key)  # retried by the keepalive; the lease ends it anyway

    # ---- the breaker

    async def record_action(self, action: str, component: str = "") -> bool:
        """Note a disruptive action or a quarantine on this node; True when that tripped the
        breaker (this node then sends the one alert for the fleet)."""
        now = self.clock()
        lease = await self.etcd.grant(self.cfg.breaker_window)
        key = f"{self.actions}{self.node}/{time.time_ns()}"
        rec = {"node": self.node, "action": action, "component": component, "time": now}
        await self.etcd.put(key, _dump(rec), lease)
        nodes = await self._events_nodes(self.actions, now)
        if len(nodes) <= self.cfg.breaker_threshold:
            return False
        reason = (
            f"{len(nodes)} nodes took disruptive actions within {self.cfg.breaker_window:g}s "
            f"(threshold {self.cfg.breaker_threshold})"
        )
        tripped = await self._trip(
            self.breaker_key, {"reason": reason, "since": now, "nodes": sorted(nodes)}
        )
        self.breaker_tripped = True
        if tripped:
            log.warning("fleet: breaker tripped: %s", reason)
        return tripped

    async def record_signature(self, signature: str, component: str = "") -> bool:
        """Note a failure signature on this node; True when this tripped the breaker for it
        (seen on ``breaker_threshold`` nodes within the window: a bad rollout)."""
        now = self.clock()
        h = signature_hash(signature)
        lease = await self.etcd.grant(self.cfg.breaker_window)
        rec = {"node": self.node, "signature": signature, "component": component, "time": now}
        await self.etcd.put(f"{self.sigs}{h}/{self.node}", _dump(rec), lease)
        nodes = await self._events_nodes(f"{self.sigs}{h}/", now)
        if len(nodes) < self.cfg.breaker_threshold:
            return False
        tripped = await self._trip(
            self.breaker_sigs + h,
            {"signature": signature, "since": now, "nodes": sorted(nodes)},
        )
        if tripped:
            log.warning("fleet: signature seen on %d nodes; AI patching of it stopped", len(nodes))
        return tripped

    # ---- shared fixes

    async def publish_fix(
        self, component: str, signature: str, artifact_hash: str, diff: str
    ) -> Fix:
        """Share a fix verified and kept on this node."""
        if not _COMPONENT_RE.fullmatch(component):
            raise ValueError(f"not a component name: {component!r}")
        if not _HEX_RE.fullmatch(artifact_hash):
            raise ValueError("artifact_hash must be a lower-case hex digest")
        key = self.fix_key(component, signature, artifact_hash, diff)
        now = self.clock()
        rec = {
            "component": component,
            "signature": signature,
            "artifact_hash": artifact_hash,
            "diff": diff,
            "node": self.node,
            "published": now,
            "failures": [],
            "kept": [self.node],
            "withdrawn": False,
        }
        ok, _ = await self.etcd.txn([cmp_version(key, "EQUAL", 0)], [op_put(key, _dump(rec))])
        if not ok:  # already shared (by another node): count this node as one that kept it
            existing = Fix(key, component, signature, artifact_hash, diff, "", now)
            return await self._update_fix(existing, self._add_kept) or existing
        return _fix(KeyValue(key, _dump(rec).encode(), 0, 0, 0)) or Fix(
            key, component, signature, artifact_hash, diff, self.node, now
        )

    def _add_kept(self, rec: dict[str, Any]) -> None:
        kept = [n for n in rec.get("kept") or [] if isinstance(n, str)]
        rec["kept"] = sorted({*kept, self.node})

    async def fix_kept(self, fix: Fix) -> Fix | None:
        """A fix from the fleet, tried here, verified and kept: count this node in."""
        self.counters.fixes_tried += 1
        self.counters.fixes_kept += 1
        return await self._update_fix(fix, self._add_kept)

    async def fix_failed(self, fix: Fix) -> Fix | None:
        """Mark ``fix`` failed on this node; withdrawn once ``fix_failures`` nodes failed it."""
        self.counters.fixes_tried += 1
        self.counters.fixes_failed += 1

        def change(rec: dict[str, Any]) -> None:
            failures = sorted(
                {*(n for n in rec.get("failures") or [] if isinstance(n, str)), self.node}
            )
            rec["failures"] = failures
            if len(failures) >= self.cfg.fix_failures:
                rec["withdrawn"] = True

        return await self._update_fix(fix, change)


@dataclass(frozen=True)
class Reachability:
    reachable: bool
    detail: str
    members: list[str] = field(default_factory=list)


async def probe(cfg: FleetConfig) -> Reachability:
    """Whether etcd answers (``razard check-config --online``): version and leader of the
    member that answered, or why none did."""
    etcd = etcd_for(cfg)
    try:
        st = await etcd.status()
        await etcd.range(cfg.prefix + "nodes/", prefix=True)  # credentials and permissions
    except EtcdError as e:
        return Reachability(False, str(e))
    finally:
        await etcd.close()
    return Reachability(
        True, f"etcd {st.get('version', '?')} answers (leader {st.get('leader', '?')})"
    )

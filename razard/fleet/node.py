"""razard's side of the fleet: the one object the daemon, the healers and the repair rung talk to.

`FleetNode.open` gives None without ``[fleet]`` (razard then behaves as without a fleet,
no etcd needed). With one it holds this node's membership and offers:

- `run`: keeps the node's record (counts of healthy/restarting/quarantined components,
  chakra alignment, last alert) and says etcd's loss and return in the journal
  (``fleet_unreachable`` / ``fleet_reachable``); `status_note` says it in ``STATUS=``;
  the metric is ``razar_fleet_etcd_reachable`` (`razard.fleet.metrics`);
- `healer_gate`: the gate around a disruptive layer healer (sacral GPU flush/reset, crown
  full restart, a root network restart beyond a link bounce);
- `observe`: an `EventLog` observer: a quarantine is an action for the breaker, a failure
  signature is noted fleet-wide (the same one on K nodes trips the breaker for it), and
  the node that trips the breaker emits the one ``fleet_breaker_tripped`` alert, and
  every node says ``fleet_breaker_reset`` when an operator resets it (which resolves it);
- `RepairHooks` for the handover: the gate around applying a patch, the stop of AI patching
  of a signature the breaker holds, publishing a kept patch, and marking a fleet fix;
- `fix_entry`: the shared-fixes rung of the repair roster (after the local registry,
  before any remote agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry

from razard.escalation.signature import signature as line_signature
from razard.fleet.config import FleetConfig
from razard.fleet.core import Fix, Fleet
from razard.fleet.etcd import EtcdError
from razard.fleet.gate import fleet_gate, open_fleet, status_note
from razard.fleet.metrics import FleetCollector
from razard.journal import EventLog, Priority
from razard.repair.handover import Handover, RosterEntry
from razard.repair.types import AgentFailed, AgentSkipped, Proposal, RepairContext

log = logging.getLogger("razard.fleet")

#: A layer healer's disruptive action, by layer (the others are never gated).
HEALER_ACTIONS: Final = {
    "sacral": "sacral_gpu_flush",  # sacral_gpu_reset when the layer may reset a GPU
    "root": "root_network_restart",
    "crown": "crown_full_restart",
}
PATCH_ACTION: Final = "patch_apply"
FIX_AGENT: Final = "fleet"  # the shared-fixes rung's name and kind in the roster
#: without a slot the root healer may still bounce the link: no network manager to restart
ROOT_WITHOUT_SLOT: Final = {"RAZAR_ROOT_NETWORK_MANAGER": "none"}
MEMBERSHIP_PERIOD: Final = 1.0  # seconds between looks at what the node's record says


def failure_signature(component: str, error: str) -> str:
    """The failure signature the fleet compares between nodes: the component and the
    notifier's signature of its error (timestamps, pids, addresses and numbers stripped)."""
    return f"{component}: {line_signature(error)}"


def artifact_hash(artifacts: Mapping[str, str]) -> str:
    """The hash of a component's artifact bytes (path and content of each file)."""
    h = hashlib.sha256()
    for path, text in sorted(artifacts.items()):
        h.update(path.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class HealerPass:
    """What a layer healer may do: run as usual, run limited (``env``), or not (``reason``)."""

    allowed: bool
    reason: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


class FleetNode:
    """This razard in its fleet (see the module's doc)."""

    def __init__(self, fleet: Fleet, events: EventLog) -> None:
        self.fleet = fleet
        self.cfg: FleetConfig = fleet.cfg
        self.events = events
        self.last_alert = ""
        self._noted: dict[str, float] = {}  # signature -> when this node last noted it
        self._tasks: set[asyncio.Task[None]] = set()
        self._proposed: dict[str, Fix] = {}  # component -> the fleet fix proposed last

    @classmethod
    async def open(
        cls, cfg: FleetConfig, events: EventLog, registry: CollectorRegistry | None = None
    ) -> FleetNode | None:
        fleet = await open_fleet(cfg)
        if fleet is None:
            return None
        node = cls(fleet, events)
        fleet.on_breaker_cleared = node.breaker_reset
        if registry is not None:
            registry.register(FleetCollector(fleet))
        events.emit(
            "fleet_joined" if fleet.reachable else "fleet_unreachable",
            f"fleet: node {fleet.node} under {cfg.prefix} on {', '.join(cfg.endpoints)}"
            + (
                ""
                if fleet.reachable
                else f": etcd unreachable ({fleet.last_error}); "
                "disruptive actions denied until it answers"
            ),
            priority=Priority.NOTICE if fleet.reachable else Priority.WARNING,
            node=fleet.node,
        )
        return node

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.fleet.stop()

    def status_note(self) -> str:
        return status_note(self.fleet)

    # ---- membership and reachability

    async def run(
        self,
        states: Callable[[], Iterable[str]],
        aligned: Callable[[], bool | None] = lambda: None,
    ) -> None:
        """Keep the node's record true and say etcd's loss and return (runs until cancelled)."""
        was = self.fleet.reachable
        said: tuple[Any, ...] = ()
        while True:
            try:
                was, said = await self._look(was, said, states, aligned)
            except Exception:  # noqa: BLE001  razard must outlive any fault of the fleet's
                log.exception("fleet: keeping the node record")
            await asyncio.sleep(MEMBERSHIP_PERIOD)

    async def _look(
        self,
        was: bool,
        said: tuple[Any, ...],
        states: Callable[[], Iterable[str]],
        aligned: Callable[[], bool | None],
    ) -> tuple[bool, tuple[Any, ...]]:
        """One look: say a change of reachability, write the record when it changed."""
        now = self.fleet.reachable
        if now != was:
            was = now
            if now:
                said = ()  # joined again (maybe with a new lease): write the record
                self.events.emit(
                    "fleet_reachable",
                    f"fleet: etcd answers again; node {self.fleet.node} is back in the fleet",
                    priority=Priority.NOTICE,
                    node=self.fleet.node,
                )
            else:
                self.events.emit(
                    "fleet_unreachable",
                    f"fleet: etcd unreachable ({self.fleet.last_error}); restarts go on, "
                    "disruptive actions are denied until it answers",
                    priority=Priority.WARNING,
                    node=self.fleet.node,
                )
        counts: dict[str, int] = {}
        for s in states():
            key = "restarting" if s in ("restarting", "starting") else s
            counts[key] = counts.get(key, 0) + 1
        a = aligned()
        chakra = "" if a is None else ("aligned" if a else "misaligned")
        record = (
            counts.get("healthy", 0),
            counts.get("restarting", 0),
            counts.get("quarantined", 0),
            chakra,
            self.last_alert,
            self.fleet.lease,
        )
        if now and record != said:
            ok = await self.fleet.update(
                healthy=record[0],
                restarting=record[1],
                quarantined=record[2],
                chakra=chakra,
                last_alert=self.last_alert,
            )
            if ok:
                said = record
        return was, said

    # ---- the healers' gate

    @contextlib.asynccontextmanager
    async def healer_gate(
        self, layer: str, component: str, settings: Mapping[str, str]
    ) -> AsyncIterator[HealerPass]:
        """Hold a budget slot around a disruptive layer healer (see `HEALER_ACTIONS`)."""
        action = HEALER_ACTIONS.get(layer)
        allow_reset = settings.get("RAZAR_GPU_ALLOW_RESET", "").strip().lower()
        if action == "sacral_gpu_flush" and allow_reset in ("1", "true", "yes", "on"):
            action = "sacral_gpu_reset"  # as agents.healing.sacral reads the flag
        if action is None or not self.fleet.gated(action):
            yield HealerPass(True)
            return
        async with fleet_gate(
            self.fleet, self.events, action, component=component or f"layer:{layer}", layer=layer
        ) as grant:
            if grant:
                yield HealerPass(True)
            elif layer == "root":
                # a link bounce is not gated: only the network manager's restart is
                yield HealerPass(True, grant.grant.reason, ROOT_WITHOUT_SLOT)
            else:
                yield HealerPass(False, f"fleet: {action} not taken: {grant.grant.reason}")

    def breaker_alert(self, why: str) -> None:
        """The one alert for the fleet: only the node whose action tripped the breaker says it."""
        self.events.emit(
            "fleet_breaker_tripped",
            f"fleet breaker tripped: {why}; no new disruptive action on any node until "
            "`razarctl fleet breaker reset`",
            priority=Priority.ALERT,
            node=self.fleet.node,
        )

    def breaker_reset(self) -> None:
        """Said by every node that saw the breaker clear; the notifier of the node that sent
        the breaker's alert resolves it (the others hold no such alert)."""
        self.events.emit(
            "fleet_breaker_reset",
            "fleet breaker reset: disruptive actions and AI patching are allowed again",
            priority=Priority.NOTICE,
            node=self.fleet.node,
        )

    # ---- what the journal says: quarantines, failure signatures, alerts

    def observe(
        self, event: str, message: str, component: str | None, fields: Mapping[str, Any]
    ) -> None:
        """`EventLog` observer (called for every event razard emits; never blocks)."""
        if event == "operator_alert":
            self.last_alert = message[:512]
            if component:
                self._spawn(self._quarantined(component))
        elif event == "component_failed" and component:
            error = fields.get("error")  # the runner's RAZAR_ERROR: the failure alone
            if not isinstance(error, str):
                return
            sig = failure_signature(component, error)
            loop_now = asyncio.get_running_loop().time()
            last = self._noted.get(sig)
            if last is None or loop_now - last > self.cfg.breaker_window / 4:
                self._noted[sig] = loop_now
                self._spawn(self._signature(sig, component))

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a synchronous caller at shutdown): nothing to note
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quarantined(self, component: str) -> None:
        try:
            if await self.fleet.record_action("quarantine", component):
                self.breaker_alert(f"a quarantine of {component} on {self.fleet.node}")
        except EtcdError as e:
            log.warning("fleet: could not record the quarantine of %s: %s", component, e)

    async def _signature(self, sig: str, component: str) -> None:
        try:
            if await self.fleet.record_signature(sig, component):
                self.breaker_alert(
                    f"the same failure on {self.cfg.breaker_threshold} nodes ({sig}): "
                    "AI patching of it is stopped fleet-wide"
                )
        except EtcdError as e:
            log.warning("fleet: could not note a failure signature: %s", e)

    # ---- the repair rung

    def wire(self, *, events: EventLog, healers: Any, handover: Handover) -> None:
        """Put the fleet's hooks into razard's parts (each is one attribute there)."""
        events.observers.append(self.observe)
        healers.gate = self.healer_gate
        handover.roster = with_fix_rung(handover.roster, self)
        handover.fleet = RepairHooks(self)

    def fix_entry(self) -> RosterEntry:
        """The shared-fixes rung for the repair roster."""
        return RosterEntry(
            name=FIX_AGENT,
            kind=FIX_AGENT,
            factory=lambda comp: SharedFixAgent(self),
            remote=False,
        )


def with_fix_rung(roster: list[RosterEntry], node: FleetNode | None) -> list[RosterEntry]:
    """``roster`` with the shared-fixes rung after the local registry and before any remote
    agent (unchanged without a fleet or without any configured agent)."""
    if node is None or not roster:
        return roster
    at = 0
    for i, entry in enumerate(roster):
        if not entry.remote:
            at = i + 1
        else:
            break
    return [*roster[:at], node.fix_entry(), *roster[at:]]


class SharedFixAgent:
    """Proposes a fix another node verified and kept for the same signature and bytes."""

    name = FIX_AGENT
    kind = FIX_AGENT
    max_attempts = 1

    def __init__(self, node: FleetNode) -> None:
        self.node = node

    async def propose(self, ctx: RepairContext) -> Proposal:
        if not ctx.artifacts:
            raise AgentSkipped("no artifacts to compare with the fleet's fixes")
        sig = failure_signature(ctx.component, ctx.error)
        try:
            fixes = await self.node.fleet.find_fixes(
                ctx.component, sig, artifact_hash(ctx.artifacts), node=self.node.fleet.node
            )
        except EtcdError as e:
            raise AgentSkipped(f"etcd unreachable: {e}") from None
        if not fixes:
            raise AgentSkipped("no fix shared by the fleet for this failure and these bytes")
        fix = fixes[0]
        if not fix.diff.strip():
            raise AgentFailed(f"fleet fix {fix.id} is empty")
        self.node._proposed[ctx.component] = fix
        return Proposal(
            agent=FIX_AGENT,
            rationale=f"fleet: fix {fix.id} kept on {', '.join(fix.kept) or fix.node}",
            diff=fix.diff,
        )


class RepairHooks:
    """What the handover asks the fleet (a small seam: each call is one line there)."""

    def __init__(self, node: FleetNode) -> None:
        self.node = node

    async def patching_stopped(self, component: str, error: str) -> str:
        """Why AI patching of this failure is stopped fleet-wide, or ""."""
        try:
            stopped = await self.node.fleet.signature_stopped(failure_signature(component, error))
        except EtcdError:
            return ""  # the gate around the apply denies it anyway while etcd is away
        return (
            "the fleet's breaker stopped AI patching of this failure signature" if stopped else ""
        )

    @contextlib.asynccontextmanager
    async def apply_gate(self, component: str, layer: str, error: str) -> AsyncIterator[str]:
        """Hold a slot while a patch is applied and verified; yields "" or why not."""
        node = self.node
        async with fleet_gate(
            node.fleet,
            node.events,
            PATCH_ACTION,
            component=component,
            layer=layer,
            signature=failure_signature(component, error),
        ) as grant:
            yield "" if grant else f"fleet: {PATCH_ACTION} not taken: {grant.grant.reason}"

    async def after(
        self,
        component: str,
        error: str,
        artifacts: Mapping[str, str],
        agent_kind: str,
        record: Mapping[str, Any],
        diff: Callable[[], str],
    ) -> None:
        """After an attempt: publish a kept patch, or mark the fleet fix kept or failed."""
        node = self.node
        status = record.get("status")
        try:
            if agent_kind == FIX_AGENT:
                fix = node._proposed.pop(component, None)
                if fix is None or status == "skipped":
                    return
                if status == "healed":
                    await node.fleet.fix_kept(fix)
                else:
                    marked = await node.fleet.fix_failed(fix)
                    node.events.emit(
                        "fleet_fix_failed",
                        f"fleet fix {fix.id} from {fix.node} did not hold here ({status})"
                        + ("; withdrawn" if marked is not None and marked.withdrawn else ""),
                        component=component,
                        priority=Priority.WARNING,
                        fix=fix.id,
                    )
                return
            if status != "healed" or not record.get("patched") or not artifacts:
                return
            text = await asyncio.to_thread(diff)
            if not text.strip():
                return
            fix = await node.fleet.publish_fix(
                component, failure_signature(component, error), artifact_hash(artifacts), text
            )
            node.events.emit(
                "fleet_fix_published",
                f"patch {record.get('patch_id')} shared with the fleet as fix {fix.id}",
                component=component,
                priority=Priority.NOTICE,
                fix=fix.id,
            )
        except (EtcdError, ValueError) as e:
            log.warning("fleet: shared fixes of %s: %s", component, e)

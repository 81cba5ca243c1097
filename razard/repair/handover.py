"""The handover: a failure the restarts could not fix goes to the repair agents, in roster order.

Every attempt is written to ``razar_ai_invocations.json`` (JSON lines) before
the agent is asked and again with its outcome, so every later rung sees every
earlier failure, patch and refusal, and a restarted razard does not repeat
blindly. A proposal goes through the patch engine (check -> snapshot + apply ->
verify with the component's own probe -> keep or revert).

    registry -> crown -> kimi-cho -> k2-coder -> opencode -> (rstar, once the
    cumulative attempts reach RAZAR_RSTAR_THRESHOLD)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from razard.config import ComponentConfig
from razard.errors import StateError
from razard.escalation import trust
from razard.escalation.source import SourceError, journal_argv, journal_time, read_journal
from razard.journal import EventLog, Priority
from razard.layout import INVOCATIONS_FILE, LONG_TASK_FILE
from razard.metrics import Metrics
from razard.repair.patch import AppliedPatch, PatchEngine
from razard.repair.scrub import scrub
from razard.repair.types import (
    AgentFailed,
    AgentSkipped,
    PatchRefused,
    Proposal,
    RepairAgent,
    RepairContext,
    RepairError,
)
from razard.storage import PRIVATE_MODE, append_jsonl, read_jsonl

log = logging.getLogger(__name__)

HISTORY_SHOWN: Final = 20  # earlier invocations told to the agents
JOURNAL_LINES: Final = 30
LONG_TASK_PAUSE: Final = 1.0  # between rounds of a long task, doubling up to the cap
LONG_TASK_PAUSE_CAP: Final = 60.0

Verify = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class FailureInfo:
    """What the handover needs to know of a failure (decoupled from the supervisor)."""

    error: str
    probe_output: str = ""
    exit_status: int | None = None
    unit_result: str = ""
    since: float | None = None  # unix time this failure cycle began: older journal lines are
    # another incident's and would mislead the agents


class FleetHooks(Protocol):
    """What the handover asks a fleet (`razard.fleet.node.RepairHooks`); None: no fleet."""

    async def patching_stopped(self, component: str, error: str) -> str: ...
    def apply_gate(
        self, component: str, layer: str, error: str
    ) -> contextlib.AbstractAsyncContextManager[str]: ...
    async def after(
        self,
        component: str,
        error: str,
        artifacts: Mapping[str, str],
        agent_kind: str,
        record: Mapping[str, Any],
        diff: Callable[[], str],
    ) -> None: ...


@dataclass
class RosterEntry:
    """One configured rung: how to make its agent for a component, or why it is skipped."""

    name: str
    kind: str
    factory: Callable[[ComponentConfig], RepairAgent] | None
    skip_reason: str | None = None
    remote: bool = True
    takes_over_after: int | None = None  # rStar: cumulative attempts before it runs
    max_attempts: int = 1


@dataclass
class Outcome:
    healed: bool
    attempts: int = 0
    agent: str | None = None
    patch_id: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


def _now() -> tuple[str, float]:
    t = time.time()
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds"), t


async def journal_tail(
    unit: str, since: float | None = None, lines: int = JOURNAL_LINES
) -> tuple[str, ...]:
    """The unit's last journal lines (its own output), best effort and bounded in time.

    Only lines journald itself attributes to the unit (`razard.escalation.trust`):
    this goes into the repair agents' prompt, and anyone can send the journal a line
    under the unit's SYSLOG_IDENTIFIER.
    """
    ident = unit.removesuffix(".service")
    argv = journal_argv(
        [
            "--output-fields=" + ",".join(("MESSAGE", *trust.FIELDS)),
            "-n",
            str(lines * 4),  # room for lines dropped below
            *([f"--since={journal_time(since)}"] if since is not None else []),
        ],
        [
            f"_SYSTEMD_UNIT={unit}",
            "+",
            f"_SYSTEMD_USER_UNIT={unit}",
            "+",
            f"SYSLOG_IDENTIFIER={ident}",  # the cgroup decides, below
        ],
    )
    try:
        async with asyncio.timeout(5):
            read = await read_journal(argv)
    except (SourceError, TimeoutError):
        return ()
    kept: list[str] = []
    for entry in read.entries:
        if trust.unit_of(entry) != unit:
            continue
        message = entry.get("MESSAGE")
        if message is not None:
            kept.extend(message.splitlines() or [""])
    return tuple(kept[-lines:])


class Handover:
    """Runs the repair roster for one component failure at a time."""

    def __init__(
        self,
        state_dir: Path,
        roster: Sequence[RosterEntry],
        engine: PatchEngine,
        events: EventLog,
        metrics: Metrics,
        *,
        remote_attempts: int | None = None,
        escalation_warning: int | None = None,
        journal: Callable[[str, float | None], Awaitable[tuple[str, ...]]] = journal_tail,
    ) -> None:
        self.state_dir = state_dir
        self.roster = list(roster)
        self.engine = engine
        self.events = events
        self.metrics = metrics
        self.remote_attempts = remote_attempts
        self.escalation_warning = escalation_warning
        self._journal = journal
        self.invocations = state_dir / INVOCATIONS_FILE
        self.long_task_file = state_dir / LONG_TASK_FILE
        self.fleet: FleetHooks | None = None  # the fleet's budget, breaker and shared fixes

    # ------------------------------------------------------------ records

    def history(self, component: str) -> list[dict[str, Any]]:
        """Earlier finished invocations for ``component`` (oldest first)."""
        return [
            r
            for r in read_jsonl(self.invocations)
            if r.get("component") == component and r.get("status") not in ("started", "skipped")
        ]

    def _record(self, path: Path, rec: dict[str, Any]) -> dict[str, Any]:
        iso, unix = _now()
        rec = {**rec, "time": iso, "unix": unix}
        # 0600: a model's rationale or an agent's error may quote an artifact's secret
        append_jsonl(path, rec, mode=PRIVATE_MODE)
        return rec

    def _emit(
        self,
        comp: ComponentConfig,
        event: str,
        message: str,
        priority: int = Priority.INFO,
        **fields: Any,
    ) -> None:
        # an agent's error or rationale may quote an artifact's secret (a DSN it echoed)
        self.events.emit(
            event,
            scrub(message),
            component=comp.name,
            layer=comp.layer,
            priority=priority,
            unit=comp.unit,
            **{k: scrub(v) if isinstance(v, str) else v for k, v in fields.items()},
        )

    # ------------------------------------------------------------ the roster

    def describe(self) -> list[dict[str, Any]]:
        """The roster as razarctl ladder shows it."""
        return [
            {
                "name": e.name,
                "kind": e.kind,
                "configured": e.factory is not None,
                "skip_reason": e.skip_reason,
                "max_attempts": e.max_attempts,
                "takes_over_after": e.takes_over_after,
            }
            for e in self.roster
        ]

    @property
    def usable(self) -> bool:
        return any(e.factory is not None for e in self.roster)

    async def run(
        self,
        comp: ComponentConfig,
        failure: FailureInfo,
        verify: Verify,
        *,
        long_task: bool = False,
        remote_attempts: int | None = None,
    ) -> Outcome:
        """Try the roster until one patch verifies; returns what happened.

        With ``long_task`` the roster is walked again and again until the
        component is healthy or the task is cancelled; a cancel restores the
        snapshot of an unverified patch and records ``aborted``.
        """
        outcome = Outcome(healed=False)
        remote_cap = remote_attempts if remote_attempts is not None else self.remote_attempts
        remote_used = 0
        # attempts of this failure cycle only: an old incident's must not bring rStar in early
        cumulative = sum(
            1
            for r in self.history(comp.name)
            if failure.since is None or float(r.get("unix", 0)) >= failure.since
        )
        escalations = 0
        # no artifacts: no patch could be kept, so the failure's journal lines stay on this
        # node; the registry (local: it may restart, signal or heal) is still asked
        local_only = not comp.artifacts
        for entry in self.roster:
            if entry.factory is None:
                self._emit(
                    comp, "agent_skipped", f"{entry.name}: {entry.skip_reason}", agent=entry.name
                )
            elif local_only and entry.remote:
                self._emit(
                    comp,
                    "agent_skipped",
                    f"{entry.name}: {comp.name} has no artifacts, so no patch could be kept; "
                    "its failure is not sent off this node",
                    agent=entry.name,
                )
        pause = LONG_TASK_PAUSE
        while True:
            tried_this_round = 0
            for entry in self.roster:
                if entry.factory is None or (local_only and entry.remote):
                    continue
                try:
                    agent = entry.factory(comp)
                except AgentSkipped as e:  # e.g. a token that cannot be sent
                    self._emit(comp, "agent_skipped", f"{entry.name}: {e}", agent=entry.name)
                    continue
                if entry.takes_over_after is not None and cumulative < entry.takes_over_after:
                    self._emit(
                        comp,
                        "agent_waiting",
                        f"{entry.name} takes over after {entry.takes_over_after} attempts; "
                        f"{cumulative} so far",
                        agent=entry.name,
                    )
                    continue
                escalations += 1
                self.metrics.escalations.labels(comp.name).inc()
                if self.escalation_warning and escalations == self.escalation_warning:
                    self._emit(
                        comp,
                        "escalation_warning",
                        f"{escalations} escalations in this repair cycle",
                        priority=Priority.WARNING,
                    )
                    self.metrics.escalation_warnings.labels(comp.name).inc()
                for n in range(1, agent.max_attempts + 1):
                    if entry.remote and remote_cap is not None and remote_used >= remote_cap:
                        self._emit(
                            comp,
                            "agent_skipped",
                            f"{entry.name}: remote attempts bounded to {remote_cap}",
                            agent=entry.name,
                        )
                        break
                    rec = await self._attempt(
                        comp, failure, verify, entry, agent, n, cumulative + 1, long_task
                    )
                    outcome.records.append(rec)
                    if rec["status"] == "skipped":  # not an attempt: nothing was asked of it
                        break
                    if entry.remote:
                        remote_used += 1
                    cumulative += 1
                    outcome.attempts += 1
                    tried_this_round += 1
                    if rec["status"] == "healed":
                        outcome.healed = True
                        outcome.agent = entry.name
                        outcome.patch_id = rec.get("patch_id")
                        return outcome
            if not long_task or tried_this_round == 0:
                return outcome  # a long task with nothing left to ask ends instead of spinning
            self._emit(comp, "long_task_round", f"not healed yet; asking again in {pause:g}s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONG_TASK_PAUSE_CAP)

    async def _attempt(
        self,
        comp: ComponentConfig,
        failure: FailureInfo,
        verify: Verify,
        entry: RosterEntry,
        agent: RepairAgent,
        attempt: int,
        cumulative: int,
        long_task: bool,
    ) -> dict[str, Any]:
        base = {
            "component": comp.name,
            "agent": entry.name,
            "kind": entry.kind,
            "attempt": cumulative,
            "agent_attempt": attempt,
            "error": failure.error,
        }
        if self.fleet is not None and entry.remote:
            stopped = await self.fleet.patching_stopped(comp.name, failure.error)
            if stopped:
                return self._finish(comp, base, "skipped", stopped, long_task)
        self._record(self.invocations, {**base, "status": "started", "patched": False})
        ctx = RepairContext(
            component=comp.name,
            unit=comp.unit,
            layer=comp.layer,
            error=failure.error,
            probe_output=failure.probe_output,
            exit_status=failure.exit_status,
            unit_result=failure.unit_result,
            journal=await self._journal(comp.unit, failure.since),
            history=tuple(self.history(comp.name)[-HISTORY_SHOWN:]),
            artifacts=(
                await asyncio.to_thread(self.engine.read_artifacts, comp)
                if comp.artifact_root
                else {}
            ),
            attempt=cumulative,
            cycle_started=failure.since,
        )
        self._emit(
            comp, "agent_invoked", f"asking {entry.name} (attempt {attempt})", agent=entry.name
        )
        t0 = time.monotonic()
        try:
            proposal = await agent.propose(ctx)
        except AgentSkipped as e:
            return self._finish(comp, base, "skipped", str(e), long_task)
        except AgentFailed as e:
            entry_name = getattr(e, "entry", None)  # a registry command that ran and failed
            if entry_name:
                base = {**base, "signature": entry_name}
            return self._finish(comp, base, "failed", str(e), long_task)
        except Exception as e:  # a broken reply must not end supervision
            log.exception("agent %s failed unexpectedly", entry.name)
            return self._finish(
                comp, base, "failed", f"agent error: {type(e).__name__}: {e}"[:500], long_task
            )
        finally:
            self.metrics.agent_duration.labels(entry.name).observe(time.monotonic() - t0)
        if self.fleet is None:
            return await self._patch(comp, base, proposal, verify, long_task)
        fleet = self.fleet
        gate: contextlib.AbstractAsyncContextManager[str] = (
            fleet.apply_gate(comp.name, comp.layer, failure.error)
            if proposal.edits or proposal.diff  # a registry command is not gated
            else contextlib.nullcontext("")
        )
        async with gate as denied:  # a budget slot held while the patch is applied and verified
            rec = (
                self._finish(comp, base, "failed", denied, long_task)
                if denied
                else await self._patch(comp, base, proposal, verify, long_task)
            )
        patch_id = rec.get("patch_id")
        await fleet.after(
            comp.name,
            failure.error,
            ctx.artifacts,
            entry.kind,
            rec,
            lambda: self.engine.diff(comp.name, patch_id) if patch_id else "",
        )
        return rec

    async def _patch(
        self,
        comp: ComponentConfig,
        base: dict[str, Any],
        proposal: Proposal,
        verify: Verify,
        long_task: bool,
    ) -> dict[str, Any]:
        signature = (
            proposal.rationale.split(":", 2)[1]
            if proposal.rationale.startswith("registry:")
            else None
        )
        if signature:
            base = {**base, "signature": signature}
        if not proposal.edits and not proposal.diff:
            # the agent acted itself (a registry command): only verification is left
            ok = await verify()
            return self._finish(
                comp,
                base,
                "healed" if ok else "failed",
                None if ok else "probe still failing after the agent's action",
                long_task,
                rationale=proposal.rationale,
            )
        try:
            prepared = await asyncio.to_thread(self.engine.check, comp, proposal)
        except PatchRefused as e:
            self.metrics.patches.labels(comp.name, "refused").inc()
            return self._finish(
                comp, base, "refused", str(e), long_task, rationale=proposal.rationale
            )
        applying = asyncio.ensure_future(asyncio.to_thread(self.engine.apply, comp, prepared))
        try:
            # shielded: a cancel must not lose track of an apply still running in its thread
            applied: AppliedPatch = await asyncio.shield(applying)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                done = await applying
                await asyncio.to_thread(self.engine.abort, comp, done)
                self.metrics.patches.labels(comp.name, "reverted").inc()
                self._finish(
                    comp,
                    {**base, "patch_id": done.patch_id},
                    "aborted",
                    "aborted while the patch was being applied",
                    long_task,
                )
            raise
        except PatchRefused as e:  # the file changed between check and apply
            self.metrics.patches.labels(comp.name, "refused").inc()
            return self._finish(
                comp, base, "refused", str(e), long_task, rationale=proposal.rationale
            )
        except (RepairError, StateError) as e:  # a failed write (already undone), disk full
            return self._finish(comp, base, "failed", f"apply: {e}", long_task)
        self.metrics.patches.labels(comp.name, "applied").inc()
        self._emit(
            comp,
            "patch_applied",
            f"{base['agent']} patch {applied.patch_id} applied to "
            f"{', '.join(applied.files)}; verifying",
            agent=base["agent"],
            patch_id=applied.patch_id,
        )
        try:
            ok = await verify()
        except asyncio.CancelledError:
            # operator abort (long task) or razard stopping: never leave an unverified patch
            with contextlib.suppress(Exception):
                # off the event loop, and shielded so a second cancel cannot leave it pending
                await asyncio.shield(asyncio.to_thread(self.engine.abort, comp, applied))
                self.metrics.patches.labels(comp.name, "reverted").inc()
                self._finish(
                    comp,
                    {**base, "patch_id": applied.patch_id},
                    "aborted",
                    "aborted before the patch was verified",
                    long_task,
                )
            raise
        extra = {
            "patch_id": applied.patch_id,
            "diff_hash": applied.diff_hash,
            "snapshot_id": applied.snapshot_id,
        }
        if ok:
            try:
                await asyncio.to_thread(self.engine.keep, comp, applied)
            except (RepairError, StateError) as e:
                return self._finish(comp, {**base, **extra}, "failed", f"keep: {e}", long_task)
            return self._finish(
                comp,
                {**base, **extra},
                "healed",
                None,
                long_task,
                rationale=proposal.rationale,
                patched=True,
            )
        try:
            await asyncio.to_thread(
                self.engine.revert, comp, applied, "probe failed after the patch"
            )
        except (RepairError, StateError) as e:
            return self._finish(comp, {**base, **extra}, "failed", f"revert: {e}", long_task)
        self.metrics.patches.labels(comp.name, "reverted").inc()
        return self._finish(
            comp,
            {**base, **extra},
            "reverted",
            "probe failed after the patch",
            long_task,
            rationale=proposal.rationale,
            patched=True,
        )

    def _finish(
        self,
        comp: ComponentConfig,
        base: Mapping[str, Any],
        status: str,
        error: str | None,
        long_task: bool,
        *,
        rationale: str = "",
        patched: bool = False,
    ) -> dict[str, Any]:
        rec = {**base, "status": status, "patched": patched}
        if error is not None:
            rec["reason"] = scrub(error)
        if rationale:
            # what is needed to follow the attempt, not the model's whole reply
            rec["rationale"] = scrub(rationale[:500])
        rec = self._record(self.invocations, rec)
        if long_task:
            self._record(self.long_task_file, rec)
        if status == "healed":
            self.metrics.ai_success.labels(comp.name).inc()
            self._emit(
                comp,
                "repair_healed",
                f"{base['agent']} healed {comp.name}",
                priority=Priority.NOTICE,
                agent=base["agent"],
            )
        elif status != "skipped":
            self.metrics.ai_failure.labels(comp.name).inc()
            self._emit(
                comp,
                "repair_failed",
                f"{base['agent']}: {status}: {error}",
                priority=Priority.WARNING,
                agent=base["agent"],
            )
        else:
            self._emit(comp, "agent_skipped", f"{base['agent']}: {error}", agent=base["agent"])
        return rec

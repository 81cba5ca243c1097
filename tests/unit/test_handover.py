"""Unit tests of razard.repair.handover: the roster walked in order with scripted fake agents,
the real patch engine on tmp_path files, a real EventLog (razar.log) and real metrics."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from razard.config import ComponentConfig
from razard.journal import EventLog
from razard.layout import HISTORY_FILE, INVOCATIONS_FILE, LONG_TASK_FILE, PATCHES_FILE
from razard.metrics import Metrics
from razard.repair.handover import (
    FailureInfo,
    Handover,
    Outcome,
    RosterEntry,
)
from razard.repair.patch import AppliedPatch, PatchEngine, PreparedPatch
from razard.repair.types import (
    AgentFailed,
    AgentSkipped,
    FileEdit,
    Proposal,
    RepairAgent,
    RepairContext,
)
from razard.storage import read_jsonl

COMPONENT = "x"
# CRLF, trailing blanks, a non-UTF-8 byte and no final newline: a revert must give these back
ORIGINAL = b"# app config \xe9t\xe9\r\nmode = broken\r\nport = 8080   \r\n# end"
JOURNAL = ("x: listening on :8080", "x: fatal: bad mode 'broken'")
SKIP_REASON = "endpoint not configured: set KIMI_K2_URL"

Step = Proposal | Exception


def good(agent: str) -> Proposal:
    """A patch that makes verify pass."""
    return Proposal(
        agent=agent,
        rationale="set a valid mode",
        edits=(FileEdit("app.conf", "mode = broken", "mode = ok"),),
    )


def bad(agent: str) -> Proposal:
    """A patch that applies cleanly but leaves the component broken."""
    return Proposal(
        agent=agent,
        rationale="try another mode",
        edits=(FileEdit("app.conf", "mode = broken", "mode = worse"),),
    )


class FakeAgent:
    """A repair agent replaying ``steps`` (the last one repeats); logs each call's context."""

    def __init__(
        self,
        name: str,
        steps: Iterable[Step],
        *,
        kind: str = "fake",
        max_attempts: int = 1,
        calls: list[str] | None = None,
        watch: Path | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.max_attempts = max_attempts
        self.steps = list(steps)
        self.contexts: list[RepairContext] = []
        self.calls = calls  # shared between agents: the order they were asked in
        self.watch = watch
        self.seen: list[bytes] = []  # the watched file's bytes at each call

    async def propose(self, ctx: RepairContext) -> Proposal:
        self.contexts.append(ctx)
        if self.calls is not None:
            self.calls.append(self.name)
        if self.watch is not None:
            self.seen.append(self.watch.read_bytes())
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def entry(
    agent: FakeAgent,
    *,
    remote: bool = True,
    takes_over_after: int | None = None,
) -> RosterEntry:
    def factory(comp: ComponentConfig) -> RepairAgent:
        return agent

    return RosterEntry(
        name=agent.name,
        kind=agent.kind,
        factory=factory,
        remote=remote,
        takes_over_after=takes_over_after,
        max_attempts=agent.max_attempts,
    )


class FakeJournal:
    """The journal tail: fixed lines, and the (unit, since) it was asked for."""

    def __init__(self, lines: tuple[str, ...] = JOURNAL) -> None:
        self.lines = lines
        self.calls: list[tuple[str, float | None]] = []

    async def __call__(self, unit: str, since: float | None) -> tuple[str, ...]:
        self.calls.append((unit, since))
        return self.lines


@dataclass
class Env:
    """One component with one artifact under tmp_path, and everything a Handover needs."""

    tmp: Path
    comp: ComponentConfig
    conf: Path
    state: Path
    engine: PatchEngine
    events: EventLog
    metrics: Metrics
    journal: FakeJournal = field(default_factory=FakeJournal)

    def handover(self, roster: Iterable[RosterEntry], **kw: Any) -> Handover:
        return Handover(
            self.state,
            list(roster),
            self.engine,
            self.events,
            self.metrics,
            journal=self.journal,
            **kw,
        )

    async def verify(self) -> bool:
        """Healthy iff app.conf currently says ``mode = ok``."""
        return b"mode = ok" in self.conf.read_bytes()

    def invocations(self, *, started: bool = False) -> list[dict[str, Any]]:
        recs = read_jsonl(self.state / INVOCATIONS_FILE)
        return [r for r in recs if started or r["status"] != "started"]

    def long_task(self) -> list[dict[str, Any]]:
        return read_jsonl(self.state / LONG_TASK_FILE)

    def history(self) -> list[dict[str, Any]]:
        return read_jsonl(self.state / HISTORY_FILE)

    def log(self, event: str | None = None) -> list[dict[str, Any]]:
        recs = read_jsonl(self.tmp / "razar.log")
        return [r for r in recs if event is None or r["event"] == event]

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    root = tmp_path / "app"
    root.mkdir()
    conf = root / "app.conf"
    conf.write_bytes(ORIGINAL)
    conf.chmod(0o640)
    comp = ComponentConfig(
        name=COMPONENT,
        layer="throat",
        priority=1,
        unit="razar-x.service",
        artifacts=("app.conf",),
        artifact_root=str(root),
    )
    state = tmp_path / "state"
    events = EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no-journald.sock"))
    yield Env(
        tmp=tmp_path,
        comp=comp,
        conf=conf,
        state=state,
        engine=PatchEngine(state),
        events=events,
        metrics=Metrics("test"),
    )
    events.close()


FAILURE = FailureInfo(error="probe failed: exit 1", probe_output="bad mode", since=1700000000.0)


def statuses(recs: Iterable[dict[str, Any]]) -> list[str]:
    return [str(r["status"]) for r in recs]


async def test_roster_order_first_fails_second_heals(env: Env) -> None:
    """The first agent fails, the second one's patch heals; records and counters say so."""
    calls: list[str] = []
    first = FakeAgent("crown", [AgentFailed("HTTP 503")], calls=calls)
    second = FakeAgent("kimi-cho", [good("kimi-cho")], calls=calls)
    h = env.handover([entry(first), entry(second)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert outcome.healed and outcome.agent == "kimi-cho" and outcome.attempts == 2
    assert calls == ["crown", "kimi-cho"]
    assert env.conf.read_bytes() == ORIGINAL.replace(b"mode = broken", b"mode = ok")
    recs = env.invocations()
    assert statuses(recs) == ["failed", "healed"]
    assert [r["agent"] for r in recs] == ["crown", "kimi-cho"]
    assert recs[0]["reason"] == "HTTP 503"
    assert recs[1]["patch_id"] == outcome.patch_id and recs[1]["patched"] is True
    assert statuses(env.invocations(started=True)).count("started") == 2
    assert statuses(outcome.records) == ["failed", "healed"]
    assert statuses(env.history()) == ["applied", "kept"]
    assert env.sample("razar_ai_invocation_success_total", component=COMPONENT) == 1
    assert env.sample("razar_ai_invocation_failure_total", component=COMPONENT) == 1
    assert env.sample("razar_patches_total", component=COMPONENT, action="applied") == 1
    assert [e["agent"] for e in env.log("repair_healed")] == ["kimi-cho"]


async def test_skipped_entry_is_logged_and_never_invoked(env: Env) -> None:
    """An entry without a factory is logged agent_skipped with its reason and never asked."""
    healer = FakeAgent("opencode", [good("opencode")])
    skipped = RosterEntry(name="k2-coder", kind="openai", factory=None, skip_reason=SKIP_REASON)
    h = env.handover([skipped, entry(healer)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert outcome.healed and outcome.agent == "opencode" and outcome.attempts == 1
    skips = env.log("agent_skipped")
    assert len(skips) == 1
    assert skips[0]["agent"] == "k2-coder" and SKIP_REASON in skips[0]["message"]
    assert skips[0]["component"] == COMPONENT
    assert all(r["agent"] != "k2-coder" for r in env.invocations(started=True))
    assert [e["agent"] for e in env.log("agent_invoked")] == ["opencode"]


async def test_agent_raising_skipped_is_no_failure(env: Env) -> None:
    """An agent raising AgentSkipped is recorded skipped, not counted failed; the next one runs."""
    skipper = FakeAgent("opencode", [AgentSkipped("opencode binary not found")], max_attempts=3)
    healer = FakeAgent("rstar", [good("rstar")])
    h = env.handover([entry(skipper), entry(healer)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert outcome.healed and outcome.agent == "rstar"
    assert len(skipper.contexts) == 1  # a skip ends that agent's attempts
    assert statuses(env.invocations()) == ["skipped", "healed"]
    assert env.sample("razar_ai_invocation_failure_total", component=COMPONENT) == 0
    assert any("binary not found" in e["message"] for e in env.log("agent_skipped"))


async def test_bad_patch_reverted_then_next_attempt_heals(env: Env) -> None:
    """A patch that does not verify is reverted byte for byte; the retry sees it in history."""
    agent = FakeAgent("k2-coder", [bad("k2-coder"), good("k2-coder")], max_attempts=2)
    agent.watch = env.conf
    mode = stat.S_IMODE(env.conf.stat().st_mode)
    h = env.handover([entry(agent)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert outcome.healed and outcome.attempts == 2
    assert agent.seen == [ORIGINAL, ORIGINAL]  # the bad patch was gone before the retry
    assert stat.S_IMODE(env.conf.stat().st_mode) == mode
    assert env.conf.read_bytes() == ORIGINAL.replace(b"mode = broken", b"mode = ok")
    assert statuses(env.invocations()) == ["reverted", "healed"]
    assert statuses(env.history()) == ["applied", "reverted", "applied", "kept"]
    first_ctx, second_ctx = agent.contexts
    assert first_ctx.history == ()
    assert statuses(second_ctx.history) == ["reverted"]
    reverted = second_ctx.history[0]
    assert reverted["agent"] == "k2-coder" and reverted["patched"] is True
    assert reverted["reason"] == "probe failed after the patch"
    assert reverted["patch_id"] == env.history()[1]["patch_id"]
    assert second_ctx.attempt == 2 and first_ctx.attempt == 1
    assert second_ctx.artifacts["app.conf"] == ORIGINAL.decode("utf-8", "replace")
    assert env.sample("razar_patches_total", component=COMPONENT, action="reverted") == 1


async def test_patch_outside_artifacts_is_refused(env: Env) -> None:
    """An edit of ../x is refused, counted as a failure, and changes nothing on disk."""
    escape = Proposal(agent="crown", edits=(FileEdit("../x", "", "pwned\n"),))
    agent = FakeAgent("crown", [escape])
    h = env.handover([entry(agent)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert not outcome.healed and outcome.attempts == 1
    assert env.conf.read_bytes() == ORIGINAL
    assert not (env.tmp / "x").exists()
    recs = env.invocations()
    assert statuses(recs) == ["refused"] and "'..'" in recs[0]["reason"]
    assert env.history() == []  # nothing was applied
    assert statuses(read_jsonl(env.state / PATCHES_FILE)) == ["refused"]
    assert env.sample("razar_ai_invocation_failure_total", component=COMPONENT) == 1
    assert env.sample("razar_patches_total", component=COMPONENT, action="refused") == 1
    assert env.sample("razar_ai_invocation_success_total", component=COMPONENT) == 0


async def test_rstar_waits_until_threshold(env: Env) -> None:
    """rStar (takes_over_after=3) is not asked after only 2 cumulative attempts."""
    crown = FakeAgent("crown", [AgentFailed("no idea")], max_attempts=2)
    rstar = FakeAgent("rstar", [good("rstar")])
    h = env.handover([entry(crown), entry(rstar, takes_over_after=3)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert not outcome.healed and outcome.attempts == 2
    assert rstar.contexts == []
    waiting = env.log("agent_waiting")
    assert [e["agent"] for e in waiting] == ["rstar"] and "2 so far" in waiting[0]["message"]
    assert env.conf.read_bytes() == ORIGINAL


async def test_rstar_takes_over_after_threshold(env: Env) -> None:
    """rStar is asked once earlier entries made 3 cumulative attempts, and sees all three."""
    calls: list[str] = []
    crown = FakeAgent("crown", [AgentFailed("no idea")], max_attempts=3, calls=calls)
    rstar = FakeAgent("rstar", [good("rstar")], calls=calls)
    h = env.handover([entry(crown), entry(rstar, takes_over_after=3)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert outcome.healed and outcome.agent == "rstar" and outcome.attempts == 4
    assert calls == ["crown"] * 3 + ["rstar"]
    (ctx,) = rstar.contexts
    assert ctx.attempt == 4 and statuses(ctx.history) == ["failed"] * 3
    assert env.log("agent_waiting") == []


async def test_rstar_threshold_counts_earlier_runs(env: Env) -> None:
    """The rStar threshold counts attempts of earlier runs recorded in razar_ai_invocations.json."""
    crown = FakeAgent("crown", [AgentFailed("no idea")], max_attempts=2)
    rstar = FakeAgent("rstar", [good("rstar")])
    h = env.handover([entry(crown), entry(rstar, takes_over_after=3)])

    first = await h.run(env.comp, FAILURE, env.verify)
    second = await h.run(env.comp, FAILURE, env.verify)

    assert not first.healed and second.healed and second.agent == "rstar"
    assert len(crown.contexts) == 4 and len(rstar.contexts) == 1
    assert rstar.contexts[0].attempt == 5


async def test_remote_attempts_bound_remote_entries_only(env: Env) -> None:
    """remote_attempts=1 allows one remote attempt in all; the local registry is not bounded."""
    calls: list[str] = []
    crown = FakeAgent("crown", [AgentFailed("no")], max_attempts=2, calls=calls)
    k2 = FakeAgent("k2-coder", [good("k2-coder")], max_attempts=2, calls=calls)
    registry = FakeAgent(
        "registry", [AgentFailed("no signature")], kind="registry", max_attempts=3, calls=calls
    )
    h = env.handover([entry(crown), entry(k2), entry(registry, remote=False)], remote_attempts=1)

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert not outcome.healed and outcome.attempts == 4
    assert calls == ["crown", "registry", "registry", "registry"]
    bounded = [e for e in env.log("agent_skipped") if "bounded to 1" in e["message"]]
    assert {e["agent"] for e in bounded} == {"crown", "k2-coder"}
    assert env.conf.read_bytes() == ORIGINAL


async def test_remote_attempts_argument_overrides_default(env: Env) -> None:
    """run(remote_attempts=...) overrides the Handover's own bound."""
    crown = FakeAgent("crown", [AgentFailed("no")], max_attempts=3)
    h = env.handover([entry(crown)], remote_attempts=1)

    outcome = await h.run(env.comp, FAILURE, env.verify, remote_attempts=2)

    assert outcome.attempts == 2 and len(crown.contexts) == 2


async def test_escalation_warning_after_second_entry(env: Env) -> None:
    """escalation_warning=2: the 2nd entry tried raises one warning event and one counter."""
    agents = [FakeAgent(n, [AgentFailed("no")]) for n in ("crown", "kimi-cho", "k2-coder")]
    h = env.handover([entry(a) for a in agents], escalation_warning=2)

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert not outcome.healed and outcome.attempts == 3
    warnings = env.log("escalation_warning")
    assert len(warnings) == 1
    assert warnings[0]["level"] == "warning" and warnings[0]["component"] == COMPONENT
    assert "2 escalations" in warnings[0]["message"]
    events = [(e["event"], e.get("agent")) for e in env.log()]
    at = events.index(("escalation_warning", None))
    # not before the 1st entry finished; before the 3rd was asked
    assert (
        events.index(("repair_failed", "crown")) < at < events.index(("agent_invoked", "k2-coder"))
    )
    assert env.sample("razar_escalation_warnings_total", component=COMPONENT) == 1
    assert env.sample("razar_escalations_total", component=COMPONENT) == 3


async def test_long_task_walks_roster_until_healed(env: Env) -> None:
    """long_task: two failed rounds, then a heal; every attempt is in razar_long_task.json."""
    calls: list[str] = []
    crown = FakeAgent("crown", [AgentFailed("one"), AgentFailed("two"), good("crown")], calls=calls)
    k2 = FakeAgent("k2-coder", [bad("k2-coder")], calls=calls)
    h = env.handover([entry(crown), entry(k2)])

    outcome = await h.run(env.comp, FAILURE, env.verify, long_task=True)

    assert outcome.healed and outcome.agent == "crown" and outcome.attempts == 5
    assert calls == ["crown", "k2-coder"] * 2 + ["crown"]
    want = ["failed", "reverted", "failed", "reverted", "healed"]
    assert statuses(env.invocations()) == want
    long = env.long_task()
    assert statuses(long) == want
    untimed = [{k: v for k, v in r.items() if k not in ("time", "unix")} for r in long]
    assert untimed == [
        {k: v for k, v in r.items() if k not in ("time", "unix")} for r in env.invocations()
    ]
    assert [r["attempt"] for r in long] == [1, 2, 3, 4, 5]
    assert env.conf.read_bytes() == ORIGINAL.replace(b"mode = broken", b"mode = ok")
    assert env.sample("razar_ai_invocation_failure_total", component=COMPONENT) == 4


async def test_no_long_task_file_without_long_task(env: Env) -> None:
    """Without long_task nothing is written to razar_long_task.json."""
    crown = FakeAgent("crown", [good("crown")])
    h = env.handover([entry(crown)])

    assert (await h.run(env.comp, FAILURE, env.verify)).healed
    assert not (env.state / LONG_TASK_FILE).exists()


async def _wait_for(cond: Callable[[], bool], what: str) -> None:
    """Poll ``cond`` (a file on disk) every 10 ms for up to 5 s."""
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


async def test_cancel_during_verify_aborts_the_patch(env: Env) -> None:
    """Cancelling a long task while its patch verifies restores app.conf and records aborted."""
    entered = asyncio.Event()

    async def verify_forever() -> bool:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    agent = FakeAgent("k2-coder", [good("k2-coder")])
    h = env.handover([entry(agent)])
    task = asyncio.create_task(h.run(env.comp, FAILURE, verify_forever, long_task=True))

    await _wait_for(lambda: "applied" in statuses(env.history()), "the applied record")
    await asyncio.wait_for(entered.wait(), 5)
    assert b"mode = ok" in env.conf.read_bytes()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert env.conf.read_bytes() == ORIGINAL
    recs = env.invocations()
    assert statuses(recs) == ["aborted"]
    patch_id = env.history()[0]["patch_id"]
    assert recs[0]["patch_id"] == patch_id
    assert statuses(env.long_task()) == ["aborted"]
    hist = env.history()
    assert statuses(hist) == ["applied", "aborted"]
    assert hist[1]["patch_id"] == patch_id and hist[1]["by"] == "operator"
    assert not (env.state / "repair" / f"{COMPONENT}.pending.json").exists()
    assert env.sample("razar_patches_total", component=COMPONENT, action="reverted") == 1


async def test_cancel_during_apply_restores_the_file(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel while the patch is being applied still leaves app.conf as it was."""
    real_apply = env.engine.apply
    done = threading.Event()

    def slow_apply(comp: ComponentConfig, prepared: PreparedPatch) -> AppliedPatch:
        try:
            applied = real_apply(comp, prepared)
            time.sleep(0.3)  # files written and recorded, the call not yet returned
            return applied
        finally:
            done.set()

    monkeypatch.setattr(env.engine, "apply", slow_apply)

    async def verify() -> bool:
        return False

    agent = FakeAgent("k2-coder", [good("k2-coder")])
    h = env.handover([entry(agent)])
    task = asyncio.create_task(h.run(env.comp, FAILURE, verify, long_task=True))
    await _wait_for(lambda: "applied" in statuses(env.history()), "the applied record")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(done.wait, 5)

    assert env.conf.read_bytes() == ORIGINAL


async def test_context_has_journal_and_artifacts(env: Env) -> None:
    """The agents' context carries the failure, the journal lines and the current artifact text."""
    agent = FakeAgent("crown", [AgentFailed("no")])
    h = env.handover([entry(agent)])

    await h.run(env.comp, FAILURE, env.verify)

    (ctx,) = agent.contexts
    assert ctx.journal == JOURNAL
    assert env.journal.calls == [("razar-x.service", FAILURE.since)]
    assert ctx.artifacts == {"app.conf": ORIGINAL.decode("utf-8", "replace")}
    assert (ctx.component, ctx.unit, ctx.layer) == (COMPONENT, "razar-x.service", "throat")
    assert (ctx.error, ctx.probe_output, ctx.attempt) == (FAILURE.error, "bad mode", 1)
    prompt = ctx.prompt()
    assert JOURNAL[1] in prompt and "mode = broken" in prompt


async def test_prompt_tells_why_earlier_attempts_failed(env: Env) -> None:
    """The second attempt's prompt names the refusal reason of the first."""
    escape = Proposal(agent="crown", edits=(FileEdit("../x", "", "pwned\n"),))
    agent = FakeAgent("crown", [escape, AgentFailed("no")], max_attempts=2)
    h = env.handover([entry(agent)])

    await h.run(env.comp, FAILURE, env.verify)

    second = agent.contexts[1]
    assert statuses(second.history) == ["refused"]
    assert "'..' is not allowed" in second.prompt()


async def test_skips_do_not_count_towards_rstar(env: Env) -> None:
    """Agents that skip (AgentSkipped) do not bring rStar's threshold closer."""
    skipper = FakeAgent("opencode", [AgentSkipped("opencode binary not found")])
    crown = FakeAgent("crown", [AgentFailed("no")], max_attempts=2)
    rstar = FakeAgent("rstar", [good("rstar")])
    h = env.handover([entry(skipper), entry(crown), entry(rstar, takes_over_after=3)])

    outcome = await h.run(env.comp, FAILURE, env.verify)

    assert rstar.contexts == []  # only 2 real attempts were made
    assert not outcome.healed


class EmitBudget:
    """Wraps Handover._emit; raises after ``limit`` events so a runaway loop stops the test."""

    def __init__(self, h: Handover, limit: int) -> None:
        self.inner: Callable[..., None] = h._emit
        self.limit = limit
        self.count = 0

    def __call__(self, *args: Any, **kw: Any) -> None:
        self.count += 1
        if self.count > self.limit:
            raise RuntimeError("runaway handover loop")
        self.inner(*args, **kw)


async def _settle(task: asyncio.Task[Outcome]) -> Outcome | None:
    """The task's outcome if it returned; cancels it (and expects the cancel) otherwise."""
    if task.done():
        return task.result()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return None


async def test_long_task_with_spent_remote_budget_does_not_spin(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long task whose remote budget is spent neither floods razar.log nor blocks the loop."""
    crown = FakeAgent("crown", [AgentFailed("no")], max_attempts=3)
    h = env.handover([entry(crown)], remote_attempts=1)
    budget = EmitBudget(h, limit=200)
    monkeypatch.setattr(h, "_emit", budget)

    task = asyncio.create_task(h.run(env.comp, FAILURE, env.verify, long_task=True))
    await asyncio.sleep(0.2)  # with the bug, resumes only once the budget stops the spin
    try:
        assert budget.count <= 200, "run() kept emitting without yielding"
        outcome = await _settle(task)
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert outcome is None or not outcome.healed
    assert len(crown.contexts) == 1


async def test_long_task_with_only_skipping_agents_is_bounded(env: Env) -> None:
    """A long task whose agents all skip does not re-ask them in a tight loop."""
    skipper = FakeAgent("opencode", [AgentSkipped("opencode binary not found")])
    h = env.handover([entry(skipper)])

    task = asyncio.create_task(h.run(env.comp, FAILURE, env.verify, long_task=True))
    await asyncio.sleep(0.3)
    try:
        asked = len(skipper.contexts)
    finally:
        outcome = await _settle(task)
    assert asked <= 3, f"asked {asked} times in 0.3 s"
    assert outcome is None or not outcome.healed


async def test_the_repair_rung_skips_a_component_without_artifacts() -> None:
    """No artifacts: no patch could be kept, so no agent is asked (and no journal line of
    the failure leaves the machine); the ladder says it was skipped, and why."""
    from razard.repair.rung import RepairRung

    class NoHandover:
        roster: list[RosterEntry] = []  # remote agents only, or none: nothing local to ask

        async def run(self, *args: object, **kw: object) -> object:
            raise AssertionError("the repair agents were asked")

    rung = RepairRung(NoHandover())  # type: ignore[arg-type]
    comp = ComponentConfig(name="noart", layer="throat", priority=1, unit="noart.service")

    async def verify() -> bool:
        raise AssertionError("nothing to verify")

    failure = type("F", (), {"error": "boom", "probe_output": "", "exit_status": 1})()
    assert await rung.attempt(comp, failure, verify) is False
    outcome, why = rung.outcome("noart")
    assert outcome == "skipped" and "no artifacts" in why
    assert rung.records("noart") == []


async def test_without_artifacts_only_local_agents_are_asked(env: Env) -> None:
    """A component with no artifacts: the remote agent is not asked (its failure stays on
    this node) and says why; the local registry still is (it may fix without a patch)."""
    import dataclasses

    calls: list[str] = []
    remote = FakeAgent("crown", [AgentFailed("must not be asked")], calls=calls)
    local = FakeAgent("registry", [AgentFailed("no registry entry matches")], calls=calls)
    h = env.handover([entry(remote), entry(local, remote=False)])
    bare = dataclasses.replace(env.comp, artifacts=())
    outcome = await h.run(bare, FAILURE, env.verify)
    assert not outcome.healed
    assert calls == ["registry"]
    skipped = [e for e in env.log() if e.get("event") == "agent_skipped"]
    assert any("crown" in e["message"] and "no artifacts" in e["message"] for e in skipped)


async def test_records_of_agents_words_are_roots_and_hold_no_echoed_secret(env: Env) -> None:
    """A model that echoes a DSN from a 0600 artifact: razar_ai_invocations.json and
    razar_ai_patches.json are 0600 (not group razar's), and neither they nor razar.log nor
    patch_history.jsonl keep the password; what is needed (agent, status, files) stays."""
    dsn = "postgres://app:hunter2-s3cret@db:5432/x"
    echo = Proposal(
        agent="kimi",
        rationale=f"the app cannot reach {dsn}; set a valid mode",
        edits=(FileEdit("app.conf", "mode = broken", "mode = ok"),),
    )
    failing = FakeAgent("crown", [AgentFailed(f"HTTP 400: bad request for {dsn}")])
    h = env.handover([entry(failing), entry(FakeAgent("kimi", [echo]))])
    outcome = await h.run(env.comp, FAILURE, env.verify)
    assert outcome.healed
    for name in (INVOCATIONS_FILE, PATCHES_FILE):
        path = env.state / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    kept = [env.state / INVOCATIONS_FILE, env.state / PATCHES_FILE]
    kept += [env.state / HISTORY_FILE, env.tmp / "razar.log"]
    for path in kept:
        assert "hunter2-s3cret" not in path.read_text(), path
    recs = env.invocations()
    assert [r["agent"] for r in recs] == ["crown", "kimi"]
    assert "postgres://app:***@db:5432/x" in recs[1]["rationale"]

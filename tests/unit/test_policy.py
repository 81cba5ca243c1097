"""Unit tests of razard.policy: backoff, settling, the remediation ladder and boot waves."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from razard.config import RestartPolicy
from razard.policy import (
    Decision,
    History,
    Rung,
    backoff_delay,
    next_rung,
    plan_waves,
    settle,
)

PROPS = settings(max_examples=200, deadline=None)


def no_jitter(**kw: float) -> RestartPolicy:
    """A restart policy with jitter off and ``kw`` overriding the rest."""
    return RestartPolicy(**{"jitter": 0.0, **kw})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- backoff


def test_backoff_doubles_from_base_until_the_cap() -> None:
    """Without jitter, restart n waits base * 2^(n-1), and never more than the cap."""
    policy = no_jitter(backoff_base=1.0, backoff_cap=10.0)
    delays = [backoff_delay(n, policy) for n in range(1, 8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_backoff_with_other_base() -> None:
    """The first delay is the base itself, whatever the base."""
    policy = no_jitter(backoff_base=2.5, backoff_cap=100.0)
    assert [backoff_delay(n, policy) for n in (1, 2, 3)] == [2.5, 5.0, 10.0]


def test_backoff_cap_equal_to_base_is_constant() -> None:
    """With cap == base every restart waits the base."""
    policy = no_jitter(backoff_base=3.0, backoff_cap=3.0)
    assert {backoff_delay(n, policy) for n in range(1, 20)} == {3.0}


def test_backoff_for_huge_attempt_numbers_is_the_cap() -> None:
    """Very large attempt numbers neither overflow nor exceed the cap."""
    policy = no_jitter(backoff_base=1.0, backoff_cap=60.0)
    assert backoff_delay(10**9, policy) == 60.0


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_backoff_before_the_first_attempt_is_zero(attempt: int) -> None:
    """attempt < 1 means no restart yet: the delay is 0, even with jitter."""
    assert backoff_delay(attempt, RestartPolicy(jitter=0.5)) == 0.0


def test_backoff_with_zero_base_is_zero() -> None:
    """A zero base means restart at once, whatever the attempt."""
    assert backoff_delay(5, RestartPolicy(backoff_base=0.0, backoff_cap=10.0, jitter=0.5)) == 0.0


def test_backoff_jitter_uses_the_given_rng() -> None:
    """The same seeded rng gives the same jittered delay, and jitter actually moves it."""
    policy = RestartPolicy(backoff_base=4.0, backoff_cap=100.0, jitter=0.5)
    a = [backoff_delay(2, policy, random.Random(7)) for _ in range(3)]
    assert len(set(a)) == 1
    spread = {backoff_delay(2, policy, random.Random(seed)) for seed in range(20)}
    assert len(spread) > 1


@PROPS
@given(
    attempt=st.integers(1, 200),
    base=st.floats(0.001, 100.0),
    cap_factor=st.floats(1.0, 1000.0),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_jitter_stays_within_fraction_and_under_cap(
    attempt: int, base: float, cap_factor: float, jitter: float, seed: int
) -> None:
    """A jittered delay is within ±jitter of the unjittered one, never negative, never over cap."""
    policy = RestartPolicy(backoff_base=base, backoff_cap=base * cap_factor, jitter=jitter)
    plain = backoff_delay(
        attempt, RestartPolicy(backoff_base=base, backoff_cap=base * cap_factor, jitter=0.0)
    )
    delay = backoff_delay(attempt, policy, random.Random(seed))
    eps = 1e-9 * max(1.0, plain)
    assert 0.0 <= delay <= policy.backoff_cap
    assert plain * (1 - jitter) - eps <= delay <= plain * (1 + jitter) + eps


@PROPS
@given(st.integers(1, 60), st.floats(0.001, 10.0), st.floats(1.0, 1e4))
def test_unjittered_backoff_is_monotonic(attempt: int, base: float, cap_factor: float) -> None:
    """Without jitter, a later restart never waits less than an earlier one."""
    policy = no_jitter(backoff_base=base, backoff_cap=base * cap_factor)
    assert backoff_delay(attempt, policy) <= backoff_delay(attempt + 1, policy)


# --------------------------------------------------------------------------- settle

POLICY = RestartPolicy(attempts=3, healthy_window=300.0, jitter=0.0)


def test_settle_resets_after_the_healthy_window() -> None:
    """Healthy for the whole window: restarts and escalations go back to 0."""
    h = History(restarts=3, escalations=1, last_restart_at=50.0, healthy_since=100.0)
    settled = settle(h, POLICY, now=400.0)
    assert (settled.restarts, settled.escalations) == (0, 0)
    assert settled.healthy_since == 100.0
    assert settled.last_restart_at == 50.0


def test_settle_keeps_history_before_the_window_ends() -> None:
    """Healthy for less than the window: nothing resets."""
    h = History(restarts=3, escalations=1, healthy_since=100.0)
    assert settle(h, POLICY, now=399.9) == h


def test_settle_keeps_history_while_unhealthy() -> None:
    """Never healthy (healthy_since None): nothing resets however much time passes."""
    h = History(restarts=2, escalations=0, healthy_since=None)
    assert settle(h, POLICY, now=1e9) == h


def test_settle_leaves_a_clean_history_alone() -> None:
    """A history with nothing to reset comes back unchanged."""
    h = History(healthy_since=0.0)
    assert settle(h, POLICY, now=1e6) is h


def test_settle_with_zero_window_resets_at_once() -> None:
    """A zero healthy window resets as soon as the component is healthy."""
    h = History(restarts=1, healthy_since=10.0)
    assert settle(h, RestartPolicy(healthy_window=0.0), now=10.0).restarts == 0


@PROPS
@given(
    restarts=st.integers(0, 20),
    escalations=st.integers(0, 5),
    healthy_since=st.one_of(st.none(), st.floats(0, 1e6)),
    elapsed=st.floats(0, 1e6),
    window=st.floats(0, 1e5),
)
def test_settle_resets_exactly_when_healthy_for_the_window(
    restarts: int, escalations: int, healthy_since: float | None, elapsed: float, window: float
) -> None:
    """settle resets iff healthy_since is set and now - healthy_since >= healthy_window."""
    h = History(restarts=restarts, escalations=escalations, healthy_since=healthy_since)
    now = (healthy_since or 0.0) + elapsed
    out = settle(h, RestartPolicy(healthy_window=window), now)
    if healthy_since is not None and now - healthy_since >= window:
        assert (out.restarts, out.escalations) == (0, 0)
    else:
        assert out == h


# --------------------------------------------------------------------------- the ladder


def climb(policy: RestartPolicy, escalation_rungs: int, steps: int) -> list[Decision]:
    """Follow the ladder for ``steps`` failures, recording each decision in the history."""
    h = History()
    out: list[Decision] = []
    for _ in range(steps):
        d = next_rung(h, policy, escalation_rungs)
        out.append(d)
        if d.rung is Rung.RESTART:
            h = History(restarts=h.restarts + 1, escalations=h.escalations)
        elif d.rung is Rung.ESCALATE:
            h = History(restarts=h.restarts, escalations=h.escalations + 1)
    return out


def test_ladder_restarts_then_escalates_then_quarantines() -> None:
    """Restarts 1..attempts, then one escalation per rung, then quarantine for good."""
    decisions = climb(no_jitter(attempts=3, backoff_base=1.0, backoff_cap=60.0), 2, 8)
    assert [(d.rung, d.attempt) for d in decisions] == [
        (Rung.RESTART, 1),
        (Rung.RESTART, 2),
        (Rung.RESTART, 3),
        (Rung.ESCALATE, 1),
        (Rung.ESCALATE, 2),
        (Rung.QUARANTINE, 0),
        (Rung.QUARANTINE, 0),
        (Rung.QUARANTINE, 0),
    ]
    assert [d.delay for d in decisions[:3]] == [1.0, 2.0, 4.0]
    assert all(d.delay == 0.0 for d in decisions[3:])


def test_ladder_reasons_say_where_it_is() -> None:
    """Each decision's reason counts the restart or escalation against its budget."""
    decisions = climb(no_jitter(attempts=2), 1, 4)
    assert decisions[0].reason == "restart 1/2"
    assert decisions[1].reason == "restart 2/2"
    assert "escalation 1/1" in decisions[2].reason
    assert "budget of 2 spent" in decisions[3].reason
    assert "1 escalation rung(s) failed" in decisions[3].reason


def test_zero_attempts_and_no_escalation_quarantines_at_once() -> None:
    """attempts=0 with no escalation rungs: the first failure quarantines."""
    d = next_rung(History(), no_jitter(attempts=0), escalation_rungs=0)
    assert d.rung is Rung.QUARANTINE
    assert "escalation" not in d.reason


def test_zero_attempts_escalates_first_when_there_are_rungs() -> None:
    """attempts=0 with escalation rungs: the first failure escalates, skipping restarts."""
    decisions = climb(no_jitter(attempts=0), 1, 2)
    assert [(d.rung, d.attempt) for d in decisions] == [(Rung.ESCALATE, 1), (Rung.QUARANTINE, 0)]


def test_no_escalation_rungs_goes_from_restart_to_quarantine() -> None:
    """Without escalation rungs the ladder is restarts then quarantine."""
    decisions = climb(no_jitter(attempts=2), 0, 3)
    assert [d.rung for d in decisions] == [Rung.RESTART, Rung.RESTART, Rung.QUARANTINE]


def test_settled_history_starts_the_ladder_again() -> None:
    """After a healthy window a component that fails again gets restart 1 again."""
    policy = no_jitter(attempts=2, healthy_window=60.0)
    spent = History(restarts=2, escalations=1, healthy_since=0.0)
    assert next_rung(spent, policy, 1).rung is Rung.QUARANTINE
    assert next_rung(settle(spent, policy, now=60.0), policy, 1) == next_rung(History(), policy, 1)


@PROPS
@given(attempts=st.integers(0, 12), rungs=st.integers(0, 4), seed=st.integers(0, 1000))
def test_ladder_shape(attempts: int, rungs: int, seed: int) -> None:
    """For any budget, the ladder is exactly attempts restarts, rungs escalations, quarantine."""
    policy = RestartPolicy(attempts=attempts, backoff_base=0.5, backoff_cap=8.0, jitter=0.3)
    rng = random.Random(seed)
    h = History()
    seen: list[tuple[Rung, int]] = []
    for _ in range(attempts + rungs + 2):
        d = next_rung(h, policy, rungs, rng)
        seen.append((d.rung, d.attempt))
        assert 0.0 <= d.delay <= policy.backoff_cap
        if d.rung is Rung.RESTART:
            h = History(restarts=h.restarts + 1, escalations=h.escalations)
        elif d.rung is Rung.ESCALATE:
            h = History(restarts=h.restarts, escalations=h.escalations + 1)
    expected = (
        [(Rung.RESTART, n) for n in range(1, attempts + 1)]
        + [(Rung.ESCALATE, n) for n in range(1, rungs + 1)]
        + [(Rung.QUARANTINE, 0)] * 2
    )
    assert seen == expected


# --------------------------------------------------------------------------- boot waves


def test_plan_waves_groups_by_priority_ascending_with_sorted_names() -> None:
    """Components start in waves by ascending priority; names within a wave are sorted."""
    waves = plan_waves({"web": 30, "gpu": 10, "db": 20, "api": 30, "net": 10, "cache": 20})
    assert waves == [["gpu", "net"], ["cache", "db"], ["api", "web"]]


def test_plan_waves_empty() -> None:
    """No components: no waves."""
    assert plan_waves({}) == []


def test_plan_waves_single_priority_is_one_wave() -> None:
    """Components sharing one priority all start together, sorted."""
    assert plan_waves({"b": 5, "a": 5, "c": 5}) == [["a", "b", "c"]]


@PROPS
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 20), max_size=15))
def test_plan_waves_is_a_sorted_partition(priorities: dict[str, int]) -> None:
    """Every name appears once; waves go up in priority; each wave is one priority, sorted."""
    waves = plan_waves(priorities)
    assert sorted(n for w in waves for n in w) == sorted(priorities)
    wave_prios = []
    for w in waves:
        assert w and w == sorted(w)
        assert len({priorities[n] for n in w}) == 1
        wave_prios.append(priorities[w[0]])
    assert wave_prios == sorted(set(priorities.values()))

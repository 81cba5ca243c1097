"""Grouper: a signature fires when it recurs N times within the window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from razard.escalation.grouping import Grouper

KEY = ("vllm", "CUDA error: out of memory")


def test_fires_on_the_nth_occurrence_within_the_window() -> None:
    """Three occurrences within 60 s fire on the third, not before."""
    g = Grouper(3, 60.0)
    assert [g.observe(KEY, t) for t in (0.0, 10.0, 20.0)] == [False, False, True]


def test_occurrences_spread_wider_than_the_window_never_fire() -> None:
    """One occurrence a minute never reaches 3 within 60 s."""
    g = Grouper(3, 60.0)
    assert not any(g.observe(KEY, t * 61.0) for t in range(20))


def test_after_firing_the_count_starts_again() -> None:
    """The next firing needs another N occurrences."""
    g = Grouper(2, 60.0)
    assert [g.observe(KEY, t) for t in (0.0, 1.0, 2.0, 3.0)] == [False, True, False, True]


def test_keys_are_counted_apart() -> None:
    """Another component's or another signature's occurrences do not add up."""
    g = Grouper(2, 60.0)
    assert not g.observe(("a", "x"), 0.0)
    assert not g.observe(("b", "x"), 1.0)
    assert not g.observe(("a", "y"), 2.0)
    assert g.observe(("a", "x"), 3.0)


def test_old_keys_are_forgotten() -> None:
    """Memory follows the recent signatures: a million one-off lines leave few keys behind."""
    g = Grouper(3, 10.0)
    for i in range(100_000):
        g.observe(("c", f"sig {i}"), float(i))
    assert len(g) < 5000


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=50), st.integers(1, 5))
def test_fires_exactly_when_the_last_n_fit_in_the_window(times: list[float], n: int) -> None:
    """Against a brute-force count: fire iff the last n unfired occurrences span <= window."""
    g = Grouper(n, 30.0)
    pending: list[float] = []
    for t in sorted(times):
        pending.append(t)
        expected = len(pending) >= n and t - pending[-n] <= 30.0
        assert g.observe(KEY, t) == expected
        if expected:
            pending = []


def test_bad_arguments_are_refused() -> None:
    """A threshold under 1 or a window of 0 is a programming error."""
    with pytest.raises(ValueError):
        Grouper(0, 1.0)
    with pytest.raises(ValueError):
        Grouper(1, 0.0)

"""The supervisor's Ticker: probe rounds due within one tick wake together, on a grid."""

from __future__ import annotations

import asyncio
import math

from razard.ticker import Ticker


async def test_waiters_due_within_one_tick_share_one_timer_and_never_wake_early() -> None:
    """Twenty deadlines spread over 20 ms share one grid point (one slot, one timer) no
    earlier than the latest of them and at most a tick after it; all are woken by it."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.1)
    grid_point = (math.floor(loop.time() / 0.1) + 4) * 0.1
    events = [asyncio.Event() for _ in range(20)]
    due = [grid_point + 0.01 + i * 0.001 for i in range(20)]  # all before the next point
    for when, ev in zip(due, events, strict=True):
        ticker.wake_at(when, ev, period=5.0)
    (slot,) = ticker._slots
    assert max(due) <= slot <= max(due) + 0.1
    await events[0].wait()
    assert loop.time() >= max(due)
    assert all(ev.is_set() for ev in events)  # the same timer set them all
    assert ticker._slots == {}


async def test_a_cancelled_wait_does_not_fire_and_a_past_deadline_fires_at_once() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.05)
    cancelled, kept, now = asyncio.Event(), asyncio.Event(), asyncio.Event()
    cancel = ticker.wake_at(loop.time() + 0.2, cancelled, 1.0)
    ticker.wake_at(loop.time() + 0.2, kept, 1.0)
    cancel()
    ticker.wake_at(loop.time() - 1, now, 1.0)
    assert now.is_set()
    await kept.wait()
    assert not cancelled.is_set()
    cancel()  # harmless after the slot fired


async def test_a_deadline_on_the_grid_keeps_its_slot() -> None:
    """A caller that adds its period to the last deadline lands on grid points a period
    apart, however long its round took: the period does not drift by a tick a round."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.25)
    due = (math.floor(loop.time() / 0.25) + 1) * 0.25
    ev = asyncio.Event()
    slots = []
    for _ in range(3):
        due += 5.0
        cancel = ticker.wake_at(due, ev, 5.0)
        (slot,) = ticker._slots
        slots.append(slot)
        cancel()
        ticker._slots.clear()
    assert [round(b - a, 9) for a, b in zip(slots, slots[1:], strict=False)] == [5.0, 5.0]
    assert all(s >= d for s, d in zip(slots, [due - 10, due - 5, due], strict=True))

"""The supervisor's Ticker: probe rounds due within one tick wake together, on a grid."""

from __future__ import annotations

import asyncio
import math

from razard.supervisor import Ticker


async def _woken_at(ev: asyncio.Event) -> float:
    await ev.wait()
    return asyncio.get_running_loop().time()


async def test_waiters_due_within_one_tick_wake_in_one_turn_never_early() -> None:
    """Twenty deadlines spread over 20 ms share one grid point: they wake in the same turn
    of the loop (one timer), no earlier than the latest of them and within a tick."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.1)
    grid_point = (math.floor(loop.time() / 0.1) + 4) * 0.1
    events = [asyncio.Event() for _ in range(20)]
    due = [grid_point + 0.01 + i * 0.001 for i in range(20)]  # all before the next point
    for when, ev in zip(due, events, strict=True):
        ticker.wake_at(when, ev, period=5.0)
    times = await asyncio.gather(*(_woken_at(ev) for ev in events))
    assert max(times) - min(times) < 0.005  # one timer: woken back to back
    assert max(due) <= min(times) and max(times) <= max(due) + 0.1 + 0.05


async def test_a_cancelled_wait_does_not_fire_and_a_past_deadline_fires_at_once() -> None:
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.05)
    cancelled, kept, now = asyncio.Event(), asyncio.Event(), asyncio.Event()
    cancel = ticker.wake_at(loop.time() + 0.2, cancelled, 1.0)
    ticker.wake_at(loop.time() + 0.2, kept, 1.0)
    cancel()
    ticker.wake_at(loop.time() - 1, now, 1.0)
    assert now.is_set()
    await asyncio.wait_for(kept.wait(), 1.0)
    await asyncio.sleep(0.05)
    assert not cancelled.is_set()
    cancel()  # harmless after the slot fired


async def test_rounds_scheduled_from_the_last_deadline_keep_their_period() -> None:
    """A 0.33 s period (not a multiple of the tick) with 20 ms of work per round: rounds
    are never early and never drift; the average gap is the period."""
    loop = asyncio.get_running_loop()
    ticker = Ticker(tick=0.25)
    ev = asyncio.Event()
    due = loop.time()
    times: list[float] = []
    for _ in range(6):
        ev.clear()
        due += 0.33
        ticker.wake_at(due, ev, 0.33)
        await ev.wait()
        now = loop.time()
        assert now >= due - 1e-6 and now <= due + 0.033 + 0.05
        times.append(now)
        await asyncio.sleep(0.02)  # the round's own work
    mean_gap = (times[-1] - times[0]) / (len(times) - 1)
    assert abs(mean_gap - 0.33) < 0.02, mean_gap

"""`Ticker`: one loop timer per instant for the many probes due at it (razard's idle CPU)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

#: Probe rounds are due on a grid of this many seconds (at most a tenth of the interval).
PROBE_TICK = 0.25


class Ticker:
    """Wakes many waiters at shared instants: each deadline is rounded up to a grid of
    ``tick`` seconds and each grid point has one loop timer for everyone due there.

    Hundreds of probes on the same interval then start together in one turn of the
    loop (and their connections complete together in the next) instead of a timer,
    a wakeup and an epoll round each, spread over the interval: at 500 components
    probed every 5 s that per-probe overhead was most of razard's idle CPU. A waiter
    is woken at most one tick (a tenth of its period, 0.25 s at most) late and never
    early; a caller that schedules each round from the last one's deadline (not from
    when it woke) keeps its period exact.
    """

    def __init__(self, tick: float = PROBE_TICK) -> None:
        self.tick = tick
        self._slots: dict[float, set[asyncio.Event]] = {}

    def wake_at(self, when: float, event: asyncio.Event, period: float) -> Callable[[], None]:
        """Set ``event`` at loop time ``when`` (rounded up to the grid for ``period``);
        the returned function cancels that (harmless after it fired)."""
        loop = asyncio.get_running_loop()
        if when <= loop.time() or period <= 0:
            event.set()
            return _nothing
        tick = min(self.tick, period / 10)
        at = math.ceil(when / tick - 1e-6) * tick  # a deadline on the grid stays put
        waiters = self._slots.get(at)
        if waiters is None:
            waiters = self._slots[at] = set()
            loop.call_at(at, self._fire, at)
        waiters.add(event)
        return _Cancel(waiters, event)

    def _fire(self, at: float) -> None:
        for event in self._slots.pop(at, ()):
            event.set()


def _nothing() -> None:
    return None


class _Cancel:
    """What `Ticker.wake_at` returns: takes ``event`` out of its waiters when called.
    A probe holds one between rounds: 64 bytes, where a closure and its cells took 280."""

    __slots__ = ("_waiters", "_event")

    def __init__(self, waiters: set[asyncio.Event], event: asyncio.Event) -> None:
        self._waiters = waiters
        self._event = event

    def __call__(self) -> None:
        self._waiters.discard(self._event)

"""Small asyncio pieces razard holds many of."""

from __future__ import annotations

import asyncio
from typing import Literal


class LazyEvent(asyncio.Event):
    """An `asyncio.Event` that keeps no list of waiters unless several wait at once.

    asyncio's keeps a deque (over 500 bytes) in every event from the start; razard
    holds three events per component that are idle almost always, 1,500 at 500
    components. Same behaviour: `wait` returns True once set, `set` wakes every waiter,
    `clear` makes the next `wait` block. Like asyncio's, for one event loop at a time.
    """

    def __init__(self) -> None:  # not asyncio.Event's: its deque is what this saves
        self._value = False
        # the one future waiting (nearly always: a runner waits on its own events), a list
        # of them when several wait, None when none does
        self._waiting: asyncio.Future[bool] | list[asyncio.Future[bool]] | None = None

    def __repr__(self) -> str:
        state = "set" if self._value else "unset"
        return f"<{type(self).__name__} [{state}, waiters:{len(self._futures())}]>"

    def _futures(self) -> list[asyncio.Future[bool]]:
        waiting = self._waiting
        if waiting is None:
            return []
        return list(waiting) if isinstance(waiting, list) else [waiting]

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._futures():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiting = self._waiting
        if waiting is None:
            self._waiting = fut
        elif isinstance(waiting, list):
            waiting.append(fut)
        else:
            self._waiting = [waiting, fut]
        try:
            await fut
            return True
        finally:
            self._forget(fut)

    def _forget(self, fut: asyncio.Future[bool]) -> None:
        waiting = self._waiting
        if waiting is fut:
            self._waiting = None
        elif isinstance(waiting, list):
            waiting.remove(fut)
            if not waiting:
                self._waiting = None

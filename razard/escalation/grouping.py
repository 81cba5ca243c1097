"""Counting recurrences: has one signature of one component recurred N times within a window?

Pure and in memory: the notifier feeds it every failure line it reads, with
the line's own timestamp (not the time it was read), so a batch of old lines
read after a restart is judged by when the failures happened.
"""

from __future__ import annotations

from collections import deque
from typing import Final

#: Grow-then-prune: keys are only scanned when their number doubled since the last prune.
_PRUNE_START: Final = 1024


class Grouper:
    """Fires when a key is observed ``threshold`` times within ``window_s`` seconds.

    A key is ``(component, signature)``. After firing, the key's count starts
    again from zero, so the next firing needs another ``threshold``
    occurrences; repeating a still-firing alert is the notifier's business.
    Each observation costs O(1) amortised; keys not seen for a window are
    forgotten, so memory follows the number of distinct recent signatures.
    """

    def __init__(self, threshold: int, window_s: float) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, got {threshold}")
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.threshold = threshold
        self.window_s = window_s
        self._seen: dict[tuple[str, str], deque[float]] = {}
        self._prune_at = _PRUNE_START

    def observe(self, key: tuple[str, str], ts: float) -> bool:
        """Count one occurrence of ``key`` at ``ts``; True when it reaches the threshold."""
        times = self._seen.get(key)
        if times is None:
            if len(self._seen) >= self._prune_at:
                self.prune(ts)
            times = self._seen[key] = deque(maxlen=self.threshold)
        times.append(ts)
        if len(times) < self.threshold:
            return False
        # maxlen keeps only the last `threshold` times: they fit in the window or not
        if ts - times[0] <= self.window_s:
            times.clear()
            return True
        return False

    def prune(self, now: float) -> None:
        """Forget keys whose last occurrence is older than the window."""
        self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] <= self.window_s}
        self._prune_at = max(_PRUNE_START, 2 * len(self._seen))

    def __len__(self) -> int:
        return len(self._seen)

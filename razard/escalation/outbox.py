"""Alerts not delivered yet, one file each, so they survive a target being down and restarts.

``<dir>/<created ns>-<seq>-<target>-<id>.json``, each written atomically
(`razard.storage.write_json_atomic`): a crash leaves a whole item or none.
Names sort in the order items were queued, so a target gets an alert's
firing before its resolve. The outbox is bounded: past ``max_items`` the
oldest items are dropped and returned, for the caller to report.

An item is ``{"id", "target", "status", "alert", "attempts", "next_try",
"created", "last_error"}``.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from razard.errors import StateError
from razard.storage import read_json, write_json_atomic

SUFFIX: Final = ".json"


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempts`` (1: the first retry): doubling up to ``cap``."""
    return float(min(cap, base * 2 ** max(0, min(attempts - 1, 62))))


class Outbox:
    """A bounded directory of alert deliveries still to make."""

    def __init__(self, directory: Path, max_items: int) -> None:
        self.directory = directory
        self.max_items = max_items
        self._seq = itertools.count()

    def _names(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StateError(f"{self.directory}: cannot list: {e.strerror or e}") from e
        # write_json_atomic's temporary files start with a dot
        return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))

    def __len__(self) -> int:
        return len(self._names())

    def put(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Queue ``item``; returns the oldest items dropped to stay within ``max_items``.

        Raises:
            StateError: the item cannot be written.
        """
        name = f"{time.time_ns():020d}-{next(self._seq):06d}-{item['target']}-{item['id']}"
        write_json_atomic(self.directory / (name + SUFFIX), dict(item))
        names = self._names()
        dropped = []
        for old in names[: max(0, len(names) - self.max_items)]:
            doc = self._read(old)
            self._unlink(old)
            if doc is not None:
                dropped.append(doc)
        return dropped

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        """Every queued item with its name, oldest first; unreadable files are skipped."""
        out = []
        for name in self._names():
            doc = self._read(name)
            if doc is not None:
                out.append((name, doc))
        return out

    def update(self, name: str, item: Mapping[str, Any]) -> None:
        """Rewrite an item in place (after a failed attempt)."""
        write_json_atomic(self.directory / name, dict(item))

    def remove(self, name: str) -> None:
        """Forget a delivered (or abandoned) item."""
        self._unlink(name)

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            doc = read_json(self.directory / name)
        except StateError:
            return None
        return doc if isinstance(doc, dict) else None

    def _unlink(self, name: str) -> None:
        try:
            os.unlink(self.directory / name)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StateError(f"{self.directory / name}: cannot remove: {e.strerror or e}") from e

"""The alerts still firing, one per dedup key (host, component, signature), kept on disk.

The decisions are pure functions over this book and the time:

- `decide`: a new trigger raises an alert, repeats it (the repeat interval has
  passed) or is suppressed as a duplicate;
- `due_repeats`: which still-firing alerts are sent again without a new trigger
  (quarantine, warning, layer down: until they resolve; a recurring failure:
  only while it keeps recurring), and which inhibited ones may go out now;
- `inhibited`: while the root (network) layer is down, every other layer's
  alerts are held back, since they are most likely its consequences.

The book is saved whole with `razard.storage.write_json_atomic`, so after a
restart of razard a duplicate is still recognised and a resolve still goes
out for an alert raised before it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from razard.errors import StateError
from razard.escalation.classify import ROOT_LAYER
from razard.storage import read_json, write_json_atomic

Decision = Literal["raise", "repeat", "suppress"]
DedupKey = tuple[str, str, str]
RECURRING: Final = "recurring"
#: a recurring alert not seen again for this many repeat intervals is forgotten (never resolved)
STALE_INTERVALS: Final = 24


@dataclass
class Firing:
    """One alert that has been raised and not resolved."""

    id: str
    host: str
    component: str
    layer: str
    signature: str
    reason: str
    summary: str
    sample: str
    first_ts: float
    last_sent: float
    last_seen: float
    count: int = 1
    inhibited: bool = False  # raised while root was down and not sent yet
    targets: list[str] = field(default_factory=list)  # targets it was queued for

    @property
    def key(self) -> DedupKey:
        return (self.host, self.component, self.signature)

    @property
    def dedup_key(self) -> str:
        return "|".join(self.key)


def inhibited(layer: str, root_down: bool) -> bool:
    """Alerts of layers above root are held back while root is down."""
    return root_down and layer != ROOT_LAYER


def decide(existing: Firing | None, now: float, repeat_interval: float) -> Decision:
    """What a new trigger for a dedup key does; ``repeat_interval`` 0 never repeats."""
    if existing is None:
        return "raise"
    if existing.inhibited:
        return "suppress"  # `due_repeats` sends it once root is back
    if repeat_interval > 0 and now - existing.last_sent >= repeat_interval:
        return "repeat"
    return "suppress"


def due_repeats(
    firing: list[Firing], now: float, repeat_interval: float, root_down: bool
) -> list[Firing]:
    """Still-firing alerts to send again now (or for the first time, once uninhibited)."""
    due = []
    for f in firing:
        if f.inhibited:
            if not inhibited(f.layer, root_down):
                due.append(f)
            continue
        if repeat_interval <= 0 or now - f.last_sent < repeat_interval:
            continue
        if f.reason != RECURRING or f.last_seen > f.last_sent:
            due.append(f)
    return due


def stale(f: Firing, now: float, repeat_interval: float, window: float) -> bool:
    """A recurring alert that stopped recurring long ago: forget it (no resolve is sent)."""
    horizon = max(repeat_interval, window) * STALE_INTERVALS
    return f.reason == RECURRING and now - f.last_seen > horizon


class AlertBook:
    """The firing alerts and whether root is down, loaded from and saved to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.alerts: dict[DedupKey, Firing] = {}
        self.root_down = False
        self.dirty = False
        self._load()

    def get(self, key: DedupKey) -> Firing | None:
        return self.alerts.get(key)

    def put(self, f: Firing) -> None:
        self.alerts[f.key] = f
        self.dirty = True

    def pop(self, key: DedupKey) -> Firing | None:
        self.dirty = True
        return self.alerts.pop(key, None)

    def of_component(self, host: str, component: str) -> list[Firing]:
        return [f for f in self.alerts.values() if f.host == host and f.component == component]

    def set_root_down(self, down: bool) -> None:
        if down != self.root_down:
            self.root_down = down
            self.dirty = True

    def save(self) -> None:
        """Write the book if it changed (raises StateError)."""
        if not self.dirty:
            return
        write_json_atomic(
            self.path,
            {"root_down": self.root_down, "alerts": [asdict(f) for f in self.alerts.values()]},
        )
        self.dirty = False

    def _load(self) -> None:
        try:
            doc = read_json(self.path)
        except StateError:
            doc = None  # unreadable: start empty rather than stop escalating
        if not isinstance(doc, dict):
            return
        self.root_down = bool(doc.get("root_down"))
        for raw in doc.get("alerts") or []:
            f = _firing(raw)
            if f is not None:
                self.alerts[f.key] = f


def _firing(raw: Any) -> Firing | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Firing(**raw)
    except TypeError:
        return None

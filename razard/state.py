"""``razar_state.json``: what razard must remember across its own restarts.

Per component: status, restart counters, last healthy time, last error; and
the boot progress. Written atomically on every change, so a SIGKILL at any
moment leaves either the previous or the new state, never a torn file.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from razard.errors import StateError
from razard.layout import STATE_FILE
from razard.states import ComponentState
from razard.storage import read_json, write_json_atomic

#: flock'd by a running razard for its whole life (one razard per state directory)
STATE_VERSION: Final = 1


@dataclass(slots=True)
class ComponentRecord:
    """razard's memory of one component (one per component, hundreds: slots)."""

    status: ComponentState = ComponentState.PENDING
    restarts: int = 0  # restarts in the current failure cycle (the ladder's budget)
    restarts_total: int = 0
    escalations: int = 0
    healthy_since: float | None = None  # unix time the current healthy stretch began
    last_healthy: float | None = None  # unix time of the last passing check
    last_restart: float | None = None
    last_error: str | None = None
    since: float = field(default_factory=time.time)  # unix time of the last status change
    operator_stopped: bool = False
    in_escalation: bool = False  # a rung was running; if razard died then, it is retried

    @classmethod
    def from_json(cls, raw: Any) -> ComponentRecord:
        if not isinstance(raw, dict):
            return cls()
        rec = cls(**{k: v for k, v in raw.items() if k in _RECORD_FIELDS})
        rec.status = ComponentState.parse(rec.status)
        return rec

    def to_json(self) -> dict[str, Any]:
        """The record's fields, as `asdict` gives them (the fields are flat: a plain read
        of each is the same at a fraction of its cost, for hundreds of components)."""
        return {name: getattr(self, name) for name in _RECORD_FIELDS}


_RECORD_FIELDS: Final = tuple(f.name for f in fields(ComponentRecord))


@dataclass
class BootProgress:
    waves: list[list[str]] = field(default_factory=list)
    settled_waves: int = 0  # how many waves, from the first, have settled
    done: bool = False
    started: float | None = None


class StateStore:
    """Loads and atomically saves ``razar_state.json`` in the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATE_FILE
        self.components: dict[str, ComponentRecord] = {}
        self.boot = BootProgress()

    def load(self) -> None:
        """Read the state file if there is one; a missing file means a first start."""
        raw = read_json(self.path)
        if raw is None:
            return
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            raise StateError(
                f"{self.path}: unknown state format (expected version {STATE_VERSION})"
            )
        comps = raw.get("components", {})
        if isinstance(comps, dict):
            self.components = {str(k): ComponentRecord.from_json(v) for k, v in comps.items()}
        boot = raw.get("boot", {})
        if isinstance(boot, dict):
            try:
                self.boot = BootProgress(
                    waves=[list(map(str, w)) for w in boot.get("waves", []) if isinstance(w, list)],
                    settled_waves=int(boot.get("settled_waves", 0)),
                    done=bool(boot.get("done", False)),
                    started=boot.get("started"),
                )
            except (TypeError, ValueError) as e:
                raise StateError(f"{self.path}: unreadable boot progress: {e}") from e

    def set_aside(self) -> Path:
        """Move an unusable state file out of the way (kept for a person to read)."""
        target = self.path.with_name(f"{self.path.name}.unusable-{int(time.time())}")
        try:
            self.path.replace(target)
        except OSError as e:
            raise StateError(f"{self.path}: cannot move aside: {e.strerror}") from e
        self.components, self.boot = {}, BootProgress()
        return target

    def record(self, name: str) -> ComponentRecord:
        rec = self.components.get(name)  # not setdefault: it would build a record every call
        if rec is None:
            rec = self.components[name] = ComponentRecord()
        return rec

    def forget(self, name: str) -> None:
        self.components.pop(name, None)

    def save(self, *, sync_dir: bool = True) -> None:
        """Write the state file (`write_atomic`; ``sync_dir=False``: its directory's fsync
        is the caller's, `storage.sync_directory`)."""
        write_json_atomic(
            self.path,
            {
                "version": STATE_VERSION,
                "saved": time.time(),
                "boot": asdict(self.boot),
                "components": {k: v.to_json() for k, v in sorted(self.components.items())},
            },
            compact=True,  # `python3 -m json.tool razar_state.json` for a person
            sync_dir=sync_dir,
        )

"""Quarantine: a component razard has given up on, until an operator releases it.

A quarantined component has ``quarantine/<name>.json`` (reason, last error,
attempts, time) and a row in ``quarantine_log.md``. Deleting the file, by hand
or with ``razarctl quarantine release``, releases it: the directory is watched
(inotify through watchdog), so razard notices without polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from razard.layout import QUARANTINE_DIR, QUARANTINE_LOG
from razard.storage import append_text, make_dirs, write_json_atomic

_LOG_HEADER: Final = (
    "# razar quarantine log\n\n"
    "| time (UTC) | component | action | attempts | reason |\n"
    "| --- | --- | --- | --- | --- |\n"
)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:300]


class QuarantineStore:
    """The quarantine directory and its markdown log, under the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / QUARANTINE_DIR
        self.log_path = state_dir / QUARANTINE_LOG

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def is_quarantined(self, name: str) -> bool:
        # a string path, not `path`: asked at every turn of every runner's loop, and a
        # Path interns its parts (a slot of the interned-string table each time)
        return os.path.exists(os.path.join(self.dir, f"{name}.json"))

    def put(
        self,
        name: str,
        *,
        unit: str,
        layer: str,
        reason: str,
        last_error: str | None,
        attempts: int,
        history: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Quarantine ``name``: write its file and a log row; returns the record."""
        now = time.time()
        record: dict[str, Any] = {
            "component": name,
            "unit": unit,
            "layer": layer,
            "reason": reason,
            "last_error": last_error,
            "attempts": attempts,
            "time": _iso(now),
            "unix": now,
            "release": f"razarctl quarantine release {name}  (or delete this file)",
        }
        if history:
            record["ladder"] = history  # every rung tried, for the operator
        make_dirs(self.dir)
        write_json_atomic(self.path(name), record)
        self._log(now, name, "quarantined", str(attempts), f"{reason}: {last_error or ''}")
        return record

    def release(self, name: str, by: str = "operator") -> bool:
        """Release ``name``; returns False when it was not quarantined."""
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        self.log_release(name, by)
        return True

    def log_release(self, name: str, by: str) -> None:
        self._log(time.time(), name, "released", "", f"by {by}")

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.path(name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return raw if isinstance(raw, dict) else None

    def list(self) -> list[dict[str, Any]]:
        """Every quarantine record, oldest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.glob("*.json")):
            rec = self.get(p.stem)
            out.append(rec if rec is not None else {"component": p.stem, "reason": "unreadable"})
        return sorted(out, key=lambda r: float(r.get("unix", 0)))

    def _log(self, t: float, name: str, action: str, attempts: str, reason: str) -> None:
        text = f"| {_iso(t)} | {name} | {action} | {attempts} | {_cell(reason)} |\n"
        if not self.log_path.exists():
            text = _LOG_HEADER + text
        append_text(self.log_path, text)

    def watch(
        self, loop: asyncio.AbstractEventLoop, on_removed: Callable[[str], None]
    ) -> Callable[[], None]:
        """Call ``on_removed(name)`` in ``loop`` when a quarantine file disappears.

        Returns a function that stops watching.
        """
        make_dirs(self.dir)

        class Handler(FileSystemEventHandler):
            def _gone(self, path: str | bytes) -> None:
                p = Path(path if isinstance(path, str) else path.decode())
                if p.suffix == ".json" and not p.name.startswith("."):
                    loop.call_soon_threadsafe(on_removed, p.stem)

            def on_deleted(self, event: FileSystemEvent) -> None:
                self._gone(event.src_path)

            def on_moved(self, event: FileSystemEvent) -> None:
                self._gone(event.src_path)

        observer = Observer()
        observer.schedule(Handler(), str(self.dir), recursive=False)
        observer.daemon = True
        observer.start()

        def stop() -> None:
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=2)

        return stop

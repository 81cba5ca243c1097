"""Heartbeat files, watched with inotify (through ``watchdog``), never polled.

A component beats by touching or writing ``<runtime dir>/heartbeat/<layer>/<component>``.
`HeartbeatWatch` turns each such change into a call of ``on_beat(layer, source, when)``
on the asyncio loop; a removed file calls ``on_gone(layer, source)``. At start
the files already there count as beats at their modification time, so a
razard restart does not forget who was beating.

razard creates the layer directories (0755) and, for each component configured
with ``heartbeat = true``, its file, owned by the component's ``user`` so the
component can touch it without write access to the directory. A component
tells where to beat from ``RAZAR_HEARTBEAT_FILE`` in its environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from razard.layers import LAYERS

log = logging.getLogger(__name__)

BeatCallback = Callable[[str, str, float], None]
GoneCallback = Callable[[str, str], None]


def heartbeat_path(root: Path, layer: str, component: str) -> Path:
    """Where ``component`` of ``layer`` beats."""
    return root / layer / component


def prepare(root: Path, components: Iterable[tuple[str, str, str]]) -> None:
    """Create the layer directories and a file for each (layer, component, user) that beats."""
    root.mkdir(parents=True, exist_ok=True)
    for layer_dir in LAYERS:
        (root / layer_dir).mkdir(mode=0o755, exist_ok=True)
    for layer, name, user in components:
        path = heartbeat_path(root, layer, name)
        if not path.exists():
            # created at the epoch: a file razard made is not a beat from the component
            path.touch(mode=0o644)
            os.utime(path, (0, 0))
        if user:
            with contextlib.suppress(KeyError, PermissionError):
                pw = pwd.getpwnam(user)
                os.chown(path, pw.pw_uid, pw.pw_gid)


class _Handler(FileSystemEventHandler):
    def __init__(self, watch: HeartbeatWatch) -> None:
        self.watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        # touch(1) is an "attrib" event in newer watchdog (older versions said "modified")
        if kind in ("created", "modified", "closed", "attrib"):
            self.watch._from_thread(str(event.src_path), beat=True)
        elif kind == "deleted":
            self.watch._from_thread(str(event.src_path), beat=False)
        elif kind == "moved":
            self.watch._from_thread(str(event.src_path), beat=False)
            dest = getattr(event, "dest_path", "")
            if dest:
                self.watch._from_thread(str(dest), beat=True)


class HeartbeatWatch:
    """Calls back on the loop for every beat under ``root`` (``<root>/<layer>/<source>``)."""

    def __init__(self, root: Path, on_beat: BeatCallback, on_gone: GoneCallback) -> None:
        self.root = root
        self.on_beat = on_beat
        self.on_gone = on_gone
        self._loop: asyncio.AbstractEventLoop | None = None
        self._observer: Any = None

    def _split(self, path: str) -> tuple[str, str] | None:
        try:
            rel = Path(path).relative_to(self.root)
        except ValueError:
            return None
        parts = rel.parts
        if len(parts) != 2 or parts[0] not in LAYERS or parts[1].startswith("."):
            return None  # not <layer>/<source>: a stray file, or a temp file of an atomic write
        return parts[0], parts[1]

    def _from_thread(self, path: str, *, beat: bool) -> None:
        where = self._split(path)
        loop = self._loop
        if where is None or loop is None or loop.is_closed():
            return
        layer, source = where
        if beat:
            loop.call_soon_threadsafe(self.on_beat, layer, source, time.time())
        else:
            loop.call_soon_threadsafe(self.on_gone, layer, source)

    def scan(self) -> None:
        """Report the files already present as beats at their modification time."""
        for layer in LAYERS:
            d = self.root / layer
            with contextlib.suppress(OSError):
                for entry in os.scandir(d):
                    if entry.is_file() and not entry.name.startswith("."):
                        with contextlib.suppress(OSError):
                            self.on_beat(layer, entry.name, entry.stat().st_mtime)

    def start(self) -> None:
        """Start watching (inotify in watchdog's thread); call from the event loop."""
        self._loop = asyncio.get_running_loop()
        self.root.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Handler(self), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self.scan()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        self._loop = None
        if observer is not None:
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=5)

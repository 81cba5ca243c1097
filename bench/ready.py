"""The harness's end of the readiness socket: who announced ``ready``, with which pid, when.

Every component sends ``ready <pid> <name> <monotonic>`` to one unix datagram socket.
A thread receives them; scenarios wait for "a ready of NAME from a pid other than P"
or "every NAME ready since T". Times are the component's own CLOCK_MONOTONIC stamp,
so a busy harness thread does not add its own delay to a figure.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ready:
    pid: int
    t: float  # the component's time.monotonic() when it announced itself


class ReadyTimeout(Exception):
    """Components did not announce themselves in time (names which)."""


class ReadyListener:
    """Receives ``ready`` notes on ``path``; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self._sock.bind(str(path))
        os.chmod(path, 0o666)
        self._cond = threading.Condition()
        self.latest: dict[str, Ready] = {}
        self.pids: set[int] = set()  # every pid that ever announced itself (for cleanup)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ready-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            try:
                data = self._sock.recv(256)
            except OSError:
                return
            parts = data.decode(errors="replace").split()
            if len(parts) != 4 or parts[0] != "ready":
                continue
            try:
                pid, name, t = int(parts[1]), parts[2], float(parts[3])
            except ValueError:
                continue
            with self._cond:
                self.latest[name] = Ready(pid, t)
                self.pids = self.pids | {pid}  # a new set: readers iterate the old one
                self._cond.notify_all()

    def pid(self, name: str) -> int:
        with self._cond:
            r = self.latest.get(name)
        return r.pid if r else 0

    def wait_all(
        self,
        names: Iterable[str],
        *,
        since: float = 0.0,
        not_pids: dict[str, int] | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Ready]:
        """Wait until every name announced itself at or after ``since`` (monotonic) and,
        where ``not_pids`` names one, from another pid. Returns each name's note."""
        names = list(names)
        not_pids = not_pids or {}
        deadline = time.monotonic() + timeout

        def missing() -> list[str]:
            out = []
            for n in names:
                r = self.latest.get(n)
                if r is None or r.t < since or r.pid == not_pids.get(n, -1):
                    out.append(n)
            return out

        with self._cond:
            while left := missing():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
                    raise ReadyTimeout(
                        f"{len(left)} of {len(names)} components not ready within "
                        f"{timeout:g}s: {shown}"
                    )
                self._cond.wait(min(remaining, 0.5))
            return {n: self.latest[n] for n in names}

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

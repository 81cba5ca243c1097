"""Process checks shared by the tests: is a pid gone (a zombie counts as gone)?"""

from __future__ import annotations

import time

import psutil  # type: ignore[import-untyped]


def gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie waiting to be reaped counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def all_gone(pids: list[int], within: float) -> bool:
    """Wait up to ``within`` seconds for every pid to be gone."""
    deadline = time.monotonic() + within
    while not all(gone(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True

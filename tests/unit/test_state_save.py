"""When razard's state reaches the disk: the file whole and visible before anything the
same turn of the loop does next, its directory's fsync right after (issue 18: a restart's
StartUnit waits for the first, not the second), both before razard stops."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from razard.journal import EventLog
from razard.supervisor import Components
from razard.systemd import Systemd


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each os.fsync call synced: 'dir' or the file's name."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        seen.append("dir" if os.path.isdir(target) else os.path.basename(target))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


def _components(tmp_path: Path, restarts: int) -> Components:
    """A table of components whose record for ``api`` counts ``restarts``."""
    comps = Components(tmp_path, Systemd(bus="user"), EventLog(tmp_path / "razar.log"))
    comps.state.record("api").restarts = restarts
    return comps


def _saved_restarts(tmp_path: Path) -> int:
    doc = json.loads((tmp_path / "razar_state.json").read_text())
    return int(doc["components"]["api"]["restarts"])


async def test_the_file_is_whole_at_once_and_its_directory_synced_next_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comps = _components(tmp_path, 3)
    seen = _fsyncs(monkeypatch)
    order: list[str] = []
    comps.save()  # queued for the end of this turn
    asyncio.get_running_loop().call_soon(lambda: order.append(f"call:{seen}"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # what this turn queued after the save (a StartUnit) ran with the file fsynced and in
    # place, before the directory's fsync
    assert len(order) == 1 and "dir" not in order[0], order
    assert order[0].count(".razar_state.json.razar-") == 1, order
    assert _saved_restarts(tmp_path) == 3
    assert seen[-1] == "dir" and len(seen) == 2, seen


async def test_a_durable_save_syncs_the_directory_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comps = _components(tmp_path, 1)
    seen = _fsyncs(monkeypatch)
    comps.save_now(durable=True)  # razard stopping
    assert len(seen) == 2 and seen[1] == "dir", seen
    assert _saved_restarts(tmp_path) == 1


def test_without_a_loop_the_save_is_durable_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comps = _components(tmp_path, 2)
    seen = _fsyncs(monkeypatch)
    comps.save_now()
    assert len(seen) == 2 and seen[1] == "dir", seen
    assert _saved_restarts(tmp_path) == 2


async def test_a_directory_that_cannot_be_synced_is_reported_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comps = _components(tmp_path, 1)
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    for _ in range(2):
        comps.save_now()
        await asyncio.sleep(0)
    assert comps.save_failing
    lines = [json.loads(x) for x in (tmp_path / "razar.log").read_text().splitlines()]
    failed = [x for x in lines if x["event"] == "state_save_failed"]
    assert len(failed) == 1 and "cannot sync" in failed[0]["message"], failed
    monkeypatch.setattr(os, "fsync", real)
    comps.save_now()
    await asyncio.sleep(0)
    assert not comps.save_failing
    lines = [json.loads(x) for x in (tmp_path / "razar.log").read_text().splitlines()]
    assert [x["event"] for x in lines][-1] == "state_save_recovered"

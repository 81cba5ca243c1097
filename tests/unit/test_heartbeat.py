"""Heartbeat files watched through inotify: every touch and write is a beat."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agents.heartbeat import HeartbeatWatch


async def test_touch_and_write_are_beats_and_a_removed_file_is_gone(tmp_path: Path) -> None:
    """touch(1) (a metadata change only), a write and a new file each count as a beat of
    their layer and component; deleting the file reports it gone; stray files do not count."""
    (tmp_path / "throat").mkdir()
    beat = tmp_path / "throat" / "api"
    beat.touch()
    beats: list[tuple[str, str]] = []
    gone: list[tuple[str, str]] = []
    watch = HeartbeatWatch(
        tmp_path,
        lambda layer, source, _when: beats.append((layer, source)),
        lambda layer, source: gone.append((layer, source)),
    )
    watch.start()
    try:
        assert beats == [("throat", "api")]  # the file already there, at start
        for _ in range(3):
            beat.touch()
            await asyncio.sleep(0.1)
        beat.write_text("ok")
        (tmp_path / "throat" / ".tmp-write").write_text("x")  # an atomic write's temp file
        (tmp_path / "stray").write_text("x")  # not <layer>/<component>
        await asyncio.sleep(0.5)
        assert beats.count(("throat", "api")) >= 5
        assert set(beats) == {("throat", "api")}
        beat.unlink()
        await asyncio.sleep(0.5)
        assert gone == [("throat", "api")]
    finally:
        watch.stop()

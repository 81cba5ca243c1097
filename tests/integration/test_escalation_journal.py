"""JournalSource on a real journald: each entry read once, across instances, in order."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from razard.escalation.source import JournalSource, SourceError

pytestmark = pytest.mark.integration


async def write(ident: str, lines: list[str]) -> None:
    """Lines as a program's output, through systemd-cat (journald's stream protocol)."""
    p = await asyncio.create_subprocess_exec(
        "systemd-cat", "-t", ident, stdin=asyncio.subprocess.PIPE
    )
    await p.communicate("".join(line + "\n" for line in lines).encode())
    assert p.returncode == 0


async def read_until(src: JournalSource, want: int, **kw: Any) -> list[dict[str, Any]]:
    """Read until ``want`` entries came (journald files them asynchronously)."""
    got: list[dict[str, Any]] = []
    for _ in range(100):
        got += await src.read_new(**kw)
        if len(got) >= want:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"got {len(got)} of {want} entries")


async def test_each_entry_is_read_once_across_two_sources(journald: object, tmp_path: Path) -> None:
    """A second JournalSource on the same cursor file (a restart) starts after the first."""
    ident = f"razar-esc-{uuid.uuid4().hex[:8]}"
    cursor = tmp_path / "journal.cursor"
    await write(ident, [f"line {i}" for i in range(5)])
    first = await read_until(JournalSource(cursor, [f"SYSLOG_IDENTIFIER={ident}"]), 5)
    await write(ident, [f"line {i}" for i in range(5, 12)])
    second = JournalSource(cursor, [f"SYSLOG_IDENTIFIER={ident}"])
    rest = await read_until(second, 7)
    assert await second.read_new() == []
    messages = [e["MESSAGE"] for e in first + rest]
    assert messages == [f"line {i}" for i in range(12)]
    assert cursor.read_text().startswith("{")  # written whole, atomically


async def test_max_entries_and_uncommitted_reads(journald: object, tmp_path: Path) -> None:
    """A batch stops at max_entries; a batch not committed is read again by the next reader."""
    ident = f"razar-esc-{uuid.uuid4().hex[:8]}"
    cursor = tmp_path / "c"
    match = [f"SYSLOG_IDENTIFIER={ident}"]
    await write(ident, [f"n{i}" for i in range(10)])
    await read_until(JournalSource(tmp_path / "probe", match), 10)  # all filed
    src = JournalSource(cursor, match)
    assert [e["MESSAGE"] for e in await src.read_new(3)] == ["n0", "n1", "n2"]
    crashed = JournalSource(cursor, match)
    assert [e["MESSAGE"] for e in await crashed.read_new(4, commit=False)] == [
        "n3",
        "n4",
        "n5",
        "n6",
    ]
    again = JournalSource(cursor, match)  # the crashed reader never committed
    batch = await again.read_new(commit=False)
    assert [e["MESSAGE"] for e in batch] == [f"n{i}" for i in range(3, 10)]
    again.commit()
    assert await JournalSource(cursor, match).read_new() == []


async def test_since_bounds_the_first_read_and_extra_args_reach_journalctl(
    journald: object, tmp_path: Path
) -> None:
    """Without a cursor, reading starts at ``since``; journal_args go to journalctl as given."""
    ident = f"razar-esc-{uuid.uuid4().hex[:8]}"
    await write(ident, ["old"])
    await read_until(JournalSource(tmp_path / "probe", [f"SYSLOG_IDENTIFIER={ident}"]), 1)
    await asyncio.sleep(0.05)
    since = time.time()
    await write(ident, ["new"])
    src = JournalSource(tmp_path / "c", [f"SYSLOG_IDENTIFIER={ident}"], since=since)
    assert [e["MESSAGE"] for e in await read_until(src, 1)] == ["new"]
    bad = JournalSource(tmp_path / "d", journal_args=["--directory=/nonexistent/journal"])
    with pytest.raises(SourceError, match="journalctl"):
        await bad.read_new()

"""JournalSource on a real journald: each entry read once, across instances, in order."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from razard.config import parse_config
from razard.escalation.notifier import OwnEntries
from razard.escalation.source import JournalSource, SourceError
from razard.journal import JOURNAL_SOCKET, encode_fields
from razard.triage import journal_entries

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")

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


async def test_multi_line_and_non_utf8_values_come_back_whole(
    journald: object, tmp_path: Path
) -> None:
    """Values journalctl exports in binary form (a traceback's newlines and empty lines,
    bytes that are not UTF-8) are read whole, and the entries after them too; with
    ``fields`` only those (plus cursor and timestamps) are read."""
    ident = f"razar-esc-{uuid.uuid4().hex[:8]}"
    tb = "Traceback (most recent call last):\n  File x\n\nKEY=not a field\nValueError: boom"
    datagram = encode_fields(
        [("SYSLOG_IDENTIFIER", ident), ("MESSAGE", tb), ("PRIORITY", "3"), ("EXTRA", "x")]
    )
    raw = f"SYSLOG_IDENTIFIER={ident}\nMESSAGE\n".encode()
    raw += struct.pack("<Q", 8) + b"bad \xff\xfe ok"[:8] + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, JOURNAL_SOCKET)
        s.sendto(raw, JOURNAL_SOCKET)
    await write(ident, ["after"])
    src = JournalSource(
        tmp_path / "c", [f"SYSLOG_IDENTIFIER={ident}"], fields=["MESSAGE", "PRIORITY"]
    )
    got = await read_until(src, 3)
    assert [e["MESSAGE"] for e in got] == [tb, "bad \ufffd\ufffd o", "after"]
    assert got[0]["PRIORITY"] == "3" and "EXTRA" not in got[0]
    assert all(e["__CURSOR"] and e["__REALTIME_TIMESTAMP"].isdigit() for e in got)
    assert src.cursor == got[-1]["__CURSOR"]


@pytest.mark.skipif(not JOURNAL_REMOTE.exists(), reason=f"needs {JOURNAL_REMOTE}")
async def test_the_notifiers_filter_selects_what_its_journalctl_matches_select(
    tmp_path: Path,
) -> None:
    """OwnEntries in Python and `OwnEntries.matches()` given to journalctl pick the same
    entries out of a journal of razard events, component output and other programs, and
    both drop what another user sent under razard's or a unit's names."""
    config = parse_config(
        {
            "component": [
                {"name": "vllm", "layer": "sacral", "priority": 1, "command": ["/bin/true"]},
                {"name": "gw", "layer": "throat", "priority": 2, "unit": "nginx.service"},
            ]
        },
        tmp_path / "razard.toml",
        env={},
    )
    sources = [
        "SYSLOG_IDENTIFIER=razard\n_UID=0\nRAZAR_EVENT=state_healthy\n",  # kept
        "SYSLOG_IDENTIFIER=razard\n_UID=4242\nRAZAR_EVENT=state_quarantined\n",  # forged
        "SYSLOG_IDENTIFIER=razard-other\n_UID=0\nRAZAR_EVENT=operator_alert\n",
        "SYSLOG_IDENTIFIER=razar-vllm\n_UID=4242\n",  # a name anyone can choose
        "SYSLOG_IDENTIFIER=python3\n_SYSTEMD_USER_UNIT=razar-vllm.service\n"
        "_SYSTEMD_OWNER_UID=0\n",  # kept
        "SYSLOG_IDENTIFIER=python3\n_SYSTEMD_USER_UNIT=razar-vllm.service\n"
        "_SYSTEMD_OWNER_UID=4242\n",  # a unit in a user's own manager
        "SYSLOG_IDENTIFIER=nginx\n_SYSTEMD_UNIT=nginx.service\n",  # kept
        "SYSLOG_IDENTIFIER=sshd\n_SYSTEMD_UNIT=ssh.service\n",
        "SYSLOG_IDENTIFIER=kernel\n",
    ]
    t0 = int(time.time() * 1e6)
    stream = "".join(
        f"__REALTIME_TIMESTAMP={t0 + i}\n__MONOTONIC_TIMESTAMP={1000 + i}\n"
        f"_BOOT_ID={'ab' * 16}\n{sources[i % len(sources)]}MESSAGE=m{i}\n\n"
        for i in range(72)
    )
    directory = tmp_path / "journal"
    directory.mkdir()
    proc = await asyncio.create_subprocess_exec(
        str(JOURNAL_REMOTE), f"--output={directory}/t.journal", "-", stdin=asyncio.subprocess.PIPE
    )
    await proc.communicate(stream.encode())
    assert proc.returncode == 0
    keep = OwnEntries(config.components)
    ours = await JournalSource(tmp_path / "c", journal_args=[f"--directory={directory}"]).read_new(
        keep=keep
    )
    p = await asyncio.create_subprocess_exec(
        "journalctl",
        "-q",
        "-o",
        "json",
        f"--directory={directory}",
        *keep.matches(),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await p.communicate()
    theirs = [json.loads(line)["MESSAGE"] for line in out.splitlines()]
    assert [e["MESSAGE"] for e in ours] == theirs
    assert len(theirs) == 24  # 3 of every 9 sources


def test_incident_reads_razards_records_through_the_same_reader(journald: object) -> None:
    """`razarctl incident`'s journal read (triage.journal_entries, now the export reader
    the notifier uses) returns a root-sent record with its multi-line message whole and
    its RAZAR_* fields, inside the --since/--until window, and nothing outside it."""
    component = f"inc-{uuid.uuid4().hex[:8]}"
    tb = "Traceback (most recent call last):\n\nValueError: boom"
    before = time.time() - 1
    datagram = encode_fields(
        [
            ("SYSLOG_IDENTIFIER", "razard"),
            ("MESSAGE", tb),
            ("PRIORITY", "3"),
            ("RAZAR_EVENT", "probe_failed"),
            ("RAZAR_COMPONENT", component),
            ("RAZAR_LAYER", "throat"),
            ("RAZAR_ATTEMPT", "2"),
        ]
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(datagram, JOURNAL_SOCKET)
    got = None
    for _ in range(100):  # journald files it asynchronously
        got = journal_entries(component, None, before, None)
        if got:
            break
        time.sleep(0.1)
    assert got is not None and len(got) == 1
    assert got[0]["message"] == tb and got[0]["event"] == "probe_failed"
    assert got[0]["level"] == "err" and got[0]["attempt"] == "2"
    assert before <= got[0]["unix"] <= time.time()
    assert journal_entries(component, None, None, before) is None  # until: before it was sent

"""razard's events that journald refused reach the notifier through the spool, once."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from razard import journal, storage
from razard.escalation import spool
from razard.escalation.history import read_escalations
from razard.escalation.notifier import EscalationNotifier
from razard.escalation.spool import Spool
from razard.escalation.tail import JsonlTail
from razard.journal import EventLog, Priority
from razard.layout import ESCALATION_DIR, UNJOURNALED_FILE
from tests.unit.test_escalation_notifier import Clock, ScriptedJournal
from tests.unit.test_escalation_notifier import setup as setup  # the notifier fixture


def _refusing_socket(tmp_path: Path) -> str:
    """A socket file nobody reads, as journald's is while journald is stopped."""
    path = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.close()
    return str(path)


def _spooled(path: Path) -> list[dict[str, str]]:
    return storage.read_jsonl(path)


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[socket.socket]:
    """A fake journald that takes every datagram."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "journal.sock"))
    yield sock
    sock.close()


def test_only_what_journald_refused_and_the_notifier_acts_on_is_spooled(
    tmp_path: Path, journald: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    """With journald refusing: the quarantine alert and a failure are spooled as the
    journal entries they would have been, with their time; a routine notice is not.
    With journald taking them: nothing is spooled."""
    path = tmp_path / "spool.jsonl"
    journal.journald_warning.reset()  # said once per process: maybe by an earlier test
    refused = EventLog(tmp_path / "razar.log", socket_path=_refusing_socket(tmp_path))
    refused.unjournaled = Spool(path)
    refused.emit("state_starting", "starting", component="api", priority=Priority.NOTICE)
    refused.emit("component_failed", "died: token=abc123", component="api", priority=Priority.ERR)
    refused.emit(
        "operator_alert", "api quarantined", component="api", layer="heart", priority=1, restarts=3
    )
    failed, alert = _spooled(path)
    assert failed["RAZAR_EVENT"] == "component_failed" and "abc123" not in failed["MESSAGE"]
    assert alert == {
        "MESSAGE": "api quarantined",
        "PRIORITY": "1",
        "SYSLOG_IDENTIFIER": "razard",
        "RAZAR_EVENT": "operator_alert",
        "RAZAR_COMPONENT": "api",
        "RAZAR_LAYER": "heart",
        "RAZAR_RESTARTS": "3",
        "__REALTIME_TIMESTAMP": alert["__REALTIME_TIMESTAMP"],
    }
    logged = [json.loads(x) for x in (tmp_path / "razar.log").read_text().splitlines()]
    assert [e["event"] for e in logged] == ["state_starting", "component_failed", "operator_alert"]
    assert int(alert["__REALTIME_TIMESTAMP"]) == int(logged[2]["unix"] * 1_000_000)
    assert "unavailable" in capsys.readouterr().err

    taken = EventLog(None, socket_path=journald.getsockname())
    taken.unjournaled = Spool(tmp_path / "other.jsonl")
    taken.emit("operator_alert", "api quarantined", component="api", priority=1)
    assert journald.recv(65536) and not (tmp_path / "other.jsonl").exists()


def test_a_spooled_record_cannot_claim_journald_trusted_fields() -> None:
    """Every ``_`` field of a record is dropped but its time; ``_UID`` is this process's."""
    (entry,) = spool.entries(
        [
            {
                "MESSAGE": "x",
                "RAZAR_EVENT": "operator_alert",
                "_UID": "1000",
                "_SYSTEMD_UNIT": "razar-api.service",
                "__REALTIME_TIMESTAMP": "17",
                "RAZAR_N": 3,  # not a string: not a journal field
            }
        ]
    )
    assert entry == {
        "MESSAGE": "x",
        "RAZAR_EVENT": "operator_alert",
        "__REALTIME_TIMESTAMP": "17",
        "_UID": str(os.geteuid()),
    }


def _event(event: str, unix: float, priority: int) -> dict[str, str]:
    return {
        "SYSLOG_IDENTIFIER": "razard",
        "_UID": "0",
        "RAZAR_EVENT": event,
        "RAZAR_COMPONENT": "vllm",
        "MESSAGE": f"vllm: {event}",
        "PRIORITY": str(priority),
        "__REALTIME_TIMESTAMP": str(int(unix * 1_000_000)),
    }


async def test_the_notifier_reads_the_spool_in_time_order_with_the_journal_and_empties_it(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """A quarantine journald refused, then (journald back) the component healthy again:
    the pass raises the alert and resolves it, in that order; the spool is emptied and
    its position saved, so a new notifier (razard restarted) reads nothing twice."""
    n, journal, clock = setup
    path = tmp_path / ESCALATION_DIR / UNJOURNALED_FILE
    t = clock.now - 10
    quarantine = _event("operator_alert", t, 1)
    storage.append_jsonl(path, {k: v for k, v in quarantine.items() if k != "_UID"})
    journal.queued = [_event("state_healthy", t + 5, 5)]
    async with n.client() as client:
        r = await n.run_once(client)
    assert (len(r.raised), len(r.resolved)) == (1, 1)
    raised, resolved = read_escalations(tmp_path)
    assert (raised["reason"], resolved["resolves"]) == ("quarantine", raised["id"])
    assert n.book.alerts == {}
    assert path.stat().st_size == 0
    n.unlock()

    again = EscalationNotifier(n.cfg, tmp_path, n.components, n.events, clock=clock)
    again.journal = ScriptedJournal()  # type: ignore[assignment]
    async with again.client() as client:
        r = await again.run_once(client)
    assert (r.raised, r.resolved, r.records) == ([], [], 0)


def test_a_spool_is_emptied_only_when_all_of_it_was_read_and_committed(tmp_path: Path) -> None:
    """Not before the commit; not when a record came after the read (it is read next);
    and an emptied file read again from its start."""
    path = tmp_path / "spool.jsonl"
    pos = tmp_path / "spool.pos"
    storage.append_jsonl(path, {"n": 1})
    tail = JsonlTail(path, pos)
    assert tail.read_new(commit=False) == [{"n": 1}]
    assert not tail.empty_read()  # not committed yet
    tail.commit()
    storage.append_jsonl(path, {"n": 2})
    assert not tail.empty_read() and path.stat().st_size > 0  # {"n": 2} is not read yet
    assert tail.read_new() == [{"n": 2}]
    assert tail.empty_read() and path.stat().st_size == 0
    storage.append_jsonl(path, {"n": 3})
    assert JsonlTail(path, pos).read_new() == [{"n": 3}]  # a new reader from the saved start


def test_a_full_spool_takes_nothing_more_and_says_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where nothing drains it, the spool stops at its cap instead of filling the disk."""
    monkeypatch.setattr(spool, "MAX_BYTES", 600)
    path = tmp_path / "spool.jsonl"
    s = Spool(path)
    fields = [("MESSAGE", "api quarantined"), ("PRIORITY", "1"), ("RAZAR_EVENT", "operator_alert")]
    fields.append(("RAZAR_COMPONENT", "api"))
    for i in range(20):
        s(fields, 1_700_000_000.0 + i)
    kept = _spooled(path)
    assert 0 < len(kept) < 20 and path.stat().st_size < 600 + 300
    err = capsys.readouterr().err
    assert err.count("not spooled") == 1 and "full" in err


async def test_the_journal_is_ordered_by_when_each_entry_was_sent(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """A quarantine that waited in journald's full queue is written to the journal after
    the spooled recovery that followed it; by its own send time it still comes first,
    so the pass raises and then resolves, leaving nothing firing."""
    n, journal, clock = setup
    path = tmp_path / ESCALATION_DIR / UNJOURNALED_FILE
    t = clock.now - 10
    healthy = _event("state_healthy", t + 5, 5)
    storage.append_jsonl(path, {k: v for k, v in healthy.items() if k != "_UID"})
    quarantine = _event("operator_alert", t + 8, 1)  # written late by journald
    quarantine["_SOURCE_REALTIME_TIMESTAMP"] = str(int(t * 1_000_000))  # sent first
    journal.queued = [quarantine]
    async with n.client() as client:
        r = await n.run_once(client)
    assert (len(r.raised), len(r.resolved)) == (1, 1) and n.book.alerts == {}

"""Structured events: journald native datagrams, razar.log lines, stderr mirror, redaction."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from razard import journal, storage
from razard.journal import EventLog, Priority, redact

REAL_JOURNAL_SOCKET = "/run/systemd/journal/socket"


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    # The warnings are once per process; each test must see its own first one.
    journal.journald_warning.reset()
    journal.logfile_warning.reset()
    yield
    journal.journald_warning.reset()
    journal.logfile_warning.reset()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    """A fake journald: an AF_UNIX datagram socket bound in tmp_path."""
    path = tmp_path / "journal.sock"
    assert len(str(path)) < 100, "AF_UNIX paths are limited to 108 bytes"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock
    sock.close()


def _parse_native(datagram: bytes) -> dict[str, str]:
    """Decode a journald native-protocol datagram independently of the encoder."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        newline = rest.index(b"\n")
        equals = rest.find(b"=", 0, newline)
        if equals >= 0:
            fields[rest[:equals].decode()] = rest[equals + 1 : newline].decode()
            rest = rest[newline + 1 :]
        else:
            name = rest[:newline].decode()
            (size,) = struct.unpack("<Q", rest[newline + 1 : newline + 9])
            start = newline + 9
            fields[name] = rest[start : start + size].decode()
            assert rest[start + size : start + size + 1] == b"\n"
            rest = rest[start + size + 1 :]
    return fields


def _log(tmp_path: Path, receiver: socket.socket, mirror_to_stderr: bool = False) -> EventLog:
    return EventLog(
        tmp_path / "razar.log",
        socket_path=receiver.getsockname(),
        mirror_to_stderr=mirror_to_stderr,
    )


def test_datagram_carries_exactly_the_expected_fields(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """One emit sends one datagram with MESSAGE, PRIORITY, identifier and RAZAR_* fields."""
    log = _log(tmp_path, receiver)
    log.emit(
        "restart",
        "unit failed, restarting",
        component="vllm",
        layer="sacral",
        priority=Priority.WARNING,
        attempt=2,
        backoff_s=1.5,
        healthy=False,
        note=None,
    )

    assert receiver.recv(65536) == (
        b"MESSAGE=vllm: unit failed, restarting\n"
        b"PRIORITY=4\n"
        b"SYSLOG_IDENTIFIER=razard\n"
        b"RAZAR_EVENT=restart\n"
        b"RAZAR_COMPONENT=vllm\n"
        b"RAZAR_LAYER=sacral\n"
        b"RAZAR_ATTEMPT=2\n"
        b"RAZAR_BACKOFF_S=1.5\n"
        b"RAZAR_HEALTHY=false\n"
    )


def test_multiline_message_uses_binary_length_prefixed_form(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """A value with a newline is sent as NAME, newline, 64-bit LE length, bytes, newline."""
    log = EventLog(None, identifier="razar-test", socket_path=receiver.getsockname())
    message = "probe failed:\nconnection refused ü"
    log.emit("probe_failed", message, output="line1\nline2")

    encoded = message.encode()
    output = b"line1\nline2"
    assert receiver.recv(65536) == (
        b"MESSAGE\n" + struct.pack("<Q", len(encoded)) + encoded + b"\n"
        b"PRIORITY=6\n"
        b"SYSLOG_IDENTIFIER=razar-test\n"
        b"RAZAR_EVENT=probe_failed\n"
        b"RAZAR_OUTPUT\n" + len(output).to_bytes(8, "little") + output + b"\n"
    )


def test_component_and_layer_are_omitted_when_not_given(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """Without component or layer the datagram has no RAZAR_COMPONENT or RAZAR_LAYER."""
    _log(tmp_path, receiver).emit("boot", "razard starting")
    fields = _parse_native(receiver.recv(65536))
    assert fields == {
        "MESSAGE": "razard starting",
        "PRIORITY": "6",
        "SYSLOG_IDENTIFIER": "razard",
        "RAZAR_EVENT": "boot",
    }


def test_oversized_message_is_truncated_and_sent(tmp_path: Path, receiver: socket.socket) -> None:
    """A message too large for one datagram is truncated, marked, and still delivered."""
    log = _log(tmp_path, receiver)
    huge = "é" * (1024 * 1024)  # 2 MiB of UTF-8, far past the socket send buffer
    log.emit("repair_output", huge, component="vllm")

    fields = _parse_native(receiver.recv(4 * 1024 * 1024))
    assert fields["MESSAGE"].endswith(journal.TRUNCATION_MARKER)
    body = fields["MESSAGE"].removesuffix(journal.TRUNCATION_MARKER)
    assert body.startswith("vllm: ")
    assert set(body.removeprefix("vllm: ")) == {"é"}
    assert len(body.encode()) <= journal.TRUNCATED_MESSAGE_BYTES
    assert fields["RAZAR_COMPONENT"] == "vllm"
    # razar.log keeps the whole message.
    assert storage.read_jsonl(tmp_path / "razar.log")[0]["message"] == f"vllm: {huge}"


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_unreachable_journald_warns_once_and_still_writes_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """With journald absent, every event reaches razar.log and stderr gets one warning only."""
    socket_path = tmp_path / "journal.sock"
    if kind == "stale":
        # A socket file nobody listens on, as after journald died.
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(str(socket_path))
        stale.close()
    log = EventLog(tmp_path / "razar.log", socket_path=str(socket_path))
    other = EventLog(tmp_path / "other.log", socket_path=str(socket_path))

    for n in range(3):
        log.emit("restart", f"attempt {n}", component="vllm")
    other.emit("restart", "from a second EventLog")

    err = capsys.readouterr().err
    assert err.count("warning") == 1
    assert str(socket_path) in err
    assert [r["message"] for r in storage.read_jsonl(tmp_path / "razar.log")] == [
        "vllm: attempt 0",
        "vllm: attempt 1",
        "vllm: attempt 2",
    ]
    assert len(storage.read_jsonl(tmp_path / "other.log")) == 1


def test_log_line_shape(tmp_path: Path, receiver: socket.socket) -> None:
    """razar.log gets one JSON object: ts (UTC, ms), unix, level, event, component, layer,
    message, then the extra fields; None extras are left out."""
    log = _log(tmp_path, receiver)
    before = time.time()
    log.emit(
        "quarantine",
        "budget exhausted",
        component="vllm",
        layer="sacral",
        priority=Priority.ERR,
        rung="repair",
        attempts=3,
        gone=None,
    )
    after = time.time()

    (record,) = storage.read_jsonl(tmp_path / "razar.log")
    assert list(record) == [
        "ts",
        "unix",
        "level",
        "event",
        "component",
        "layer",
        "message",
        "rung",
        "attempts",
    ]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["ts"])
    assert before <= record["unix"] <= after
    parsed = datetime.fromisoformat(record["ts"])
    assert abs(parsed.timestamp() - record["unix"]) < 0.001
    assert record["level"] == "err"
    assert (record["event"], record["component"], record["layer"]) == (
        "quarantine",
        "vllm",
        "sacral",
    )
    assert record["message"] == "vllm: budget exhausted"
    assert (record["rung"], record["attempts"]) == ("repair", 3)


def test_log_line_without_component_has_nulls(tmp_path: Path, receiver: socket.socket) -> None:
    """component and layer are present as null when not given, so readers can rely on keys."""
    _log(tmp_path, receiver).emit("boot", "starting", priority=Priority.DEBUG)
    (record,) = storage.read_jsonl(tmp_path / "razar.log")
    assert (record["component"], record["layer"], record["level"]) == (None, None, "debug")


def test_no_log_path_writes_no_file(tmp_path: Path, receiver: socket.socket) -> None:
    """log_path None sends to journald and creates no file."""
    EventLog(None, socket_path=receiver.getsockname()).emit("boot", "starting")
    assert receiver.recv(65536).startswith(b"MESSAGE=starting\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.sock"]


def test_message_names_its_component_once(tmp_path: Path, receiver: socket.socket) -> None:
    """MESSAGE leads with the component's name so the plain journal (journalctl -u razard)
    says which component a line is about; a message that starts with it is left alone."""
    log = _log(tmp_path, receiver)
    log.emit("state_restarting", "restart 1/3 in 0.40s", component="api")
    log.emit("operator_alert", "api quarantined: crash loop", component="api")
    log.emit("state_healthy", "apis are fine", component="api")  # a longer name is not it
    log.emit("chakra_down", "root layer down", layer="root")
    got = [_parse_native(receiver.recv(65536))["MESSAGE"] for _ in range(4)]
    assert got == [
        "api: restart 1/3 in 0.40s",
        "api quarantined: crash loop",
        "api: apis are fine",
        "root layer down",
    ]
    logged = [r["message"] for r in storage.read_jsonl(tmp_path / "razar.log")]
    assert logged == got  # razar.log carries the same line


def test_mirror_to_stderr_prints_one_human_line(
    tmp_path: Path, receiver: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    """With mirror_to_stderr each event is one line '<level> <component> <event>: <message>'."""
    log = _log(tmp_path, receiver, mirror_to_stderr=True)
    log.emit("restart", "exit 1\nsee journal", component="vllm", priority=Priority.WARNING)
    log.emit("boot", "starting")
    assert capsys.readouterr().err.splitlines() == [
        "warning vllm restart: exit 1\\nsee journal",
        "info - boot: starting",
    ]


def test_no_stderr_output_by_default(
    tmp_path: Path, receiver: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without mirror_to_stderr a successful emit prints nothing."""
    _log(tmp_path, receiver).emit("boot", "starting")
    assert capsys.readouterr().err == ""


def test_unwritable_log_warns_once_and_still_sends_to_journald(
    tmp_path: Path, receiver: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    """A razar.log that cannot be written costs one stderr warning, never an exception."""
    (tmp_path / "state").write_text("a file where a directory should be")
    log = EventLog(tmp_path / "state" / "razar.log", socket_path=receiver.getsockname())
    log.emit("boot", "one")
    log.emit("boot", "two")

    assert _parse_native(receiver.recv(65536))["MESSAGE"] == "one"
    assert _parse_native(receiver.recv(65536))["MESSAGE"] == "two"
    assert capsys.readouterr().err.count("warning") == 1


def test_secrets_are_redacted_in_message_and_fields(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """Tokens in the message and string fields never reach journald or razar.log."""
    log = _log(tmp_path, receiver)
    log.emit("repair_failed", "POST failed: token=sk-123", header="Authorization: Bearer abc.def")

    fields = _parse_native(receiver.recv(65536))
    assert fields["MESSAGE"] == "POST failed: token=***"
    assert fields["RAZAR_HEADER"] == "Authorization: Bearer ***"
    raw = (tmp_path / "razar.log").read_text()
    assert "sk-123" not in raw and "abc.def" not in raw


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Authorization: Bearer eyJhbGciOi.x-y_z", "Authorization: Bearer ***"),
        ("bearer abc123", "bearer ***"),
        ("https://h/v1?token=abc&x=1", "https://h/v1?token=***&x=1"),
        ("RSTAR_TOKEN=s3cr3t ./run", "RSTAR_TOKEN=*** ./run"),
        ('{"api_key": "k-1"}', '{"api_key": "***"}'),
        ("password: hunter2", "password: ***"),
        ("max_tokens=512 tokens used: 40", "max_tokens=512 tokens used: 40"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_redact_masks_only_the_secret(given: str, expected: str) -> None:
    """redact replaces bearer tokens and token/secret/password/api-key values with ***."""
    assert redact(given) == expected


@pytest.mark.parametrize("fields", [{"bad-key": 1}, {"clé": 1}, {"ts": "x"}, {"x" * 60: 1}])
def test_invalid_field_names_are_rejected(
    tmp_path: Path, receiver: socket.socket, fields: dict[str, Any]
) -> None:
    """A field that cannot be a journald field name, or shadows a log key, raises ValueError."""
    with pytest.raises(ValueError):
        _log(tmp_path, receiver).emit("boot", "x", **fields)


def test_priority_out_of_range_is_rejected(tmp_path: Path, receiver: socket.socket) -> None:
    """A priority outside syslog's 0-7 raises ValueError."""
    with pytest.raises(ValueError):
        _log(tmp_path, receiver).emit("boot", "x", priority=8)


def test_priority_values_match_syslog() -> None:
    """Priority carries syslog's numbers, EMERG 0 through DEBUG 7."""
    assert [(p.name, int(p)) for p in Priority] == [
        ("EMERG", 0),
        ("ALERT", 1),
        ("CRIT", 2),
        ("ERR", 3),
        ("WARNING", 4),
        ("NOTICE", 5),
        ("INFO", 6),
        ("DEBUG", 7),
    ]


# --- a real journald ----------------------------------------------------------------


def _journald_listening(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


@pytest.fixture
def real_journald(journald: None) -> str:
    """The run's shared journald (tests/conftest.py): never one of this test's own, whose
    stop at this worker's end would pull journald from under the other workers' tests."""
    if shutil.which("journalctl") is None:
        pytest.skip("journalctl is not installed")
    assert _journald_listening(REAL_JOURNAL_SOCKET)
    return REAL_JOURNAL_SOCKET


@pytest.mark.integration
def test_real_journald_stores_fields_queryable_by_component(
    real_journald: str, tmp_path: Path
) -> None:
    """An event sent to a real journald is found by journalctl RAZAR_COMPONENT=<name>."""
    component = f"razar-test-{uuid.uuid4().hex[:12]}"
    message = "journald integration\nsecond line"
    EventLog(tmp_path / "razar.log", socket_path=real_journald).emit(
        "integration_check", message, component=component, layer="root", ok=True
    )

    entries: list[dict[str, object]] = []
    deadline = time.monotonic() + 10
    while not entries and time.monotonic() < deadline:
        out = subprocess.run(
            ["journalctl", f"RAZAR_COMPONENT={component}", "-o", "json", "--no-pager"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        if not entries:
            time.sleep(0.2)

    assert len(entries) == 1, f"no journal entry for RAZAR_COMPONENT={component}"
    (entry,) = entries
    assert entry["MESSAGE"] == f"{component}: {message}"
    assert entry["RAZAR_EVENT"] == "integration_check"
    assert entry["RAZAR_LAYER"] == "root"
    assert entry["RAZAR_OK"] == "true"
    assert entry["SYSLOG_IDENTIFIER"] == "razard"
    assert entry["PRIORITY"] == "6"


def test_an_event_while_stderr_and_journald_are_both_gone_raises_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd, stderr is a stream to journald: with journald stopped, both the
    datagram and the warning about it fail (EPIPE). The event still reaches razar.log and
    emit returns, mirror line and all; nothing is raised into the caller (a runner)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # writes to write_end now fail with EPIPE
    broken = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stderr", broken)
    dead = tmp_path / "dead.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(dead))
    s.close()
    log = EventLog(tmp_path / "razar.log", socket_path=str(dead), mirror_to_stderr=True)
    try:
        log.emit("component_failed", "died", component="api", priority=Priority.ERR)
        log.emit("state_restarting", "restart 1/3", component="api")
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            broken.close()
    events = [json.loads(x)["event"] for x in (tmp_path / "razar.log").read_text().splitlines()]
    assert events == ["component_failed", "state_restarting"]

"""Durable file primitives: atomic JSON documents and locked JSON-lines/text appends."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from razard import storage
from razard.errors import StateError

PROCESSES = 4
LINES_PER_PROCESS = 200


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_json_atomic_writes_sorted_indented_json_readable_by_group(tmp_path: Path) -> None:
    """A written document reads back equal, is sorted and indented, and has mode 0640."""
    path = tmp_path / "razar_state.json"
    storage.write_json_atomic(path, {"b": 1, "a": [1, 2], "ü": "ok"})

    assert storage.read_json(path) == {"a": [1, 2], "b": 1, "ü": "ok"}
    assert path.read_text(encoding="utf-8").startswith('{\n  "a": [\n')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_write_json_atomic_creates_parent_directories(tmp_path: Path) -> None:
    """Missing parent directories are created."""
    path = tmp_path / "quarantine" / "deep" / "vllm.json"
    storage.write_json_atomic(path, {"reason": "probe"})
    assert storage.read_json(path) == {"reason": "probe"}


def test_write_json_atomic_replaces_existing_document(tmp_path: Path) -> None:
    """A second write replaces the first whole and leaves no temp file."""
    path = tmp_path / "state.json"
    storage.write_json_atomic(path, {"wave": 1, "extra": "x" * 1000})
    storage.write_json_atomic(path, {"wave": 2})
    assert storage.read_json(path) == {"wave": 2}
    assert _leftovers(tmp_path) == []


def test_unserialisable_object_leaves_old_document_intact(tmp_path: Path) -> None:
    """A write that fails to serialise keeps the old content and leaves no temp file."""
    path = tmp_path / "state.json"
    storage.write_json_atomic(path, {"wave": 1})
    before = path.read_bytes()

    with pytest.raises(TypeError):
        storage.write_json_atomic(path, {"wave": object()})

    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_rename_raises_state_error_and_removes_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OSError mid-write becomes StateError naming the path; old content and no temp survive."""
    path = tmp_path / "state.json"
    storage.write_json_atomic(path, {"wave": 1})

    def broken_replace(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StateError, match=str(path)):
        storage.write_json_atomic(path, {"wave": 2})

    assert storage.read_json(path) == {"wave": 1}
    assert _leftovers(tmp_path) == []


def test_write_json_atomic_under_a_file_raises_state_error(tmp_path: Path) -> None:
    """A parent path that is a regular file gives StateError naming the target."""
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    with pytest.raises(StateError, match="state/x.json"):
        storage.write_json_atomic(blocker / "x.json", {})


def test_read_json_missing_file_is_none(tmp_path: Path) -> None:
    """A document that does not exist reads as None."""
    assert storage.read_json(tmp_path / "absent.json") is None


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b""])
def test_read_json_invalid_content_raises_state_error(tmp_path: Path, content: bytes) -> None:
    """Content that is not valid JSON gives StateError naming the path."""
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(StateError, match="broken.json: not valid JSON"):
        storage.read_json(path)


def test_read_json_unreadable_path_raises_state_error(tmp_path: Path) -> None:
    """A path that cannot be read (here: a directory) gives StateError naming it."""
    with pytest.raises(StateError, match=str(tmp_path)):
        storage.read_json(tmp_path)


def test_append_jsonl_writes_one_line_per_record(tmp_path: Path) -> None:
    """Each record becomes one line, newlines inside values escaped, non-ASCII kept."""
    path = tmp_path / "logs" / "patch_history.jsonl"
    storage.append_jsonl(path, {"component": "vllm", "note": "two\nlines"})
    storage.append_jsonl(path, {"component": "ölama"})

    raw = path.read_text(encoding="utf-8")
    assert raw.count("\n") == 2
    assert "ölama" in raw
    assert storage.read_jsonl(path) == [
        {"component": "vllm", "note": "two\nlines"},
        {"component": "ölama"},
    ]


def test_read_jsonl_missing_file_is_empty(tmp_path: Path) -> None:
    """A log that does not exist reads as no records."""
    assert storage.read_jsonl(tmp_path / "absent.jsonl") == []


def test_read_jsonl_skips_torn_last_line(tmp_path: Path) -> None:
    """A last line cut off mid-record (a crash during append) is skipped."""
    path = tmp_path / "razar.log"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "mess')
    assert storage.read_jsonl(path) == [{"n": 1}, {"n": 2}]


def test_read_jsonl_skips_lines_that_are_not_objects(tmp_path: Path) -> None:
    """Blank lines and JSON values that are not objects are skipped."""
    path = tmp_path / "razar.log"
    path.write_bytes(b'[1, 2]\n\n"text"\n{"n": 1}\n42\n')
    assert storage.read_jsonl(path) == [{"n": 1}]


def test_append_after_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    """An append after a crash-torn line starts a new line, so the new record is readable."""
    path = tmp_path / "razar.log"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "tor')
    storage.append_jsonl(path, {"n": 3})
    assert storage.read_jsonl(path) == [{"n": 1}, {"n": 3}]


def test_append_jsonl_under_a_file_raises_state_error(tmp_path: Path) -> None:
    """A log whose parent is a regular file gives StateError naming the log."""
    blocker = tmp_path / "logs"
    blocker.write_text("")
    with pytest.raises(StateError, match="logs/razar.log"):
        storage.append_jsonl(blocker / "razar.log", {"n": 1})


def test_append_text_appends_whole_text(tmp_path: Path) -> None:
    """Text is appended as given, after what is already there."""
    path = tmp_path / "quarantine_log.md"
    storage.append_text(path, "# Quarantine log\n")
    storage.append_text(path, "- vllm: quarantined\n")
    assert path.read_text(encoding="utf-8") == "# Quarantine log\n- vllm: quarantined\n"


def _append_records(path: str, worker: int, start: Any) -> None:
    start.wait()
    for i in range(LINES_PER_PROCESS):
        # Sizes up to ~12 KiB so some writes exceed a page and PIPE_BUF.
        storage.append_jsonl(Path(path), {"worker": worker, "i": i, "pad": "x" * (i * 61)})


def _append_blocks(path: str, worker: int, start: Any) -> None:
    start.wait()
    for i in range(LINES_PER_PROCESS):
        storage.append_text(Path(path), f"## {worker}:{i}\n" + f"{worker}-{i}|" * (i * 10) + "\n")


def _run_workers(target: Any, path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=target, args=(str(path), w, start)) for w in range(PROCESSES)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0


def test_concurrent_appends_from_processes_produce_whole_lines(tmp_path: Path) -> None:
    """Several processes appending at once leave only whole, parseable records, none lost."""
    path = tmp_path / "razar.log"
    _run_workers(_append_records, path)

    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert len(records) == PROCESSES * LINES_PER_PROCESS
    for record in records:
        assert record["pad"] == "x" * (record["i"] * 61)
    seen = {(r["worker"], r["i"]) for r in records}
    assert seen == {(w, i) for w in range(PROCESSES) for i in range(LINES_PER_PROCESS)}
    assert storage.read_jsonl(path) == records


def test_concurrent_text_appends_do_not_interleave(tmp_path: Path) -> None:
    """Several processes appending multi-line text at once never interleave inside a block."""
    path = tmp_path / "quarantine_log.md"
    _run_workers(_append_blocks, path)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 * PROCESSES * LINES_PER_PROCESS
    for header, body in zip(lines[::2], lines[1::2], strict=True):
        worker, i = header.removeprefix("## ").split(":")
        assert body == f"{worker}-{i}|" * (int(i) * 10)


def test_appended_file_mode_is_0640_under_usual_umask(tmp_path: Path) -> None:
    """A log created by an append is readable by its group, not by others (0640)."""
    old = os.umask(0o022)
    try:
        storage.append_jsonl(tmp_path / "razar.log", {"n": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "razar.log").stat().st_mode) == 0o640
    lock = tmp_path / ".razar.log.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


def test_a_lock_held_on_the_log_itself_does_not_stop_an_append(tmp_path: Path) -> None:
    """Whoever can read the log (group razar) may flock it: appends go on regardless."""
    path = tmp_path / "razar.log"
    storage.append_jsonl(path, {"n": 1})
    with open(path, "rb") as reader:
        fcntl.flock(reader, fcntl.LOCK_EX)
        storage.append_jsonl(path, {"n": 2})
    assert [r["n"] for r in storage.read_jsonl(path)] == [1, 2]


def test_a_held_append_lock_delays_an_append_only_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even the root-only lock is waited for a bounded time; the record is then appended whole."""
    monkeypatch.setattr(storage, "APPEND_LOCK_WAIT_S", 0.05)
    path = tmp_path / "razar.log"
    storage.append_jsonl(path, {"n": 1})
    holder = storage.open_lock(tmp_path / ".razar.log.lock")
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        storage.append_jsonl(path, {"n": 2})
    finally:
        os.close(holder)
    assert [r["n"] for r in storage.read_jsonl(path)] == [1, 2]


def test_prepare_state_dir_leaves_others_nothing(tmp_path: Path) -> None:
    """The state directory becomes 0750 and ours; files inside lose others' bits, and
    subdirectories follow; a lock file someone else could open is removed."""
    state = tmp_path / "state"
    (state / "quarantine").mkdir(parents=True)
    (state / "razar.log").write_text("{}\n")
    (state / "razar.log").chmod(0o666)
    (state / "quarantine" / "web.json").write_text("{}")
    (state / "quarantine" / "web.json").chmod(0o644)
    (state / "quarantine").chmod(0o777)
    (state / "razard.lock").write_text("")
    (state / "razard.lock").chmod(0o644)
    outside = tmp_path / "outside"
    outside.write_text("")
    outside.chmod(0o666)
    (state / "link").symlink_to(outside)
    state.chmod(0o755)

    storage.prepare_state_dir(state)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.lstat().st_mode)

    assert mode(state) == 0o750
    assert mode(state / "quarantine") == 0o750
    assert mode(state / "razar.log") == 0o640
    assert mode(state / "quarantine" / "web.json") == 0o640
    assert not (state / "razard.lock").exists()
    assert (state / "link").is_symlink()
    assert mode(outside) == 0o666  # the link is never followed
    assert state.stat().st_gid == (storage.state_gid() if os.geteuid() == 0 else os.getegid())


def test_open_lock_replaces_a_lock_file_others_can_open(tmp_path: Path) -> None:
    """A 0644 lock file (an older razard's, or planted) is replaced by a fresh 0600 one:
    a descriptor someone already holds to the old file locks nothing any more."""
    path = tmp_path / "repair.lock"
    path.write_text("")
    path.chmod(0o644)
    with open(path, "rb") as old:
        fcntl.flock(old, fcntl.LOCK_EX)
        fd = storage.open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # not blocked by the old holder
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
        finally:
            os.close(fd)


def test_lone_surrogate_from_outside_does_not_fail_an_append(tmp_path: Path) -> None:
    """A record carrying a lone surrogate (a model's reply) is appended and reads back intact."""
    path = tmp_path / "log.jsonl"
    storage.append_jsonl(path, {"reason": "bad \ud800 reply"})
    assert storage.read_jsonl(path) == [{"reason": "bad \ud800 reply"}]

"""JSON-lines logs are read incrementally: complete lines once, rotation and truncation seen."""

from __future__ import annotations

import json
import os
from pathlib import Path

from razard.escalation.tail import JsonlTail
from razard.storage import append_jsonl


def tail(tmp_path: Path) -> JsonlTail:
    return JsonlTail(tmp_path / "razar_ai_invocations.json", tmp_path / "pos.json")


def test_each_record_is_read_once_across_restarts(tmp_path: Path) -> None:
    """A new reader on the same position file starts after what the last one read."""
    log = tmp_path / "razar_ai_invocations.json"
    append_jsonl(log, {"n": 1})
    append_jsonl(log, {"n": 2})
    assert [r["n"] for r in tail(tmp_path).read_new()] == [1, 2]
    append_jsonl(log, {"n": 3})
    assert [r["n"] for r in tail(tmp_path).read_new()] == [3]
    assert tail(tmp_path).read_new() == []


def test_a_torn_last_line_waits_and_a_healed_one_is_skipped(tmp_path: Path) -> None:
    """A line still being written is not consumed; once terminated it is read whole."""
    log = tmp_path / "razar_ai_invocations.json"
    append_jsonl(log, {"n": 1})
    with log.open("a") as f:
        f.write('{"n": 2, "status": "fai')
    t = tail(tmp_path)
    assert [r["n"] for r in t.read_new()] == [1]
    with log.open("a") as f:
        f.write('led"}\n')
    assert t.read_new() == [{"n": 2, "status": "failed"}]
    with log.open("a") as f:
        f.write('{"n": 3, "torn by a cra')  # the writer died; the next append heals the line
    append_jsonl(log, {"n": 4})
    assert [r["n"] for r in t.read_new()] == [4]


def test_rotation_and_truncation_start_the_new_file_from_its_beginning(tmp_path: Path) -> None:
    """A replaced (new inode) or truncated log is read from its start, nothing skipped."""
    log = tmp_path / "razar_ai_invocations.json"
    append_jsonl(log, {"n": 1})
    append_jsonl(log, {"n": 2})
    t = tail(tmp_path)
    t.read_new()
    os.rename(log, tmp_path / "old.json")
    append_jsonl(log, {"n": 3})
    assert [r["n"] for r in tail(tmp_path).read_new()] == [3]
    log.write_text(json.dumps({"n": 4}) + "\n")  # truncated in place, shorter than before
    log.write_text("")
    append_jsonl(log, {"n": 5})
    t2 = tail(tmp_path)
    assert [r["n"] for r in t2.read_new()] == [5]


def test_without_commit_the_position_is_not_saved(tmp_path: Path) -> None:
    """read_new(commit=False) then a crash: the next reader gets the records again."""
    log = tmp_path / "razar_ai_invocations.json"
    append_jsonl(log, {"n": 1})
    assert len(tail(tmp_path).read_new(commit=False)) == 1
    t = tail(tmp_path)
    assert len(t.read_new(commit=False)) == 1
    t.commit()
    assert tail(tmp_path).read_new() == []


def test_a_missing_log_is_empty(tmp_path: Path) -> None:
    """No log yet (no repair ran) is not an error."""
    assert tail(tmp_path).read_new() == []

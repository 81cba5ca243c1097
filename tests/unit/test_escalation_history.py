"""operator_escalations.jsonl: records merged by id, latest delivery state wins."""

from __future__ import annotations

from pathlib import Path

from razard.escalation.history import append_escalation, read_escalations
from razard.layout import ESCALATIONS_FILE


def raised(rid: str, ts: float, **targets: str) -> dict[str, object]:
    return {
        "ts": ts,
        "time": "t",
        "id": rid,
        "event": "raised",
        "component": "vllm",
        "reason": "quarantine",
        "targets": targets,
        "delivered": False,
    }


def test_a_later_delivery_record_updates_the_escalation(tmp_path: Path) -> None:
    """An outbox retry that got through turns 'queued' into 'delivered' under the same id."""
    append_escalation(tmp_path, raised("a", 10.0, operator="queued", webhook="delivered"))
    append_escalation(tmp_path, raised("b", 20.0, operator="delivered"))
    append_escalation(
        tmp_path, {"ts": 30.0, "id": "a", "event": "delivery", "targets": {"operator": "delivered"}}
    )
    a, b = read_escalations(tmp_path)
    assert a["id"] == "a" and a["ts"] == 10.0 and a["updated"] == 30.0
    assert a["targets"] == {"operator": "delivered", "webhook": "delivered"} and a["delivered"]
    assert a["event"] == "raised" and a["component"] == "vllm"
    assert b["delivered"]


def test_since_keeps_recent_ones_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    """``since`` filters by the time raised; a torn last line does not break reading."""
    append_escalation(tmp_path, raised("old", 1.0, operator="delivered"))
    append_escalation(tmp_path, raised("new", 100.0, operator="failed"))
    with (tmp_path / ESCALATIONS_FILE).open("a") as f:
        f.write('{"ts": 200, "id": "torn')
    assert [r["id"] for r in read_escalations(tmp_path, since=50.0)] == ["new"]
    assert not read_escalations(tmp_path, since=50.0)[0]["delivered"]


def test_no_file_no_escalations(tmp_path: Path) -> None:
    """A node that never escalated has an empty history."""
    assert read_escalations(tmp_path) == []

"""The outbox: items in order, bounded, oldest dropped; retry delays double up to a cap."""

from __future__ import annotations

from pathlib import Path

from razard.escalation.outbox import Outbox, backoff


def test_items_come_back_in_the_order_queued_and_survive_a_new_outbox(tmp_path: Path) -> None:
    """A new Outbox on the same directory (razard restarted) sees the same items in order."""
    box = Outbox(tmp_path, 10)
    for i in range(5):
        box.put({"id": f"id{i}", "target": "operator", "n": i})
    again = Outbox(tmp_path, 10)
    assert [item["n"] for _, item in again.items()] == [0, 1, 2, 3, 4]
    name, item = again.items()[0]
    again.update(name, {**item, "attempts": 1})
    again.remove(again.items()[1][0])
    assert [(i["n"], i.get("attempts")) for _, i in again.items()][:2] == [(0, 1), (2, None)]


def test_past_the_bound_the_oldest_are_dropped_and_returned(tmp_path: Path) -> None:
    """A full outbox drops its oldest item and tells the caller which."""
    box = Outbox(tmp_path, 3)
    dropped = [box.put({"id": f"id{i}", "target": "webhook", "n": i}) for i in range(5)]
    assert [[d["n"] for d in ds] for ds in dropped] == [[], [], [], [0], [1]]
    assert [i["n"] for _, i in box.items()] == [2, 3, 4] and len(box) == 3


def test_backoff_doubles_up_to_the_cap() -> None:
    """5 s, 10 s, 20 s, ... never more than the cap, even after many attempts."""
    assert [backoff(n, 5.0, 60.0) for n in (1, 2, 3, 4, 5)] == [5.0, 10.0, 20.0, 40.0, 60.0]
    assert backoff(10_000, 5.0, 60.0) == 60.0

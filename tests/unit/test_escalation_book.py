"""Dedup, repeat and inhibition decisions over the firing alerts, and their persistence."""

from __future__ import annotations

from pathlib import Path

from razard.escalation.book import AlertBook, Firing, decide, due_repeats, inhibited


def firing(reason: str = "quarantine", layer: str = "sacral", **kw: object) -> Firing:
    base: dict[str, object] = {
        "id": "a1",
        "host": "h",
        "component": "vllm",
        "layer": layer,
        "signature": "quarantined",
        "reason": reason,
        "summary": "s",
        "sample": "x",
        "first_ts": 0.0,
        "last_sent": 0.0,
        "last_seen": 0.0,
        "targets": ["operator"],
    }
    base.update(kw)
    return Firing(**base)  # type: ignore[arg-type]


def test_a_new_key_raises_a_known_one_is_suppressed_until_the_repeat_interval() -> None:
    """Dedup: the same (host, component, signature) is not sent again within the interval."""
    f = firing()
    assert decide(None, 0.0, 60.0) == "raise"
    assert decide(f, 59.0, 60.0) == "suppress"
    assert decide(f, 60.0, 60.0) == "repeat"
    assert decide(f, 1e9, 0.0) == "suppress"  # 0: never repeat


def test_still_firing_alerts_repeat_and_recurring_ones_only_while_recurring() -> None:
    """A quarantine repeats each interval; a recurring failure only if seen again since."""
    q = firing()
    quiet = firing(reason="recurring", signature="boom", last_seen=0.0)
    again = firing(reason="recurring", signature="bang", last_seen=30.0)
    assert due_repeats([q, quiet, again], 59.0, 60.0, False) == []
    assert due_repeats([q, quiet, again], 60.0, 60.0, False) == [q, again]


def test_higher_layers_are_inhibited_while_root_is_down_and_sent_when_it_is_back() -> None:
    """Root down holds back every other layer's alert; root's own go out."""
    assert inhibited("sacral", True) and not inhibited("root", True)
    assert not inhibited("sacral", False)
    held = firing(inhibited=True, targets=[])
    assert decide(held, 1e9, 60.0) == "suppress"
    assert due_repeats([held], 1.0, 60.0, True) == []
    assert due_repeats([held], 1.0, 60.0, False) == [held]


def test_the_book_survives_a_restart(tmp_path: Path) -> None:
    """Firing alerts and the root outage are saved and read back by a new book."""
    book = AlertBook(tmp_path / "firing.json")
    book.put(firing())
    book.set_root_down(True)
    book.save()
    again = AlertBook(tmp_path / "firing.json")
    assert again.root_down and again.get(("h", "vllm", "quarantined")) == firing()


def test_a_damaged_book_starts_empty(tmp_path: Path) -> None:
    """A book that does not parse does not stop escalation: it starts empty."""
    (tmp_path / "firing.json").write_text("{not json")
    assert AlertBook(tmp_path / "firing.json").alerts == {}

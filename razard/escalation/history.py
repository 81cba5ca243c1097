"""``operator_escalations.jsonl``: every escalation, and every later change of its delivery.

One JSON line per record, appended whole under a lock (`razard.storage.append_jsonl`).
An escalation is first written with ``"event": "raised"``; when its delivery
state changes later (an outbox retry got through, or gave up) a record with
the same ``id`` and ``"event": "delivery"`` follows. Fields of a raised record:

=============  ==============================================================
``ts``         epoch seconds (float) when it was raised
``time``       the same, ISO-8601 UTC
``id``         the escalation's id (32 hex digits)
``event``      ``raised`` or ``delivery``
``host``       the host label
``component``  the component (``layer:<name>`` for a whole layer)
``layer``      the component's layer ("" when unknown)
``reason``     ``recurring``, ``quarantine``, ``warning_threshold``,
               ``layer_down`` or ``resolved``
``signature``  the normalised failure signature
``sample``     one example line, secrets redacted
``count``      occurrences behind it (recurring: within the window)
``dedup_key``  ``host|component|signature``
``summary``    one line for a person
``targets``    ``{target: "delivered"|"queued"|"failed"|"inhibited"}``
``delivered``  True when every target has it
``repeat_of``  (repeats) the id first raised for the same dedup key
``resolves``   (resolved) the id of the escalation it ends
=============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from razard.layout import ESCALATIONS_FILE
from razard.storage import append_jsonl, read_jsonl

DELIVERED: Final = "delivered"


def iso(ts: float) -> str:
    """``ts`` as ISO-8601 UTC with milliseconds and a ``Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def all_delivered(targets: Mapping[str, Any]) -> bool:
    """True when there are targets and every one has the escalation."""
    return bool(targets) and all(v == DELIVERED for v in targets.values())


def append_escalation(state_dir: Path, record: Mapping[str, Any]) -> None:
    """Append one record to ``operator_escalations.jsonl`` (raises StateError)."""
    append_jsonl(state_dir / ESCALATIONS_FILE, record)


def read_escalations(state_dir: Path, since: float | None = None) -> list[dict[str, Any]]:
    """Every escalation in ``state_dir``, its records merged by id, oldest first.

    The merged record keeps the raised record's fields (``ts``/``time`` are
    when it was raised), takes each target's latest delivery state, sets
    ``delivered`` from them and ``updated`` to the epoch time of its latest
    record. ``since`` (epoch seconds) keeps those raised at or after it.
    A torn last line is skipped.

    Raises:
        StateError: the file exists but cannot be read.
    """
    merged: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(state_dir / ESCALATIONS_FILE):
        rid = rec.get("id")
        if not isinstance(rid, str):
            continue
        targets = rec.get("targets") if isinstance(rec.get("targets"), dict) else {}
        ts = rec.get("ts") if isinstance(rec.get("ts"), int | float) else 0.0
        cur = merged.get(rid)
        if cur is None:
            cur = merged[rid] = {**rec, "targets": dict(targets or {}), "updated": ts}
            cur.setdefault("event", "raised")
            continue
        for key, value in rec.items():
            if key not in ("ts", "time", "event", "targets"):
                cur.setdefault(key, value)  # a delivery record never overrides the raise
        cur["targets"].update(targets or {})
        cur["updated"] = max(float(cur["updated"] or 0.0), float(ts or 0.0))
        if cur.get("event") != "raised" and rec.get("event") == "raised":
            cur["ts"], cur["time"], cur["event"] = rec.get("ts"), rec.get("time"), "raised"
    out = []
    for rec in merged.values():
        rec["delivered"] = all_delivered(rec["targets"])
        ts = rec.get("ts")
        if since is None or (isinstance(ts, int | float) and ts >= since):
            out.append(rec)
    out.sort(key=lambda r: float(r.get("ts") or 0.0))
    return out

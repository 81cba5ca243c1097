"""razard's events that journald did not take, kept for the escalation notifier.

The notifier learns what razard did from the journal (`JournalSource`). While
journald is stopped, restarting or its socket's queue is full, `EventLog` still
writes ``razar.log`` but the event never reaches the journal, and a quarantine
would never reach the operator. The spool closes that gap:

- razard's `EventLog` hands every event journald refused to `Spool`, which
  appends it, as the journal entry it would have been, to
  ``escalation/unjournaled.jsonl`` in the state directory, if the notifier acts on
  it (`classify.from_journal`: razard's routine notices are left in razar.log);
- the notifier reads the file with a `JsonlTail` in the same pass as the journal,
  in time order with the journal's entries, commits its position with the
  journal's cursor (each record at least once, as for the journal) and empties
  the file once all of it was read (`JsonlTail.empty_read`).

An event is in the journal or in the spool, never both: only a datagram the
journal socket refused is spooled.

Trust: the file is root's, in the state directory (0750), so its records are
razard's own. `entries` still drops every journald-trusted field (``_UID``,
``_SYSTEMD_UNIT``, ...) a record carries and sets ``_UID`` to this process's uid:
what a record says can never pass for a unit's output.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from razard import storage
from razard.errors import StateError
from razard.escalation import classify
from razard.journal import say

#: The one field whose name starts with ``_`` that a spooled record keeps: when it happened.
TIMESTAMP: Final = "__REALTIME_TIMESTAMP"


class Spool:
    """`EventLog.unjournaled` for razard: appends what the notifier acts on to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False

    def __call__(self, fields: Sequence[tuple[str, str]], unix: float) -> None:
        """Spool one event journald refused (its journal fields; when it happened). Never
        raises: a spool that cannot be written is said once on stderr."""
        entry = {name: value for name, value in fields if not name.startswith("_")}
        entry[TIMESTAMP] = str(int(unix * 1_000_000))
        if _observed(entry, unix) is None:
            return
        try:
            storage.append_jsonl(self.path, entry)
        except StateError as e:
            if not self._warned:
                self._warned = True
                say(
                    "razard: warning: events journald did not take are not spooled for the "
                    f"escalation notifier: {e}"
                )


def entries(records: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The journal entries of spooled records (`JsonlTail` reads them), razard's own:
    string fields only, no journald-trusted field but the timestamp, ``_UID`` this uid."""
    uid = str(os.geteuid())
    out = []
    for rec in records:
        entry = {
            k: v
            for k, v in rec.items()
            if isinstance(v, str) and (k == TIMESTAMP or not k.startswith("_"))
        }
        entry["_UID"] = uid
        out.append(entry)
    return out


def _observed(entry: Mapping[str, str], unix: float) -> classify.Observation | None:
    return classify.from_journal(
        {**entry, "_UID": str(os.geteuid())}, units={}, layers={}, host="", now=unix
    )

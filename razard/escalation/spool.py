"""razard's events that journald did not take, kept for the escalation notifier.

The notifier learns what razard did from the journal (`JournalSource`). When
journald's socket refuses a datagram (journald stopped with its sockets, or not
reading and its socket's queue full), `EventLog` still writes ``razar.log`` but
the event never reaches the journal, and a quarantine would never reach the
operator. (A journald stopped while systemd holds its socket refuses nothing:
the datagrams wait in the queue and reach the journal when it is back.) The
spool closes that gap:

- razard's `EventLog` hands every event journald refused to `Spool`, which
  appends it, as the journal entry it would have been, to
  ``escalation/unjournaled.jsonl`` in the state directory, if the notifier acts on
  it (`classify.from_journal`: razard's routine notices are left in razar.log);
- the notifier reads the file with a `JsonlTail` in the same pass as the journal,
  in time order with the journal's entries (by the time each was sent), commits
  its position with the journal's cursor (each record at least once, as for the
  journal) and empties the file once all of it was read (`JsonlTail.empty_read`);
- at `MAX_BYTES` the spool takes nothing more (said once), where no notifier
  drains it (journalctl failing on every pass, say).

Not ordered: a datagram still waiting in a full queue when a later, spooled event
is read. That one reaches the notifier a pass later, after the spooled one.

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
#: A spool this large takes no more events (each is a few hundred bytes)
MAX_BYTES: Final = 16 << 20


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
            full = os.stat(self.path).st_size >= MAX_BYTES
        except FileNotFoundError:
            full = False
        except OSError as e:
            self._warn(f"{self.path}: {e.strerror or e}")
            return
        if full:
            self._warn(f"{self.path}: full ({MAX_BYTES >> 20} MiB): no notifier is reading it")
            return
        try:
            storage.append_jsonl(self.path, entry)
        except StateError as e:
            self._warn(str(e))

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            say(
                "razard: warning: events journald did not take are not spooled for the "
                f"escalation notifier: {why}"
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

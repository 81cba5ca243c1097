"""Who wrote a journal entry, from the fields journald sets itself.

Any local user can send the journal an entry with ``SYSLOG_IDENTIFIER=razard``
and ``RAZAR_EVENT=state_quarantined`` (``logger --journald``, ``systemd-cat``).
Only the fields whose names begin with an underscore are journald's own: it
takes them from the kernel (the sender's credentials and cgroup), and a sender
cannot set them. So:

- **razard's events** (and razarctl's, a healer's: razar's root processes) are
  entries whose ``_UID`` is root (or razard's own uid where it runs as another
  user, as in development); ``SYSLOG_IDENTIFIER`` and ``RAZAR_*`` only say
  which of them an entry is;
- **a component's output** is an entry whose cgroup is the component's unit:
  ``_SYSTEMD_UNIT`` (the system manager, production), ``_SYSTEMD_USER_UNIT``
  of a user manager run by a trusted uid (``_SYSTEMD_OWNER_UID``), or, where
  journald cannot name the unit (a private manager outside ``user@.service``,
  as the tests run), the last component of ``_SYSTEMD_CGROUP`` when no user's
  own manager (``user@<uid>.service``, where that user may make any unit) is on
  the path. ``SYSLOG_IDENTIFIER=razar-<name>`` is never enough.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from typing import Final

#: journald's own fields these rules read (ask journalctl for them along with the rest)
FIELDS: Final = (
    "_UID",
    "_SYSTEMD_UNIT",
    "_SYSTEMD_USER_UNIT",
    "_SYSTEMD_OWNER_UID",
    "_SYSTEMD_CGROUP",
)

_USER_MANAGER: Final = re.compile(r"^user@(\d+)\.service$")


def trusted_uids() -> frozenset[str]:
    """The uids whose entries are razar's own: root and the uid this process runs as."""
    return frozenset({"0", str(os.geteuid())})


#: `trusted_uids` of this process (its uid does not change)
UIDS: Final = trusted_uids()


def from_razar(entry: Mapping[str, str], uids: Collection[str] | None = None) -> bool:
    """Whether ``entry`` was sent by a trusted uid (journald's ``_UID``)."""
    return entry.get("_UID") in (UIDS if uids is None else uids)


def unit_of(entry: Mapping[str, str], uids: Collection[str] | None = None) -> str | None:
    """The unit whose processes wrote ``entry``, by journald's trusted fields; None if
    it cannot be told (or it is a unit in some user's own manager)."""
    uids = UIDS if uids is None else uids
    unit = entry.get("_SYSTEMD_UNIT")
    user_unit = entry.get("_SYSTEMD_USER_UNIT")
    if user_unit:
        return user_unit if entry.get("_SYSTEMD_OWNER_UID") in uids else None
    if unit:
        return unit
    cgroup = entry.get("_SYSTEMD_CGROUP", "")
    parts = [p for p in cgroup.split("/") if p]
    if not parts:
        return None
    for part in parts:
        m = _USER_MANAGER.match(part)
        if m is not None and m.group(1) not in uids:
            return None
    return parts[-1]


def uid_matches(field: str = "_UID") -> list[str]:
    """journalctl matches for entries of a trusted uid (ORed: the same field)."""
    return [f"{field}={u}" for u in sorted(UIDS)]

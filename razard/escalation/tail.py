"""New records of a JSON-lines file, read incrementally: byte offset and inode kept on disk.

For ``razar_ai_invocations.json``, ``razar_ai_patches.json`` and the notifier's
spool (``escalation/unjournaled.jsonl``, which its reader empties: `empty_read`),
which razard appends to whole lines at a time (`razard.storage.append_jsonl`):

- only complete lines are consumed: a last line without its newline is a
  record still being written (or torn by a crash) and is left for the next
  read; a torn line that a later append terminated does not parse and is skipped;
- a file replaced by another (new inode: rotation), shorter than the offset
  (truncation), or whose bytes before the offset are not the ones last read
  (truncated and written again past the offset) is read again from its start;
- the position is saved with `razard.storage.write_json_atomic` by `commit()`,
  so, as with `JournalSource`, a caller that commits after acting reads each
  record at least once and, without a crash in between, exactly once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

from razard.errors import StateError
from razard.storage import empty_if_unchanged, read_json, write_json_atomic

#: Read at most this much per call, so one huge backlog cannot hold the loop for long.
MAX_READ_BYTES: Final = 8 << 20
#: The bytes just before the offset, kept to recognise a file rewritten in place.
CHECK_BYTES: Final = 32


class JsonlTail:
    """Reads the records appended to ``path`` since the position saved in ``state_file``."""

    def __init__(self, path: Path, state_file: Path) -> None:
        self.path = path
        self.state_file = state_file
        self._inode, self._offset, self._check = _load(state_file)
        self._saved = (self._inode, self._offset, self._check)

    def read_new(self, *, commit: bool = True) -> list[dict[str, Any]]:
        """The JSON objects in complete lines appended since the last read (blocking I/O).

        Raises:
            StateError: the file exists but cannot be read, or the position
                cannot be saved.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise StateError(f"{self.path}: cannot read: {e.strerror or e}") from e
        try:
            st = os.fstat(fd)
            if (
                st.st_ino != self._inode
                or st.st_size < self._offset
                or _check(fd, self._offset) != self._check
            ):
                self._inode, self._offset, self._check = st.st_ino, 0, ""
            size = min(st.st_size - self._offset, MAX_READ_BYTES)
            data = os.pread(fd, size, self._offset) if size > 0 else b""
            end = data.rfind(b"\n")
            if end >= 0:
                self._offset += end + 1
                self._check = _check(fd, self._offset)
        except OSError as e:
            raise StateError(f"{self.path}: cannot read: {e.strerror or e}") from e
        finally:
            os.close(fd)
        records: list[dict[str, Any]] = []
        for line in data[: end + 1].split(b"\n") if end >= 0 else ():
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                records.append(value)
        if commit:
            self.commit()
        return records

    def empty_read(self) -> bool:
        """Empty the file when every record in it was read and the position committed, and
        go back to its start; True if it was emptied. For a spool its reader drains
        (`razard.escalation.spool`), not for a log kept for people. A crash between the
        truncation and the new position reads the (empty) file again from its start.

        Raises:
            StateError: the file cannot be emptied or the position saved.
        """
        at = (self._inode, self._offset, self._check)
        if self._inode is None or self._offset == 0 or at != self._saved:
            return False
        if not empty_if_unchanged(self.path, self._inode, self._offset):
            return False
        self._offset, self._check = 0, ""
        self.commit()
        return True

    def commit(self) -> None:
        """Save the position reached (atomically; nothing to do when unchanged)."""
        now = (self._inode, self._offset, self._check)
        if now == self._saved:
            return
        write_json_atomic(
            self.state_file, {"inode": self._inode, "offset": self._offset, "check": self._check}
        )
        self._saved = now


def _check(fd: int, offset: int) -> str:
    """Hex of the bytes just before ``offset`` ("" at the start)."""
    start = max(0, offset - CHECK_BYTES)
    return os.pread(fd, offset - start, start).hex() if offset else ""


def _load(path: Path) -> tuple[int | None, int, str]:
    try:
        doc = read_json(path)
    except StateError:
        return None, 0, ""  # a damaged position file: read the log again rather than stop
    if not isinstance(doc, dict):
        return None, 0, ""
    inode, offset, check = doc.get("inode"), doc.get("offset"), doc.get("check", "")
    if not isinstance(inode, int) or not isinstance(offset, int) or offset < 0:
        return None, 0, ""
    return inode, offset, check if isinstance(check, str) else ""

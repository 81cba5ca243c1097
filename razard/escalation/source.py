"""New journal entries, read incrementally by cursor: each entry once, across restarts.

`JournalSource` runs ``journalctl -o json --after-cursor=C`` (with the caller's
matches and extra arguments such as ``--directory=``) as one subprocess per
read and stream-parses its stdout line by line: no subprocess per entry, no
re-scan of what was read before.

Cursor semantics (exactly once, as seen by a caller that commits):

- The cursor lives in ``cursor_file`` as ``{"cursor": "s=...;i=..."}``, replaced
  atomically (`razard.storage.write_json_atomic`), so a crash leaves the old
  cursor or the new one, never a torn file. A plain cursor string (what
  ``journalctl --cursor-file`` writes) is accepted too.
- ``read_new()`` returns the entries after the saved cursor and, by default,
  saves the last returned entry's cursor before it returns: a second
  `JournalSource` on the same file (a new process) starts after it. An entry is
  never returned twice; one whose caller crashed before acting on it is lost.
- ``read_new(commit=False)`` leaves the saved cursor alone; the caller calls
  `commit()` once it has durably acted on the batch. A crash before that makes
  the next reader return the batch again (at least once), which the escalation
  notifier makes harmless by deduplicating on its persisted alert state.
- With no cursor saved yet, reading starts at ``since`` (epoch seconds) when
  given, otherwise at the start of the journal.

The cursor is ours, not journalctl's ``--cursor-file``: journalctl writes that
file when it exits, whether or not the caller processed the entries, and not
at all when the read stops early at ``max_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from razard.errors import RazarError, StateError
from razard.storage import read_json, write_json_atomic

JOURNALCTL: Final = "journalctl"
CHUNK_BYTES: Final = 1 << 18  # stdout is read in chunks of this size, split into lines here
_STDERR_SHOWN: Final = 500


class SourceError(RazarError):
    """journalctl could not be run or failed; the message carries its stderr."""


class JournalSource:
    """Reads journal entries once each, in order, resuming from a cursor kept in a file."""

    def __init__(
        self,
        cursor_file: Path,
        matches: Sequence[str] = (),
        journal_args: Sequence[str] = (),
        *,
        since: float | None = None,
        journalctl: str = JOURNALCTL,
    ) -> None:
        """``matches`` are journalctl matches (``FIELD=value``, ``+`` for OR);
        ``journal_args`` extra options (``--directory=DIR``, ``--file=FILE``,
        ``--output-fields=...``) placed before them."""
        self.cursor_file = cursor_file
        self.matches = tuple(matches)
        self.journal_args = tuple(journal_args)
        self.since = since
        self.journalctl = journalctl
        self._saved: str | None = _load_cursor(cursor_file)
        self._pending: str | None = None

    @property
    def cursor(self) -> str | None:
        """The last committed cursor (None: nothing read yet)."""
        return self._saved

    def argv(self) -> list[str]:
        """The journalctl command line the next read runs."""
        argv = [self.journalctl, "--no-pager", "-q", "-o", "json", *self.journal_args]
        if self._saved is not None:
            argv.append(f"--after-cursor={self._saved}")
        elif self.since is not None:
            argv.append(f"--since=@{self.since:.6f}")
        argv.extend(self.matches)
        return argv

    async def read_new(
        self, max_entries: int | None = None, *, commit: bool = True
    ) -> list[dict[str, Any]]:
        """The parsed JSON entries written since the last read, oldest first.

        At most ``max_entries`` (None: all there are now). With ``commit`` the
        cursor of the last entry is saved before returning; without, `commit()`
        saves it later.

        Raises:
            SourceError: journalctl is missing or exited with an error.
            StateError: the cursor file cannot be written.
        """
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise SourceError(f"cannot run {self.journalctl}: {e.strerror or e}") from e
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        entries: list[dict[str, Any]] = []
        try:
            stopped_early = await _parse_stream(proc.stdout, entries, max_entries)
        except BaseException:  # cancelled (razard stopping): leave no journalctl behind
            _kill(proc)
            errors.cancel()
            raise
        if stopped_early:
            _kill(proc)
        rc = await proc.wait()
        err = await errors
        if rc != 0 and not stopped_early:
            text = err.decode(errors="replace").strip()[:_STDERR_SHOWN]
            raise SourceError(f"{' '.join(self.argv())}: exited {rc}: {text}")
        if entries:
            cursor = entries[-1].get("__CURSOR")
            if isinstance(cursor, str):
                self._pending = cursor
        if commit:
            self.commit()
        return entries

    def commit(self) -> None:
        """Save the cursor of the last entry read, atomically (nothing to do if none).

        Raises:
            StateError: the cursor file cannot be written.
        """
        if self._pending is None or self._pending == self._saved:
            return
        write_json_atomic(self.cursor_file, {"cursor": self._pending})
        self._saved = self._pending


async def _parse_stream(
    stream: asyncio.StreamReader, out: list[dict[str, Any]], max_entries: int | None
) -> bool:
    """Append each JSON line of ``stream`` to ``out``; True when stopped at ``max_entries``."""
    loads = json.loads
    append = out.append
    rest = b""
    while True:
        chunk = await stream.read(CHUNK_BYTES)
        if not chunk:
            break
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line[:1] != b"{":  # journalctl's own notes, blank lines
                continue
            try:
                entry = loads(line)
            except ValueError:
                continue
            append(entry)
            if max_entries is not None and len(out) >= max_entries:
                return True
    if rest[:1] == b"{":
        with contextlib.suppress(ValueError):
            append(loads(rest))
    return False


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _load_cursor(path: Path) -> str | None:
    try:
        raw = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise StateError(f"{path}: cannot read the journal cursor: {e}") from e
    if not raw:
        return None
    if not raw.startswith("{"):
        return raw  # journalctl --cursor-file's format
    doc = read_json(path)
    cursor = doc.get("cursor") if isinstance(doc, dict) else None
    if not isinstance(cursor, str) or not cursor:
        raise StateError(f'{path}: expected {{"cursor": "..."}}, got {raw[:80]!r}')
    return cursor

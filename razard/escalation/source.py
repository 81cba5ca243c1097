"""razard's one journal reader, and new journal entries read by cursor, each once.

`read_journal` runs a `journal_argv` command line (``journalctl -o export``)
without blocking the event loop and stream-parses its stdout (`ExportParser`).
Every reader of the journal uses it: the escalation notifier (`JournalSource`,
below), the repair agents' view of a unit's output (`razard.repair.handover`)
and ``razarctl incident`` (`razard.triage`).

`JournalSource` runs ``journalctl -o export --after-cursor=C`` (with the caller's
matches, fields and extra arguments such as ``--directory=``) as one subprocess
per read and stream-parses its stdout: no subprocess per entry, no re-scan of
what was read before.

Why the export format and not ``-o json``: journalctl produces it several times
faster (its JSON encoder is the slow part of ``journalctl -o json``), and it is
no harder to parse: ``FIELD=value`` lines, an empty line after each entry, and
a value that is not printable text on one line (a traceback's newlines, bytes
that are not UTF-8) as ``FIELD``, a newline, its length as 64-bit little-endian
and the raw bytes (systemd's JOURNAL_EXPORT_FORMATS). Entries come back as
``{field: text}``: binary values are decoded as UTF-8 with replacement, and of
a field set more than once the first value is kept.

Cursor semantics (exactly once, as seen by a caller that commits):

- The cursor lives in ``cursor_file`` as ``{"cursor": "s=...;i=..."}``, replaced
  atomically (`razard.storage.write_json_atomic`), so a crash leaves the old
  cursor or the new one, never a torn file. A plain cursor string (what
  ``journalctl --cursor-file`` writes) is accepted too.
- ``read_new()`` returns the entries after the saved cursor and, by default,
  saves the last read entry's cursor before it returns: a second
  `JournalSource` on the same file (a new process) starts after it. An entry is
  never returned twice; one whose caller crashed before acting on it is lost.
- ``read_new(commit=False)`` leaves the saved cursor alone; the caller calls
  `commit()` once it has durably acted on the batch. A crash before that makes
  the next reader return the batch again (at least once), which the escalation
  notifier makes harmless by deduplicating on its persisted alert state.
- ``read_new(keep=...)`` returns only the entries ``keep`` accepts, but reads
  (and moves the cursor past) all of them: a filter in Python instead of many
  journalctl matches, whose cost grows with their number (150 OR-ed matches
  make journalctl about ten times slower than none).
- With no cursor saved yet, reading starts at ``since`` (epoch seconds) when
  given, otherwise at the start of the journal.

The cursor is ours, not journalctl's ``--cursor-file``: journalctl writes that
file when it exits, whether or not the caller processed the entries, and not
at all when the read stops early at ``max_entries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from razard.errors import RazarError, StateError
from razard.storage import read_json, write_json_atomic

JOURNALCTL: Final = "journalctl"
CHUNK_BYTES: Final = 1 << 18  # stdout is read in chunks of up to this size
_STDERR_SHOWN: Final = 500
#: a binary field's name line (``\nFIELD\n``, no ``=``) inside a run of text lines
_BINARY_NAME: Final = re.compile(rb"\n[A-Za-z0-9_]+\n")
_LENGTH_BYTES: Final = 8

Entry = dict[str, str]


class SourceError(RazarError):
    """journalctl could not be run or failed; the message carries its stderr."""


def journal_time(unix: float) -> str:
    """``unix`` as journalctl's ``--since``/``--until`` take it, zone-free: ``@<unix time>``."""
    return "@" + f"{unix:.6f}".rstrip("0").rstrip(".")


def journal_argv(
    options: Sequence[str] = (), matches: Sequence[str] = (), *, journalctl: str = JOURNALCTL
) -> list[str]:
    """The journalctl command line `read_journal` runs: export format, no pager, no
    notes on stderr; ``options`` (``--since=@T``, ``-n N``, ``--output-fields=``,
    ``--directory=``), then ``matches`` (``FIELD=value``, ``+`` for OR)."""
    return [journalctl, "--no-pager", "-q", "-o", "export", *options, *matches]


async def read_journal(
    argv: Sequence[str],
    max_entries: int | None = None,
    keep: Callable[[Entry], bool] | None = None,
) -> ExportParser:
    """Run ``argv`` (a `journal_argv` command line) and parse its entries as they come.

    The parser it returns holds the ``entries`` (those ``keep`` accepts, all without
    it), how many were read (``count``) and the last one's ``cursor``. At most
    ``max_entries`` are read: journalctl is stopped there. Cancelled (a timeout,
    razard stopping), it leaves no journalctl behind.

    Raises:
        SourceError: journalctl is missing or exited with an error.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise SourceError(f"cannot run {argv[0]}: {e.strerror or e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    parser = ExportParser(max_entries, keep)
    try:
        while not parser.done:
            chunk = await proc.stdout.read(CHUNK_BYTES)
            if not chunk:
                parser.close()
                break
            parser.feed(chunk)
    except BaseException:  # cancelled: leave no journalctl behind
        _kill(proc)
        errors.cancel()
        raise
    stopped_early = parser.done
    if stopped_early:
        _kill(proc)
    rc = await proc.wait()
    err = await errors
    if rc != 0 and not stopped_early:
        text = err.decode(errors="replace").strip()[:_STDERR_SHOWN]
        raise SourceError(f"{' '.join(argv)}: exited {rc}: {text}")
    return parser


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
        fields: Sequence[str] = (),
    ) -> None:
        """``matches`` are journalctl matches (``FIELD=value``, ``+`` for OR);
        ``journal_args`` extra options (``--directory=DIR``, ``--file=FILE``) placed
        before them; ``fields``: only these fields are read (``--output-fields``; the
        cursor and timestamps always come), all when empty."""
        self.cursor_file = cursor_file
        self.matches = tuple(matches)
        self.journal_args = tuple(journal_args)
        self.fields = tuple(fields)
        self.since = since
        self.journalctl = journalctl
        self.last_read = 0  # entries the last read_new read, kept or not
        self._saved: str | None = _load_cursor(cursor_file)
        self._pending: str | None = None

    @property
    def cursor(self) -> str | None:
        """The last committed cursor (None: nothing read yet)."""
        return self._saved

    def argv(self) -> list[str]:
        """The journalctl command line the next read runs."""
        options = list(self.journal_args)
        if self.fields:
            options.append("--output-fields=" + ",".join(self.fields))
        if self._saved is not None:
            options.append(f"--after-cursor={self._saved}")
        elif self.since is not None:
            options.append(f"--since={journal_time(self.since)}")
        return journal_argv(options, self.matches, journalctl=self.journalctl)

    async def read_new(
        self,
        max_entries: int | None = None,
        *,
        commit: bool = True,
        keep: Callable[[Entry], bool] | None = None,
    ) -> list[Entry]:
        """The entries written since the last read, oldest first.

        At most ``max_entries`` are read (None: all there are now; `last_read`
        says how many were); of those, the ones ``keep`` accepts (all without
        it) are returned. With ``commit`` the cursor of the last entry read is
        saved before returning; without, `commit()` saves it later.

        Raises:
            SourceError: journalctl is missing or exited with an error.
            StateError: the cursor file cannot be written.
        """
        parser = await read_journal(self.argv(), max_entries, keep)
        self.last_read = parser.count
        if parser.cursor is not None:
            self._pending = parser.cursor
        if commit:
            self.commit()
        return parser.entries

    def commit(self) -> None:
        """Save the cursor of the last entry read, atomically (nothing to do if none).

        Raises:
            StateError: the cursor file cannot be written.
        """
        if self._pending is None or self._pending == self._saved:
            return
        write_json_atomic(self.cursor_file, {"cursor": self._pending})
        self._saved = self._pending


class ExportParser:
    """journalctl's export format, fed in chunks of any size, into ``{field: text}`` entries.

    Runs of text lines are decoded and split in one go (one regex search per run
    finds where the next binary field's name line is, if any); a binary field is
    cut out by its length. A last entry without its closing empty line (the
    stream ended early) is not returned: its cursor may not be the one after it.
    """

    def __init__(
        self, max_entries: int | None = None, keep: Callable[[Entry], bool] | None = None
    ) -> None:
        self.max_entries = max_entries
        self.keep = keep
        self.entries: list[Entry] = []
        self.count = 0  # entries read, kept or not
        self.cursor: str | None = None  # of the last entry read
        self.done = False  # max_entries reached: the rest is not wanted
        self._buf = b"\n"
        self._entry: Entry = {}

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        # the buffer keeps the newline before its first unparsed line, so a binary field's
        # name line is always found as "\nNAME\n", the first one included
        buf = self._buf + data
        pos = 1
        while not self.done:
            # the text lines from pos up to the next binary field's name line (or the last
            # complete line), then that binary field
            m = _BINARY_NAME.search(buf, pos - 1)
            stop = m.start() + 1 if m is not None else buf.rfind(b"\n") + 1
            if stop > pos:
                self._text(buf[pos:stop])
                pos = stop
            if m is None or self.done:
                break
            nxt = self._binary(buf, m.start() + 1, m.end() - 1)
            if nxt < 0:
                break
            pos = nxt
        self._buf = buf[pos - 1 :]

    def close(self) -> None:
        """The stream ended: what is left is an unfinished entry, dropped."""
        self._buf = b"\n"
        self._entry = {}

    def _text(self, run: bytes) -> None:
        entry = self._entry
        # the run ends with a line's newline: without it, split gives each line once and
        # an empty string for each empty line (an entry's end)
        for line in run[:-1].decode("utf-8", "replace").split("\n"):
            if line:
                name, _, value = line.partition("=")
                if name not in entry:
                    entry[name] = value
            elif entry:
                self._finish(entry)
                entry = self._entry = {}
                if self.done:
                    return

    def _binary(self, buf: bytes, name_at: int, name_end: int) -> int:
        """Take the binary field whose name is ``buf[name_at:name_end]`` (its newline at
        ``name_end``); the position after it, or -1 when it is not all there yet."""
        data_at = name_end + 1 + _LENGTH_BYTES
        if len(buf) < data_at:
            return -1
        size = int.from_bytes(buf[name_end + 1 : data_at], "little")
        if len(buf) < data_at + size + 1:
            return -1
        name = buf[name_at:name_end].decode("ascii", "replace")
        if name not in self._entry:
            self._entry[name] = buf[data_at : data_at + size].decode("utf-8", "replace")
        return data_at + size + 1  # its closing newline

    def _finish(self, entry: Entry) -> None:
        self.count += 1
        cursor = entry.get("__CURSOR")
        if cursor:
            self.cursor = cursor
        if self.keep is None or self.keep(entry):
            self.entries.append(entry)
        if self.max_entries is not None and self.count >= self.max_entries:
            self.done = True


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

"""Durable file primitives for razard's state directory.

Two disciplines, one per kind of file:

- whole documents (``razar_state.json``, ``quarantine/<name>.json``) are replaced
  atomically: a reader sees the old document or the new one, never half of each,
  even if razard or the machine dies mid-write;
- logs (``razar.log``, ``patch_history.jsonl``, ``quarantine_log.md``) are
  appended under an exclusive ``flock``, one whole record per write, so several
  writers (razard, ``razarctl``, a healer) never interleave inside a line.
  Readers take no lock and skip a torn line instead.

Every ``OSError`` becomes a :class:`~razard.errors.StateError` naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from razard.errors import StateError

FILE_MODE = 0o644
DIR_MODE = 0o755


def write_json_atomic(path: Path, obj: object, *, compact: bool = False) -> None:
    """Replace ``path`` with ``obj`` as JSON so that no reader or crash sees a partial file.

    Parent directories are created. The document is written to a temporary file
    beside ``path``, fsynced, renamed over ``path``, and the directory fsynced so
    the rename itself survives a power cut. ``TypeError``/``ValueError`` from an
    unserialisable ``obj`` propagate before anything on disk is touched.

    Raises:
        StateError: the file or its directory could not be written.
    """
    # Serialise first: a programming error must not leave a temp file behind.
    # backslashreplace: a lone surrogate from outside (a model's reply) must not fail a write
    # compact: one line, written by the C encoder (indent forces the pure-Python one, ~2x
    # slower): for the state file, rewritten on every change of hundreds of components
    text = (
        json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        if compact
        else json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
    )
    data = (text + "\n").encode("utf-8", "backslashreplace")
    directory = path.parent
    tmp_name: str | None = None
    try:
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        try:
            # mkstemp creates 0600; state files are meant to be readable by razarctl users.
            os.fchmod(fd, FILE_MODE)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(directory)
    except OSError as exc:
        raise StateError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def read_json(path: Path) -> Any | None:
    """Return the JSON document at ``path``, or None if there is no such file.

    Raises:
        StateError: the file exists but cannot be read or is not valid JSON.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"{path}: not valid JSON: {exc}") from exc


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` to ``path`` as one JSON line, whole, under an exclusive lock.

    Parent directories are created. ``TypeError``/``ValueError`` from an
    unserialisable record propagate before the file is opened.

    Raises:
        StateError: the file cannot be opened, locked or written.
    """
    # json.dumps escapes control characters inside strings, so the record is one line.
    line = (json.dumps(dict(record), ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    _append_locked(path, line, heal_torn_line=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Return the JSON objects in ``path``, one per line; [] if there is no such file.

    A line that does not parse is skipped: it is a record torn by a crash
    mid-append (normally the last line, but an append after the crash moves it
    inside the file). Lines holding valid JSON that is not an object are skipped too.

    Raises:
        StateError: the file exists but cannot be read.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    records: list[dict[str, Any]] = []
    for chunk in raw.split(b"\n"):
        if not chunk.strip():
            continue
        try:
            value = json.loads(chunk)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def append_text(path: Path, text: str) -> None:
    """Append ``text`` to ``path`` whole, under the same exclusive lock as :func:`append_jsonl`.

    Meant for markdown logs such as ``quarantine_log.md``; the caller supplies
    any trailing newline. Parent directories are created.

    Raises:
        StateError: the file cannot be opened, locked or written.
    """
    _append_locked(path, text.encode("utf-8", "backslashreplace"), heal_torn_line=False)


def _append_locked(path: Path, data: bytes, *, heal_torn_line: bool) -> None:
    try:
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # O_RDWR, not O_WRONLY: healing a torn line needs to read the last byte.
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StateError(f"{path}: cannot open for append: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if heal_torn_line:
                data = _terminate_torn_line(fd) + data
            start = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
            except OSError:
                # a full disk can take half a record: cut it off again, so the file
                # never holds a torn line that this append made
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError as exc:
        raise StateError(f"{path}: cannot append: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _terminate_torn_line(fd: int) -> bytes:
    # A writer that died mid-line left no newline; without one, this record would
    # be glued onto the fragment and lost with it when a reader skips the line.
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return b""
    return b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

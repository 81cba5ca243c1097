"""Durable file primitives for razard's state directory.

Two disciplines, one per kind of file:

- whole documents (``razar_state.json``, ``quarantine/<name>.json``) are replaced
  atomically: a reader sees the old document or the new one, never half of each,
  even if razard or the machine dies mid-write;
- logs (``razar.log``, ``patch_history.jsonl``, ``quarantine_log.md``) are
  appended whole by one ``O_APPEND`` write, coordinated by an ``flock`` on a
  root-only ``.<name>.lock`` beside the log (never on the log itself, which group
  ``razar`` may open: a reader holding a lock must not stall razard). The lock is
  waited for a bounded time only; past it the record is appended anyway.
  Readers take no lock and skip a torn line instead.

The state directory is ``root:razar`` mode 0750, and what is made inside takes
its directory's group (set explicitly: razard.service's ``RestrictSUIDSGID=``
forbids a setgid directory): operators read it, nobody else can even look in.
Files are 0640, lock files 0600 and owned by root; a lock file someone else
could open (made before this rule, or not by us) is replaced, since whoever
holds a descriptor to it could hold its lock forever.

Every ``OSError`` becomes a :class:`~razard.errors.StateError` naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from razard.errors import StateError

FILE_MODE = 0o640
PRIVATE_MODE = 0o600  # lock files, records that may hold a secret
DIR_MODE = 0o750
STATE_GROUP = "razar"  # operators: may read the state directory, nothing else
LOCK_SUFFIX = ".lock"
#: how long an append waits for its log's lock before writing without it: a whole
#: record is one O_APPEND write, which the kernel never interleaves with another
APPEND_LOCK_WAIT_S = 2.0
#: the temp files `write_atomic` leaves when killed mid-write
TEMP_RE = re.compile(r"^\..+\.razar-[0-9a-f]{8}\.tmp$")


def state_gid() -> int:
    """The gid of group ``razar``, or root's (0) where the node has no such group."""
    try:
        return grp.getgrnam(STATE_GROUP).gr_gid
    except KeyError:
        return 0


def prepare_state_dir(path: Path) -> None:
    """Create ``path`` if needed and make it, and everything in it, operators-only.

    The directory becomes mode 0750 owned by root and group ``razar`` (root's group
    where there is none; run as another user, razard keeps its own uid and gid).
    Inside, directories get 0750, and everything the group; files lose every
    permission for others and
    group write, lock files become 0600 (one not owned by us is removed: it is
    made again, privately, when next taken). Symbolic links are left alone,
    never followed.

    Raises:
        StateError: the directory cannot be created or its mode set.
    """
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise StateError(f"{path}: cannot create state directory: {exc.strerror or exc}") from exc
    try:
        uid = os.geteuid()
        gid = state_gid() if uid == 0 else os.getegid()
        os.fchown(fd, uid, gid)
        os.fchmod(fd, DIR_MODE)
        _tighten_tree(fd, uid, gid)
    except OSError as exc:
        raise StateError(f"{path}: cannot restrict state directory: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _tighten_tree(dir_fd: int, uid: int, gid: int) -> None:
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            try:
                os.fchown(sub, -1, gid)
                os.fchmod(sub, DIR_MODE)
                _tighten_tree(sub, uid, gid)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            if name.endswith(LOCK_SUFFIX):
                if st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
                    os.unlink(name, dir_fd=dir_fd)
                continue
            mode = stat.S_IMODE(st.st_mode) & ~0o6027  # never setuid/setgid either
            os.chown(name, -1, gid, dir_fd=dir_fd, follow_symlinks=False)
            os.chmod(name, mode, dir_fd=dir_fd)


def make_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents, mode 0750, each with its parent's group
    (so a new directory in the state directory is group razar's too)."""
    missing: list[Path] = []
    d = directory
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir(mode=DIR_MODE)
        fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _inherit_group(fd, new.parent)
        finally:
            os.close(fd)


def _inherit_group(fd: int, directory: Path) -> None:
    """Give the new file ``fd`` the group of the directory it is in (as a setgid
    directory would), when razard may: root, or a group it is in."""
    try:
        gid = os.stat(directory).st_gid
        if os.fstat(fd).st_gid != gid:
            os.fchown(fd, -1, gid)
    except PermissionError:
        pass  # not ours to give: the file stays in our own group, no wider


def open_lock(path: str | os.PathLike[str]) -> int:
    """Open (creating) the lock file ``path``, mode 0600 and ours alone; its descriptor.

    ``flock`` works on any descriptor, read-only ones included: a lock file another
    user can open is a lock another user can hold forever. One that is not a plain
    file of ours with mode 0600 and one link is replaced by a fresh one.

    Raises:
        OSError: the file cannot be opened or made.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    for _ in range(3):
        fd = os.open(path, flags, PRIVATE_MODE)
        st = os.fstat(fd)
        if (
            stat.S_ISREG(st.st_mode)
            and st.st_uid == os.geteuid()
            and not stat.S_IMODE(st.st_mode) & 0o077
            and st.st_nlink == 1
        ):
            return fd
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            now = os.stat(path, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(path)
    raise OSError(f"{path}: lock file keeps being replaced by someone else")


def take_lock(path: str | os.PathLike[str], *, wait: float | None = None) -> int:
    """The one lock helper: `open_lock` ``path`` (0600, ours alone) and ``flock`` it
    exclusively; its descriptor, which releases the lock when closed.

    ``wait``: None waits as long as it takes, 0 not at all, otherwise about that
    many seconds (polling, so a signal handler can still run meanwhile).

    Raises:
        BlockingIOError: someone else still holds the lock after ``wait``.
        OSError: the lock file cannot be opened, made or locked.
    """
    fd = open_lock(path)
    try:
        if wait is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            return fd
        deadline = time.monotonic() + wait
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def locked(path: Path, *, wait: float | None = None) -> Iterator[None]:
    """Hold `take_lock` ``path`` for the ``with`` block; raises as `take_lock` does."""
    fd = take_lock(path, wait=wait)
    try:
        yield
    finally:
        os.close(fd)  # releases the flock


def is_locked(path: Path) -> bool:
    """Whether someone holds the ``flock`` on the existing lock file ``path`` (False if
    there is none). Only looks: never makes, replaces or keeps the file.

    Raises:
        OSError: the file exists but cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_json_atomic(
    path: Path, obj: object, *, compact: bool = False, mode: int = FILE_MODE, sync_dir: bool = True
) -> None:
    """Replace ``path`` with ``obj`` as JSON so that no reader or crash sees a partial file.

    Parent directories are created (0750, the parent's group), and the file takes
    its directory's group; the write itself is `write_atomic`'s (``sync_dir`` too). ``TypeError``/
    ``ValueError`` from an unserialisable ``obj`` propagate before anything on disk
    is touched.

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
    try:
        make_dirs(path.parent)
        write_atomic(path, data, mode=mode, inherit_group=True, sync_dir=sync_dir)
    except OSError as exc:
        raise StateError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def temp_name(name: str) -> str:
    """The name of `write_atomic`'s temp file for ``name`` (`TEMP_RE` matches it)."""
    return f".{name}.razar-{secrets.token_hex(4)}.tmp"


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int = FILE_MODE,
    dir_fd: int | None = None,
    owner: tuple[int, int] | None = None,
    inherit_group: bool = False,
    sync_dir: bool = True,
) -> None:
    """Replace ``path`` with ``data`` so that no reader or crash sees a partial file.

    The one atomic write: a temp file (`temp_name`) is made beside ``path`` with
    ``O_EXCL | O_NOFOLLOW``, written, given its owner and ``mode``, fsynced, renamed
    over ``path`` (a symlink there is replaced, never followed), and the directory
    fsynced so the rename itself survives a power cut. Everything is done relative
    to one descriptor of the directory, so the directory cannot be swapped midway.

    ``dir_fd``: ``path`` is a bare name in that (pinned) directory, as the repair
    engine's artifact writes need; otherwise ``path``'s directory is opened here.
    The directory must exist. ``owner`` (uid, gid) is applied when it differs from
    our own and we may (not root: the file stays ours); ``inherit_group`` gives the
    file its directory's group instead. Nothing is left behind on failure.

    ``sync_dir=False`` leaves the directory's fsync to the caller (`sync_directory`), who
    has something to do first: the file is whole and visible to every reader and to a
    restarted process when this returns; only a power cut before that fsync may bring
    back the previous file (never a partial one: its data was fsynced before the rename).

    Raises:
        OSError: the file or its directory could not be written.
    """
    if dir_fd is None:
        p = Path(path)
        dfd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        name = p.name
    else:
        dfd, name = dir_fd, os.fspath(path)
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"{name!r}: write_atomic with dir_fd takes a bare file name")
    try:
        tmp = temp_name(name)
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            PRIVATE_MODE,
            dir_fd=dfd,
        )
        try:
            try:
                _write_all(fd, data)
                if owner is not None and owner != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, *owner)
                elif inherit_group:
                    gid = os.fstat(dfd).st_gid
                    if os.fstat(fd).st_gid != gid:
                        with contextlib.suppress(PermissionError):
                            os.fchown(fd, -1, gid)
                os.fchmod(fd, mode)  # after fchown, which clears setuid/setgid bits
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dfd)
            raise
        if sync_dir:
            os.fsync(dfd)
    finally:
        if dir_fd is None:
            os.close(dfd)


def sync_directory(directory: Path) -> None:
    """fsync ``directory``: the renames made in it survive a power cut (see `write_atomic`).

    Raises:
        OSError: it could not be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def append_jsonl(path: Path, record: Mapping[str, Any], *, mode: int = FILE_MODE) -> None:
    """Append ``record`` to ``path`` as one JSON line, whole, under an exclusive lock.

    Parent directories are created; the file has ``mode`` (`PRIVATE_MODE` for records
    that may hold what a model wrote), set again if it was made with another.
    ``TypeError``/``ValueError`` from an unserialisable record propagate before the
    file is opened.

    Raises:
        StateError: the file cannot be opened, locked or written.
    """
    # json.dumps escapes control characters inside strings, so the record is one line.
    line = (json.dumps(dict(record), ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
    _append_locked(path, line, heal_torn_line=True, mode=mode)


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


def _append_locked(path: Path, data: bytes, *, heal_torn_line: bool, mode: int = FILE_MODE) -> None:
    try:
        make_dirs(path.parent)
        # O_RDWR, not O_WRONLY: healing a torn line needs to read the last byte.
        fd = os.open(
            path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, mode
        )
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
        _inherit_group(fd, path.parent)
    except OSError as exc:
        raise StateError(f"{path}: cannot open for append: {exc.strerror or exc}") from exc
    lock_fd: int | None = None
    try:
        lock_fd = _take_append_lock(path)
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
            if lock_fd is not None:
                os.close(lock_fd)  # releases the flock
    except OSError as exc:
        raise StateError(f"{path}: cannot append: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def empty_if_unchanged(path: Path, inode: int, size: int) -> bool:
    """Empty ``path`` if it is still the file ``inode``, ``size`` bytes long, under the lock
    `append_jsonl` takes, so a record appended meanwhile is never cut; an append waiting on
    that lock then writes at the start (``O_APPEND``). False, and nothing changed, when
    the file is gone, another file or another size, or the lock stays busy.

    Raises:
        StateError: the file cannot be opened or truncated.
    """
    lock_fd = _take_append_lock(path)
    if lock_fd is None:
        return False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        os.close(lock_fd)
        return False
    except OSError as exc:
        os.close(lock_fd)
        raise StateError(f"{path}: cannot open to empty it: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if st.st_ino != inode or st.st_size != size:
            return False
        os.ftruncate(fd, 0)
        return True
    except OSError as exc:
        raise StateError(f"{path}: cannot empty: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
        os.close(lock_fd)


def _take_append_lock(path: Path) -> int | None:
    """The descriptor of ``.<name>.lock`` beside ``path``, flocked; None if it stays busy
    (or cannot be made) for `APPEND_LOCK_WAIT_S`: the append goes ahead without it."""
    # a str, not path.with_name(): a Path interns its name, and a name made afresh for each
    # append (each of razard's events) took a new slot in the interpreter's table of interned
    # strings every time, until the table doubled
    lock = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{LOCK_SUFFIX}")
    try:
        return take_lock(lock, wait=APPEND_LOCK_WAIT_S)
    except OSError:
        return None


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

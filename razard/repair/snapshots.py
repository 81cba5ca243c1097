"""Artifact files on disk: reached without following symlinks, snapshotted by content.

razard runs as root and writes into directories a component's own user may
be able to change, so a path checked once could be swapped for a symlink
before it is written. Every access here therefore walks from the artifact
root one directory file descriptor at a time with ``O_NOFOLLOW``: a symlink
anywhere on the way is an `UnsafePath`, never followed.

Snapshots are content-addressed: each file's bytes are stored once under
``snapshots/blobs/<sha256>``; a manifest ``snapshots/<component>/<id>.json``
maps each relative path to its blob, or to null for a file that was absent
(restoring removes it again).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import os
import posixpath
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from razard import storage
from razard.layout import SNAPSHOT_BLOBS_DIR, SNAPSHOTS_DIR
from razard.repair.types import RepairError
from razard.storage import make_dirs, read_json, write_json_atomic

NEW_FILE_MODE: Final = 0o644
NEW_DIR_MODE: Final = 0o755
# Blobs hold artifact bytes, which may include secrets (tokens in a config file).
BLOB_MODE: Final = 0o600
_CHUNK: Final = 1024 * 1024
_TMP_RE: Final = storage.TEMP_RE
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(RepairError):
    """An artifact path crosses a symlink, is not a regular file, or is too big."""


@dataclass(frozen=True)
class FileState:
    """A regular artifact file as read: its bytes, permission bits and owner."""

    data: bytes
    mode: int
    uid: int
    gid: int


def describe_mode(mode: int) -> str:
    """A word for a non-regular file type, for refusal messages."""
    kinds = (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((word for test, word in kinds if test(mode)), "not a regular file")


# --------------------------------------------------------------------------- safe access


@contextlib.contextmanager
def open_root(root: str) -> Iterator[int]:
    """A directory fd on the artifact root (its own symlinks resolved once, by configuration).

    The root must pass `unsafe_root`: razard writes and deletes there as root, so no
    one else may be able to swap it, or any directory above it, for another.
    """
    reason = unsafe_root(root)
    if reason is not None:
        raise UnsafePath(f"artifact_root {root}: {reason}")
    real = os.path.realpath(root)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePath(f"artifact_root {root}: {exc.strerror or exc}") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def root_identity(root_fd: int) -> list[int]:
    """``[st_dev, st_ino]`` of the open artifact root, as manifests record it."""
    st = os.fstat(root_fd)
    return [st.st_dev, st.st_ino]


def unsafe_root(root: str) -> str | None:
    """Why ``root`` is not a safe artifact root, or None (like OpenSSH's StrictModes).

    Every directory above the resolved root, and every directory holding a symlink
    on the configured path, must be owned by root (or by razard's own uid) and not
    writable by group or others, except a sticky one (``/tmp``) whose entry on the
    path is itself owned by root: else its owner (a component's user) could put
    another directory, or a symlink, in the root's place after razard looked. The
    root itself may belong to anyone; what is inside it is walked without symlinks.
    """
    if not os.path.isabs(root):
        return "is not an absolute path"
    trusted = {0, os.geteuid()}

    def check(directory: str, child: str) -> str | None:
        try:
            st = os.stat(directory, follow_symlinks=False)
        except OSError as exc:
            return f"{directory}: {exc.strerror or exc}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{directory} is not a directory"
        if st.st_uid not in trusted:
            return f"{directory} is owned by uid {st.st_uid}, not root"
        if stat.S_IMODE(st.st_mode) & 0o022:
            if not st.st_mode & stat.S_ISVTX:
                return f"{directory} is writable by group or others (mode {st.st_mode & 0o7777:o})"
            try:
                cst = os.stat(os.path.join(directory, child), follow_symlinks=False)
            except OSError as exc:
                return f"{os.path.join(directory, child)}: {exc.strerror or exc}"
            if cst.st_uid not in trusted:
                return (
                    f"{os.path.join(directory, child)} is owned by uid {cst.st_uid} inside "
                    f"the sticky, world-writable {directory}"
                )
        return None

    # symlinks on the configured path: whoever may change one chooses the root
    parts = [p for p in os.path.normpath(root).split("/") if p]
    for k in range(len(parts)):
        here = "/" + "/".join(parts[: k + 1])
        if os.path.islink(here):
            reason = check(os.path.dirname(here) or "/", parts[k])
            if reason is not None:
                return f"{reason} (it holds the symlink {here})"
    real = os.path.realpath(root)
    parts = [p for p in real.split("/") if p]
    for k in range(len(parts)):
        reason = check("/" + "/".join(parts[:k]), parts[k])
        if reason is not None:
            return reason
    return None


@contextlib.contextmanager
def open_parent(root_fd: int, rel: str, *, create: bool = False) -> Iterator[int | None]:
    """An fd on the directory holding ``rel``; None if a directory on the way is missing.

    With ``create``, missing directories are made (mode 0755). A symlink or a
    non-directory on the way raises `UnsafePath`.
    """
    parts = rel.split("/")[:-1]
    fd = os.dup(root_fd)
    try:
        for k, part in enumerate(parts):
            where = "/".join(parts[: k + 1])
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, NEW_DIR_MODE, dir_fd=fd)
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafePath(f"{rel}: {where} is {describe_mode(st.st_mode)}")
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:  # swapped for a symlink since the stat: ELOOP / ENOTDIR
                raise UnsafePath(f"{rel}: {where}: {exc.strerror or exc}") from exc
            os.close(fd)
            fd = nfd
        yield fd
    except OSError as exc:
        raise UnsafePath(f"{rel}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def read_regular(
    root_fd: int,
    rel: str,
    limit: int | None = None,
    *,
    head: int | None = None,
    single_link: bool = False,
) -> FileState | None:
    """The regular file ``rel`` under the root, or None if absent; `UnsafePath` otherwise.

    A fifo is never opened (that would block) and a device never read. With
    ``limit``, a file larger than ``limit`` bytes raises `UnsafePath`; with
    ``head``, only its first ``head`` bytes are read. With ``single_link``, the file
    read must have had one link, and ``rel`` must still name it after the read: a hard
    link to a secret elsewhere, made or removed around the read, is refused.
    """
    name = posixpath.basename(rel)
    with open_parent(root_fd, rel) as dfd:
        if dfd is None:
            return None
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{rel} is {describe_mode(st.st_mode)}")
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
            )
        except OSError as exc:
            raise UnsafePath(f"{rel}: {exc.strerror or exc}") from exc
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode) or fst.st_ino != st.st_ino:
                raise UnsafePath(f"{rel} changed while it was opened")
            if limit is not None and fst.st_size > limit:
                raise UnsafePath(f"{rel} is {fst.st_size} bytes, more than the {limit} byte limit")
            data = _read_all(fd, limit if head is None else head - 1)[:head]
            if limit is not None and len(data) > limit:
                raise UnsafePath(f"{rel} is more than the {limit} byte limit")
            if single_link:
                # on the descriptor read, and the name again after reading: a link added
                # (or one removed) around the read is caught either way
                try:
                    now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                except FileNotFoundError:
                    raise UnsafePath(f"{rel} changed while it was read") from None
                if (now.st_dev, now.st_ino) != (fst.st_dev, fst.st_ino):
                    raise UnsafePath(f"{rel} changed while it was read")
                links = max(os.fstat(fd).st_nlink, fst.st_nlink)
                if links != 1:
                    raise UnsafePath(f"{rel} has {links} hard links")
        finally:
            os.close(fd)
    return FileState(data, stat.S_IMODE(fst.st_mode), fst.st_uid, fst.st_gid)


def _read_all(fd: int, limit: int | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if limit is not None and size > limit:  # enough for a head, or the file grew
            return b"".join(chunks)


def write_atomic(
    root_fd: int, rel: str, data: bytes, mode: int, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``rel`` with ``data`` atomically: temp file beside it, fsync, rename, dir fsync.

    Missing parent directories are created. ``owner`` (uid, gid) is applied
    when it differs from razard's own and razard may set it.
    """
    name = posixpath.basename(rel)
    with open_parent(root_fd, rel, create=True) as dfd:
        assert dfd is not None  # create=True never yields None
        try:
            storage.write_atomic(name, data, mode=mode, dir_fd=dfd, owner=owner)
        except OSError as exc:
            raise UnsafePath(f"{rel}: cannot write: {exc.strerror or exc}") from exc


def remove_file(root_fd: int, rel: str) -> bool:
    """Remove ``rel`` if present (not following symlinks); True if something was removed."""
    with open_parent(root_fd, rel) as dfd:
        if dfd is None:
            return False
        try:
            os.unlink(posixpath.basename(rel), dir_fd=dfd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UnsafePath(f"{rel}: cannot remove: {exc.strerror or exc}") from exc
        os.fsync(dfd)
        return True


def remove_stale_temps(root_fd: int, rel: str) -> int:
    """Remove the temp files `write_atomic` left in ``rel``'s directory when killed mid-write."""
    removed = 0
    with contextlib.suppress(UnsafePath), open_parent(root_fd, rel) as dfd:
        if dfd is None:
            return 0
        for entry in os.listdir(dfd):
            if _TMP_RE.match(entry):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry, dir_fd=dfd)
                    removed += 1
    return removed


def list_artifact_files(root_fd: int, artifacts: Iterable[str]) -> list[str]:
    """Every regular file the declared artifacts name or hold, as sorted relative paths.

    A declared directory (``"x/"``) is walked without following symlinks;
    symlinks, devices and fifos are left out, as is anything behind a symlink.
    """
    found: set[str] = set()
    for entry in artifacts:
        norm = posixpath.normpath(entry)
        try:
            if entry.endswith("/"):
                found.update(_walk(root_fd, norm))
            elif read_kind(root_fd, norm) == "file":
                found.add(norm)
        except UnsafePath:
            continue  # not patchable either: check() refuses the same paths
    return sorted(found)


def read_kind(root_fd: int, rel: str) -> str:
    """``"file"``, ``"absent"`` or a word for another kind of file; `UnsafePath` for symlinks."""
    with open_parent(root_fd, rel) as dfd:
        if dfd is None:
            return "absent"
        try:
            st = os.stat(posixpath.basename(rel), dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return "absent"
        return "file" if stat.S_ISREG(st.st_mode) else describe_mode(st.st_mode)


def _walk(root_fd: int, top: str) -> list[str]:
    out: list[str] = []
    with open_parent(root_fd, f"{top}/x") as dfd:
        if dfd is None:
            return out
        for dirpath, _dirs, files, dirfd in os.fwalk(".", dir_fd=dfd, follow_symlinks=False):
            for f in files:
                if _TMP_RE.match(f):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISREG(os.stat(f, dir_fd=dirfd, follow_symlinks=False).st_mode):
                        out.append(posixpath.normpath(posixpath.join(top, dirpath, f)))
    return out


def missing_dirs(root_fd: int, rel: str) -> list[str]:
    """The parent directories of ``rel`` that do not exist yet, outermost first."""
    parts = rel.split("/")[:-1]
    for k in range(len(parts)):
        if read_kind(root_fd, "/".join(parts[: k + 1])) == "absent":
            return ["/".join(parts[: j + 1]) for j in range(k, len(parts))]
    return []


# --------------------------------------------------------------------------- snapshots


HASH_KEY: Final = "hash.key"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


class SnapshotStore:
    """Content-addressed snapshots of a component's artifacts under ``<state_dir>/snapshots``.

    Blobs are named by a keyed hash (HMAC-SHA-256 with a random key kept 0600 in
    ``snapshots/hash.key``), never a plain SHA-256: manifests are readable by group
    razar, and a plain hash of a secret artifact would let a reader confirm a guess.
    """

    def __init__(self, state_dir: Path) -> None:
        self.base = state_dir / SNAPSHOTS_DIR
        self.blobs = self.base / SNAPSHOT_BLOBS_DIR
        self._key: bytes | None = None

    def digest(self, data: bytes) -> str:
        """The keyed hash of ``data`` (hex), as blob names and patch records carry it."""
        return hmac.new(self._hash_key(), data, hashlib.sha256).hexdigest()

    def _hash_key(self) -> bytes:
        if self._key is not None:
            return self._key
        path = self.base / HASH_KEY
        try:
            make_dirs(self.base)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                key = path.read_bytes()
            else:
                key = secrets.token_bytes(32)
                try:
                    os.write(fd, key)
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise RepairError(f"{path}: cannot read or make the hash key: {exc}") from exc
        if len(key) != 32:  # torn by a crash right after creating it: nothing used it yet
            raise RepairError(f"{path}: the hash key is damaged; remove it to make a new one")
        self._key = key
        return key

    def manifest_path(self, component: str, snapshot_id: str) -> Path:
        """Where the manifest of ``snapshot_id`` lives."""
        return self.base / component / f"{snapshot_id}.json"

    def take(
        self,
        root_fd: int,
        component: str,
        snapshot_id: str,
        files: Iterable[str],
        absent_dirs: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Store every file in ``files`` (absent ones as null) and write the manifest.

        ``absent_dirs`` are directories a patch is about to create, removed
        again (when empty) on restore.
        """
        entries: dict[str, str | None] = {}
        modes: dict[str, int] = {}
        owners: dict[str, list[int]] = {}
        for rel in sorted(set(files)):
            state = read_regular(root_fd, rel)
            if state is None:
                entries[rel] = None
                continue
            entries[rel] = self._store_blob(state.data)
            modes[rel] = state.mode
            owners[rel] = [state.uid, state.gid]
        manifest: dict[str, Any] = {
            "snapshot_id": snapshot_id,
            "component": component,
            # the root's identity: a restore into any other directory is refused
            "root": root_identity(root_fd),
            "files": entries,
            "modes": modes,
            "owners": owners,
            "absent_dirs": sorted(set(absent_dirs)),
        }
        write_json_atomic(self.manifest_path(component, snapshot_id), manifest)
        return manifest

    def load(self, component: str, snapshot_id: str) -> dict[str, Any]:
        """The manifest of ``snapshot_id``; `RepairError` if it is missing or unreadable."""
        manifest = read_json(self.manifest_path(component, snapshot_id))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise RepairError(f"{component}: snapshot {snapshot_id} is missing or damaged")
        return manifest

    def restore(
        self,
        root_fd: int,
        manifest: Mapping[str, Any],
        also_absent: Iterable[str] = (),
        also_absent_dirs: Iterable[str] = (),
    ) -> list[str]:
        """Put every file back as the manifest has it; return the paths that changed.

        Files recorded as absent, and ``also_absent`` ones not in the manifest,
        are removed; so are the manifest's absent directories and
        ``also_absent_dirs``, when empty. A file already holding the right bytes and mode is left
        alone, so restoring twice (after a crash mid-restore) is harmless.
        """
        recorded = manifest.get("root")
        if recorded is not None and list(recorded) != root_identity(root_fd):
            raise UnsafePath(
                "the artifact root is no longer the directory the snapshot was taken of "
                "(it was moved or replaced): nothing restored"
            )
        files: dict[str, str | None] = dict(manifest["files"])
        for rel in also_absent:
            files.setdefault(rel, None)
        modes: Mapping[str, int] = manifest.get("modes", {})
        owners: Mapping[str, list[int]] = manifest.get("owners", {})
        changed: list[str] = []
        for parent in {posixpath.dirname(rel) for rel in files}:
            remove_stale_temps(root_fd, posixpath.join(parent, "x"))
        for rel, digest in sorted(files.items()):
            if digest is None:
                if read_kind(root_fd, rel) == "directory":
                    raise UnsafePath(f"{rel}: cannot restore as absent: it is now a directory")
                if remove_file(root_fd, rel):
                    changed.append(rel)
                continue
            data = self._read_blob(digest, rel)
            mode = int(modes.get(rel, NEW_FILE_MODE))
            try:
                current = read_regular(root_fd, rel)
            except UnsafePath:
                current = None  # replaced below by a regular file (rename does not follow links)
            if current is not None and current.data == data and current.mode == mode:
                continue
            owner = owners.get(rel)
            write_atomic(root_fd, rel, data, mode, (owner[0], owner[1]) if owner else None)
            changed.append(rel)
        dirs = set(manifest.get("absent_dirs", [])) | set(also_absent_dirs)
        for d in sorted(dirs, key=len, reverse=True):
            with contextlib.suppress(OSError, UnsafePath), open_parent(root_fd, d) as dfd:
                if dfd is not None:
                    os.rmdir(posixpath.basename(d), dir_fd=dfd)  # only if empty
        return changed

    def _store_blob(self, data: bytes) -> str:
        digest = self.digest(data)
        path = self.blobs / digest
        if path.exists():
            return digest
        try:
            make_dirs(self.blobs)
            storage.write_atomic(path, data, mode=BLOB_MODE)
        except OSError as exc:
            raise RepairError(
                f"{self.blobs}: cannot store snapshot: {exc.strerror or exc}"
            ) from exc
        return digest

    def _read_blob(self, digest: str, rel: str) -> bytes:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise RepairError(f"{rel}: snapshot names a bad blob {digest!r}")
        try:
            data = (self.blobs / digest).read_bytes()
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, "")
            raise RepairError(f"{rel}: snapshot blob {digest} unreadable ({code})") from exc
        # plain SHA-256: a blob stored before blobs were named by a keyed hash
        if digest not in (self.digest(data), sha256(data)):
            raise RepairError(f"{rel}: snapshot blob {digest} is corrupted")
        return data

"""Checking a repair proposal: what it may touch and the exact bytes it would write.

`prepare` turns an agent's `Proposal` (a unified diff and/or search-and-replace edits)
into a `PreparedPatch`, or refuses it (`PatchRefused`) naming why: a path outside the
component's declared artifacts, absolute, not normalised or with control characters;
a symlink on the way, a hard-linked file, binary content, a proposal or result over
the size limits, an edit whose search text is not there exactly once. It reads the
artifacts (never following a symlink) and writes nothing: applying, keeping and
undoing are `razard.repair.patch.PatchEngine`'s, which calls this through ``check``.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from razard.config import ComponentConfig, Config
from razard.errors import ConfigError, ConfigProblem
from razard.repair.difftools import (
    _CONTROL_RE,
    DiffError,
    FilePatch,
    apply_file_patch,
    parse_unified_diff,
)
from razard.repair.difftools import unified_diff as make_diff
from razard.repair.snapshots import (
    UnsafePath,
    open_parent,
    open_root,
    read_regular,
    sha256,
    unsafe_root,
)
from razard.repair.types import FileEdit, PatchRefused, Proposal

MAX_PATCH_BYTES: Final = 256 * 1024
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_EDITS: Final = 200  # search/replace edits in one proposal (each scans its whole file)


@dataclass(frozen=True)
class PreparedPatch:
    """A checked proposal: the new bytes of each file it changes, and the canonical diff."""

    component: str
    agent: str
    changes: Mapping[str, bytes]  # relative path -> new content
    diff: str
    diff_hash: str
    rationale: str
    # relative path -> sha256 of the content it was checked against (None: absent);
    # apply refuses if a file changed in between rather than overwrite that change.
    base: Mapping[str, str | None] = field(default_factory=dict)


def prepare(
    comp: ComponentConfig,
    proposal: Proposal,
    touched: list[str],
    digest: Callable[[bytes | None], str | None],
) -> PreparedPatch:
    """Turn ``proposal`` into the exact bytes it would write, or raise `PatchRefused`.

    The diff (if any) is applied first, then the edits, each on the result of the
    previous. ``touched`` collects the paths named (for a refusal's record); ``digest``
    is the engine's keyed hash of a file's bytes (`PreparedPatch.base`).
    """
    if not comp.artifacts or not comp.artifact_root:
        raise PatchRefused(f"{comp.name} declares no artifacts a repair may change")
    raw_text = proposal_text(proposal)
    size = len(raw_text.encode("utf-8", "surrogatepass"))
    if size > MAX_PATCH_BYTES:
        raise PatchRefused(f"the proposal is {size} bytes, over the {MAX_PATCH_BYTES} limit")
    if len(proposal.edits) > MAX_EDITS:
        raise PatchRefused(
            f"the proposal has {len(proposal.edits)} edits, over the {MAX_EDITS} limit"
        )
    if "\0" in raw_text:
        raise PatchRefused("the proposal contains a NUL byte: binary content is not patched")
    try:
        raw_text.encode("utf-8")
    except UnicodeEncodeError:
        # lone surrogates: a JSON reply can carry them; written out they become raw bytes
        raise PatchRefused("the proposal is not valid Unicode text (lone surrogates)") from None
    ops: list[tuple[str, FilePatch | FileEdit]] = []
    if proposal.diff.strip():
        try:
            file_patches = parse_unified_diff(proposal.diff)
        except DiffError as exc:
            raise PatchRefused(f"malformed diff: {exc}") from None
        for fp in file_patches:
            if fp.old_path is not None and fp.old_path != fp.path:
                _check_path(comp, fp.old_path)  # so a rename out of bounds says so
            ops.append((fp.path, fp))
    ops.extend((e.path, e) for e in proposal.edits)
    if not ops:
        raise PatchRefused("no change: the proposal has neither a diff nor edits")

    original: dict[str, bytes | None] = {}
    text: dict[str, str | None] = {}
    try:
        with open_root(comp.artifact_root) as root_fd:
            for raw, op in ops:
                if raw not in touched:
                    touched.append(raw)  # for the record, even if refused just below
                rel = _check_path(comp, raw)
                if rel not in original:
                    refuse_hard_links(root_fd, rel)
                    state = read_regular(root_fd, rel, MAX_FILE_BYTES)
                    original[rel] = None if state is None else state.data
                    text[rel] = (
                        None if state is None else state.data.decode("utf-8", "surrogateescape")
                    )
                text[rel] = _apply_op(rel, text[rel], op)
    except UnsafePath as exc:
        raise PatchRefused(str(exc)) from None

    changes: dict[str, bytes] = {}
    for rel, new_text in text.items():
        assert new_text is not None  # every op yields content
        try:
            data = new_text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise PatchRefused(f"{rel}: the new content is not valid text") from None
        if data == original[rel]:
            continue
        if b"\0" in data:
            raise PatchRefused(f"{rel}: holds NUL bytes (binary): only text files are patched")
        if len(data) > MAX_FILE_BYTES:
            raise PatchRefused(
                f"{rel}: the result is {len(data)} bytes, over the {MAX_FILE_BYTES} limit"
            )
        changes[rel] = data
    if not changes:
        raise PatchRefused("no change: the proposal leaves every file as it is")
    diff = "".join(
        make_diff(rel, _as_text(original[rel]), changes[rel].decode("utf-8", "replace"))
        for rel in sorted(changes)
    )
    diff_size = len(diff.encode())
    if diff_size > MAX_PATCH_BYTES:
        raise PatchRefused(f"the diff is {diff_size} bytes, over the {MAX_PATCH_BYTES} limit")
    return PreparedPatch(
        component=comp.name,
        agent=proposal.agent,
        changes=changes,
        diff=diff,
        diff_hash=sha256(diff.encode()),
        rationale=proposal.rationale,
        base={rel: digest(original[rel]) for rel in changes},
    )


def _check_path(comp: ComponentConfig, raw: str) -> str:
    """``raw`` if it is a clean relative path inside a declared artifact; else `PatchRefused`."""
    if not raw:
        raise PatchRefused("an empty path")
    if "\0" in raw or "\n" in raw:
        raise PatchRefused(f"{raw!r}: path contains NUL or a newline")
    if _CONTROL_RE.search(raw):
        raise PatchRefused(f"{raw!r}: path contains a control character")
    if raw.startswith("/"):
        raise PatchRefused(f"{raw}: absolute paths are not allowed")
    if ".." in raw.split("/"):
        raise PatchRefused(f"{raw}: '..' is not allowed in a path")
    norm = posixpath.normpath(raw)
    if norm != raw or norm == ".":
        raise PatchRefused(f"{raw}: path is not normalised (expected {norm!r})")
    for entry in comp.artifacts:
        e = posixpath.normpath(entry)
        if entry.endswith("/") and (e == "." or raw.startswith(e + "/")):
            return raw
        if not entry.endswith("/") and raw == e:
            return raw
    raise PatchRefused(f"{raw}: outside {comp.name}'s artifacts ({', '.join(comp.artifacts)})")


def _links(root_fd: int, rel: str) -> int:
    """Hard links of the regular file ``rel`` (0: absent or not a regular file, which
    `read_regular` then names); a symlink on the way raises `UnsafePath`."""
    with open_parent(root_fd, rel) as dfd:
        if dfd is None:
            return 0
        try:
            st = os.stat(posixpath.basename(rel), dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return 0
        return st.st_nlink if stat.S_ISREG(st.st_mode) else 0


def refuse_hard_links(root_fd: int, rel: str) -> None:
    """`UnsafePath` if the regular file ``rel`` has other names (hard links)."""
    # A second name may be a file outside the artifacts (a secret): its content must not
    # reach a diff or a model, and an atomic rename would silently split the two names.
    links = _links(root_fd, rel)
    if links > 1:
        raise UnsafePath(f"{rel} has {links} hard links; a file with other names is not patched")


def _apply_op(rel: str, current: str | None, op: FilePatch | FileEdit) -> str:
    if isinstance(op, FilePatch):
        try:
            return apply_file_patch(current, op)
        except DiffError as exc:
            raise PatchRefused(f"diff does not apply: {exc}") from None
    if op.search == "":
        return op.replace
    if current is None:
        raise PatchRefused(f"{rel}: does not exist (an edit with empty search creates a file)")
    n = current.count(op.search)
    if n == 0:
        raise PatchRefused(f"{rel}: search text not found")
    if n > 1:
        raise PatchRefused(f"{rel}: search text occurs {n} times; it must occur exactly once")
    return current.replace(op.search, op.replace, 1)


def _as_text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", "replace")


def proposal_text(proposal: Proposal) -> str:
    """The proposal as one text: its diff, then each edit (what a refused record hashes)."""
    parts = [proposal.diff]
    for e in proposal.edits:
        parts.append(
            f"=== edit {e.path}\n<<<<<<< search\n{e.search}\n=======\n{e.replace}\n>>>>>>>\n"
        )
    return "".join(parts)


def check_artifact_roots(cfg: Config) -> None:
    """Refuse a config whose artifact roots razard could be tricked into writing
    elsewhere through (`razard.repair.snapshots.unsafe_root`); roots not there yet pass.

    Raises:
        ConfigError: one problem per unsafe root, naming the component's key.
    """
    problems: list[ConfigProblem] = []
    for i, comp in enumerate(cfg.components):
        if not comp.artifacts or not comp.artifact_root:
            continue
        if not os.path.lexists(comp.artifact_root):
            continue
        reason = unsafe_root(comp.artifact_root)
        if reason is not None:
            problems.append(
                ConfigProblem(
                    str(cfg.source),
                    f"component[{i}] ({comp.name}).artifact_root",
                    f"unsafe: {reason}; razard writes there as root, so every directory "
                    "above it must be root's and writable by no one else",
                )
            )
    if problems:
        raise ConfigError(problems)

"""Unified diffs, read and written: the patch engine's only text-diff code.

Pure functions over strings, no I/O. A proposal's diff is parsed into
`FilePatch` objects and applied hunk by hunk with an exact context match; the
only tolerance is about the newline at the end of a file (a model often drops
or adds it). The engine's own records use `unified_diff`, whose output this
module reads back exactly.

Every problem is a `DiffError` whose message names the file and the hunk.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Final, Literal

Tag = Literal[" ", "-", "+"]

DEV_NULL: Final = "/dev/null"
NO_NEWLINE: Final = "\\ No newline at end of file"

_HUNK_RE: Final = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


class DiffError(ValueError):
    """A diff cannot be read, or does not apply to the file it names."""


@dataclass(frozen=True)
class HunkLine:
    """One body line of a hunk: its tag, its text without the newline, and whether it had one."""

    tag: Tag
    text: str
    newline: bool = True


@dataclass(frozen=True)
class Hunk:
    """One ``@@`` section: where it claims to apply and its lines."""

    header: str
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    lines: tuple[HunkLine, ...]

    @property
    def old_lines(self) -> list[str]:
        """The lines the file must hold where the hunk applies (context and removals)."""
        return [ln.text for ln in self.lines if ln.tag != "+"]


@dataclass(frozen=True)
class FilePatch:
    """The hunks for one file; ``old_path`` None means the diff creates the file."""

    old_path: str | None
    new_path: str | None
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        """The file the patch changes (the new name; the old one for a deletion)."""
        path = self.new_path if self.new_path is not None else self.old_path
        assert path is not None  # parse_unified_diff never yields two /dev/null sides
        return path


def parse_unified_diff(text: str) -> list[FilePatch]:
    """Read a unified diff with ``a/``+``b/`` prefixes or bare paths; raise `DiffError`.

    Lines outside file sections (``diff --git``, ``index``, prose, code fences)
    are skipped. Hunk bodies are read by the counts in their ``@@`` header; an
    empty line inside a body counts as an empty context line, because editors
    and models strip the lone space of one.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    patches: list[FilePatch] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _header_paths(line[4:], lines[i + 1][4:])
            name = new if new is not None else old
            i += 2
            hunks: list[Hunk] = []
            while i < len(lines) and lines[i].startswith("@@"):
                hunk, i = _parse_hunk(lines, i, name or DEV_NULL, len(hunks) + 1)
                hunks.append(hunk)
            if not hunks and old is not None:  # a bare header can only create an empty file
                raise DiffError(f"{name}: no hunks after the file header")
            patches.append(FilePatch(old, new, tuple(hunks)))
        elif line.startswith("@@"):
            raise DiffError(f"line {i + 1}: hunk {line!r} has no '---'/'+++' file header")
        else:
            i += 1
    if not patches:
        raise DiffError("no '---'/'+++' file sections found")
    return patches


def _header_paths(old_raw: str, new_raw: str) -> tuple[str | None, str | None]:
    old, new = _header_path(old_raw), _header_path(new_raw)
    if old is None and new is None:
        raise DiffError("a file section has /dev/null on both sides")
    # git's a/ b/ prefixes are stripped only when both sides carry them: a bare
    # path that happens to start with "a/" keeps it.
    if (old is None or old.startswith("a/")) and (new is None or new.startswith("b/")):
        old = old[2:] if old is not None else None
        new = new[2:] if new is not None else None
    return old, new


def _header_path(raw: str) -> str | None:
    path = raw.split("\t", 1)[0].rstrip("\r")
    if path == DEV_NULL:
        return None
    if path.startswith('"'):
        raise DiffError(f"quoted path {path} is not supported")
    if not path:
        raise DiffError("a file header has an empty path")
    return path


def _parse_hunk(lines: list[str], i: int, name: str, number: int) -> tuple[Hunk, int]:
    header = lines[i]
    m = _HUNK_RE.match(header)
    if m is None:
        raise DiffError(f"{name}: hunk {number}: malformed header {header!r}")
    old_start, new_start = int(m[1]), int(m[3])
    old_len = 1 if m[2] is None else int(m[2])
    new_len = 1 if m[4] is None else int(m[4])
    where = f"{name}: hunk {number} ({header.strip()})"
    body: list[HunkLine] = []
    old_left, new_left = old_len, new_len
    i += 1
    while old_left > 0 or new_left > 0:
        if i >= len(lines):
            raise DiffError(f"{where}: ends early ({old_left} old, {new_left} new lines missing)")
        line = lines[i]
        i += 1
        if line.startswith("\\"):
            _mark_no_newline(body, where)
            continue
        tag = line[:1] or " "
        if tag not in (" ", "-", "+"):
            raise DiffError(f"{where}: unexpected line {line!r}")
        body.append(HunkLine(tag, line[1:]))  # type: ignore[arg-type]  # checked just above
        old_left -= tag != "+"
        new_left -= tag != "-"
        if old_left < 0 or new_left < 0:
            raise DiffError(f"{where}: more lines than the header counts")
    while i < len(lines) and lines[i].startswith("\\"):
        _mark_no_newline(body, where)
        i += 1
    return Hunk(header, old_start, old_len, new_start, new_len, tuple(body)), i


def _mark_no_newline(body: list[HunkLine], where: str) -> None:
    if not body:
        raise DiffError(f"{where}: '\\ No newline' marker before any line")
    last = body[-1]
    body[-1] = HunkLine(last.tag, last.text, newline=False)


# --------------------------------------------------------------------------- applying


def split_lines(text: str) -> list[tuple[str, bool]]:
    """``text`` as (line without newline, had a newline) pairs; only ``\\n`` ends a line."""
    parts = text.split("\n")
    pairs = [(p, True) for p in parts[:-1]]
    if parts[-1]:
        pairs.append((parts[-1], False))
    return pairs


def join_lines(pairs: list[tuple[str, bool]]) -> str:
    """Inverse of `split_lines`; a line followed by another always gets its newline back."""
    last = len(pairs) - 1
    return "".join(t + ("\n" if nl or k < last else "") for k, (t, nl) in enumerate(pairs))


def apply_file_patch(old: str | None, patch: FilePatch) -> str:
    """Apply ``patch``'s hunks to ``old`` (None: the file does not exist); raise `DiffError`.

    A hunk applies where its context and removed lines match the file exactly:
    at the line its header names, or else at the one place after the previous
    hunk where they occur; none or several such places refuse the diff.
    Whether the file's last line ends in a newline does not count as a mismatch.
    """
    name = patch.path
    if patch.new_path is None:
        raise DiffError(f"{name}: deleting files is not supported")
    if patch.old_path is not None and patch.old_path != patch.new_path:
        raise DiffError(f"{patch.old_path} -> {patch.new_path}: renaming files is not supported")
    if patch.old_path is None and old is not None:
        raise DiffError(f"{name}: the diff creates the file, but it already exists")
    if patch.old_path is not None and old is None:
        raise DiffError(f"{name}: the file does not exist")
    src = split_lines(old or "")
    texts = [t for t, _ in src]
    out: list[tuple[str, bool]] = []
    cursor = 0
    offset = 0  # how far earlier hunks moved the file relative to their headers
    for number, hunk in enumerate(patch.hunks, 1):
        pos = _locate(texts, hunk, cursor, offset, f"{name}: hunk {number} ({hunk.header})")
        offset = pos - _expected(hunk)
        out.extend(src[cursor:pos])
        k = pos
        for line in hunk.lines:
            if line.tag == " ":
                out.append(src[k])  # the file's own line, newline or not
                k += 1
            elif line.tag == "-":
                k += 1
            else:
                out.append((line.text, line.newline))
        cursor = k
    out.extend(src[cursor:])
    return join_lines(out)


def _expected(hunk: Hunk) -> int:
    # An insertion-only hunk (-N,0) goes after line N; any other starts at line N.
    return hunk.old_start if hunk.old_len == 0 else hunk.old_start - 1


def _locate(texts: list[str], hunk: Hunk, lo: int, offset: int, where: str) -> int:
    want = hunk.old_lines
    guess = _expected(hunk) + offset
    if not want:
        if lo <= guess <= len(texts):
            return guess
        raise DiffError(f"{where}: inserts at line {guess} of a {len(texts)}-line file")
    n = len(want)
    if lo <= guess <= len(texts) - n and texts[guess : guess + n] == want:
        return guess
    found = [p for p in range(lo, len(texts) - n + 1) if texts[p : p + n] == want]
    if len(found) == 1:
        return found[0]
    if not found:
        raise DiffError(f"{where}: context does not match the file")
    raise DiffError(f"{where}: context matches {len(found)} places, cannot tell which")


# --------------------------------------------------------------------------- writing


def unified_diff(path: str, old: str | None, new: str) -> str:
    """The canonical diff from ``old`` (None: absent) to ``new``, readable by this module.

    ``a/``/``b/`` prefixes, three lines of context, and git's marker after a
    last line without a newline (difflib itself leaves such a line unterminated).
    """
    a = _keep_ends(old or "")
    b = _keep_ends(new)
    fromfile = DEV_NULL if old is None else f"a/{path}"
    out: list[str] = []
    for line in difflib.unified_diff(a, b, fromfile=fromfile, tofile=f"b/{path}", n=3):
        out.append(line if line.endswith("\n") else f"{line}\n{NO_NEWLINE}\n")
    if old is None and not b:
        # difflib prints nothing for a new empty file; the record should still show it.
        out = [f"--- {DEV_NULL}\n", f"+++ b/{path}\n"]
    return "".join(out)


def _keep_ends(text: str) -> list[str]:
    return [t + ("\n" if nl else "") for t, nl in split_lines(text)]

"""Unified diffs, read and written: the patch engine's only text-diff code.

Pure functions over strings, no I/O. A proposal's diff is parsed into
`FilePatch` objects and applied hunk by hunk with an exact context match; the
only tolerance is about the newline at the end of a file (a model often drops
or adds it). The engine's own records use `unified_diff`, whose output this
module reads back exactly.

Every problem is a `DiffError` whose message names the file and the hunk.

What a diff can say beyond "these lines change" is refused, never skipped: git's
mode, symlink, rename, copy, deletion and binary headers, a ``diff --git`` line
that names another file than the ``---``/``+++`` lines under it, control
characters in a path. Work is bounded: at most `MAX_FILE_SECTIONS` files and
`MAX_HUNKS` hunks; a hunk is located with one linear string search, and the
canonical diff falls back to one block per change when a line-matching diff
would cost more than `DIFF_WORK`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

Tag = Literal[" ", "-", "+"]

DEV_NULL: Final = "/dev/null"
NO_NEWLINE: Final = "\\ No newline at end of file"
MAX_FILE_SECTIONS: Final = 64
MAX_HUNKS: Final = 1000
DIFF_WORK: Final = 2_000_000  # line comparisons difflib may make for one canonical diff
REGULAR_FILE_MODE: Final = "100644"

_HUNK_RE: Final = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
# git extended header lines that change more than content: refused with the reason given.
_GIT_REFUSED: Final = (
    ("old mode ", "file mode changes are not supported"),
    ("new mode ", "file mode changes are not supported"),
    ("deleted file mode ", "deleting files is not supported"),
    ("rename from ", "renaming files is not supported"),
    ("rename to ", "renaming files is not supported"),
    ("copy from ", "copying files is not supported"),
    ("copy to ", "copying files is not supported"),
    ("GIT binary patch", "binary diffs are not supported"),
)
_BINARY_RE: Final = re.compile(r"^Binary files .* differ$")


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

    Lines outside file sections (``index``, prose, code fences) are skipped,
    except git's extended headers that change more than content (see the
    module docstring), which are refused. Hunk bodies are read by the counts
    in their ``@@`` header; an empty line inside a body counts as an empty
    context line, because editors and models strip the lone space of one.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    patches: list[FilePatch] = []
    hunk_count = 0
    git_line: str | None = None  # the last ``diff --git`` line not yet followed by ---/+++
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            old, new = _header_paths(line[4:], lines[i + 1][4:])
            name = new if new is not None else old
            if git_line is not None:
                _check_git_line(git_line, old, new)
                git_line = None
            if len(patches) >= MAX_FILE_SECTIONS:
                raise DiffError(f"more than {MAX_FILE_SECTIONS} files in one diff")
            i += 2
            hunks: list[Hunk] = []
            while i < len(lines) and lines[i].startswith("@@"):
                hunk_count += 1
                if hunk_count > MAX_HUNKS:
                    raise DiffError(f"more than {MAX_HUNKS} hunks in one diff")
                hunk, i = _parse_hunk(lines, i, name or DEV_NULL, len(hunks) + 1)
                hunks.append(hunk)
            if not hunks and old is not None:  # a bare header can only create an empty file
                raise DiffError(f"{name}: no hunks after the file header")
            patches.append(FilePatch(old, new, tuple(hunks)))
        elif line.startswith("@@"):
            raise DiffError(f"line {i + 1}: hunk {line!r} has no '---'/'+++' file header")
        else:
            if line.startswith("diff --git "):
                if git_line is not None:
                    raise DiffError(f"{_no_content(git_line)}")
                git_line = line.rstrip("\r")
            else:
                _refuse_git_header(line.rstrip("\r"), i + 1)
            i += 1
    if git_line is not None:
        raise DiffError(_no_content(git_line))
    if not patches:
        raise DiffError("no '---'/'+++' file sections found")
    return patches


def _refuse_git_header(line: str, number: int) -> None:
    """Raise `DiffError` if ``line`` is a git header asking for more than a content change."""
    for prefix, why in _GIT_REFUSED:
        if line.startswith(prefix):
            raise DiffError(f"line {number}: {why} ({line[:80]!r})")
    if _BINARY_RE.match(line):
        raise DiffError(f"line {number}: binary diffs are not supported ({line[:80]!r})")
    if line.startswith("new file mode "):
        mode = line.removeprefix("new file mode ").strip()
        if mode == "120000":
            raise DiffError(f"line {number}: creating symlinks is not supported")
        if mode != REGULAR_FILE_MODE:
            raise DiffError(
                f"line {number}: new file mode {mode[:12]!r} is not allowed: a new file is "
                f"created with mode {REGULAR_FILE_MODE}, never executable, setuid or setgid"
            )


def _no_content(git_line: str) -> str:
    return (
        f"{git_line[:120]!r} has no '---'/'+++' lines under it: only content changes "
        "are supported (not mode-only, empty-file or binary changes)"
    )


def _check_git_line(git_line: str, old: str | None, new: str | None) -> None:
    """A ``diff --git`` line must name the file its ``---``/``+++`` lines change."""
    a = old if old is not None else new
    b = new if new is not None else old
    if git_line not in (f"diff --git a/{a} b/{b}", f"diff --git {a} {b}"):
        raise DiffError(
            f"{git_line[:120]!r} names another file than the '---'/'+++' lines under it "
            f"({b!r}); refusing a diff whose headers disagree"
        )


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
        raise DiffError(f"quoted path {path[:120]!r} is not supported")
    if not path:
        raise DiffError("a file header has an empty path")
    if _CONTROL_RE.search(path):
        raise DiffError(f"path {path[:120]!r} contains a control character")
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
    lines = _Lines([t for t, _ in src])
    out: list[tuple[str, bool]] = []
    cursor = 0
    offset = 0  # how far earlier hunks moved the file relative to their headers
    for number, hunk in enumerate(patch.hunks, 1):
        pos = _locate(lines, hunk, cursor, offset, f"{name}: hunk {number} ({hunk.header.strip()})")
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


class _Lines:
    """A file's lines, and the same as one string for a linear search of a run of lines.

    ``haystack`` is a newline, then each line followed by a newline: a run of whole lines
    is a substring that starts at a newline.
    """

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.haystack = ""
        self.starts: dict[int, int] = {}  # offset of the newline before line k -> k
        self.offsets: list[int] = []  # line k -> that offset

    def _index(self) -> None:
        # built on the first search only: most hunks apply where their header says
        self.haystack = "\n" + "".join(t + "\n" for t in self.texts)
        pos = 0
        for k, t in enumerate(self.texts):
            self.starts[pos] = k
            pos += len(t) + 1
        self.offsets = list(self.starts)

    def find(self, want: list[str], lo: int, most: int) -> list[int]:
        """The first ``most`` line numbers >= ``lo`` where ``want`` occurs as whole lines."""
        if lo >= len(self.texts):
            return []
        if not self.offsets:
            self._index()
        needle = "\n" + "".join(t + "\n" for t in want)
        found: list[int] = []
        at = self.offsets[lo]
        while len(found) < most:
            at = self.haystack.find(needle, at)
            if at < 0:
                break
            found.append(self.starts[at])
            at += 1
        return found


def _expected(hunk: Hunk) -> int:
    # An insertion-only hunk (-N,0) goes after line N; any other starts at line N.
    return hunk.old_start if hunk.old_len == 0 else hunk.old_start - 1


def _locate(lines: _Lines, hunk: Hunk, lo: int, offset: int, where: str) -> int:
    texts = lines.texts
    want = hunk.old_lines
    guess = _expected(hunk) + offset
    if not want:
        if lo <= guess <= len(texts):
            return guess
        raise DiffError(f"{where}: inserts at line {guess} of a {len(texts)}-line file")
    n = len(want)
    if lo <= guess <= len(texts) - n and texts[guess : guess + n] == want:
        return guess
    # One linear string search instead of comparing the hunk at every line: a hostile
    # hunk of many identical lines against a big file must not cost minutes.
    found = lines.find(want, lo, 2)
    if len(found) == 1:
        return found[0]
    if not found:
        raise DiffError(f"{where}: context does not match the file")
    raise DiffError(f"{where}: context matches {len(found)} places or more, cannot tell which")


# --------------------------------------------------------------------------- writing


def unified_diff(path: str, old: str | None, new: str) -> str:
    """The canonical diff from ``old`` (None: absent) to ``new``, readable by this module.

    ``a/``/``b/`` prefixes, three lines of context, and git's marker after a
    last line without a newline (difflib itself leaves such a line unterminated).
    """
    a = _keep_ends(old or "")
    b = _keep_ends(new)
    fromfile = DEV_NULL if old is None else f"a/{path}"
    if old is None and not b:
        # difflib prints nothing for a new empty file; the record should still show it.
        return f"--- {DEV_NULL}\n+++ b/{path}\n"
    out: list[str] = []
    for group in _grouped(_opcodes(a, b), 3):
        if not out:
            out += [f"--- {fromfile}\n", f"+++ b/{path}\n"]
        first, last = group[0], group[-1]
        out.append(f"@@ -{_range(first[1], last[2])} +{_range(first[3], last[4])} @@\n")
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                out += [" " + line for line in a[i1:i2]]
                continue
            if tag in ("replace", "delete"):
                out += ["-" + line for line in a[i1:i2]]
            if tag in ("replace", "insert"):
                out += ["+" + line for line in b[j1:j2]]
    return "".join(line if line.endswith("\n") else f"{line}\n{NO_NEWLINE}\n" for line in out)


Opcode = tuple[str, int, int, int, int]


def _grouped(codes: list[Opcode], n: int) -> list[list[Opcode]]:
    """difflib's ``get_grouped_opcodes``: the changes in hunks with ``n`` lines of context."""
    if codes[0][0] == "equal":
        tag, i1, i2, j1, j2 = codes[0]
        codes[0] = tag, max(i1, i2 - n), i2, max(j1, j2 - n), j2
    if codes[-1][0] == "equal":
        tag, i1, i2, j1, j2 = codes[-1]
        codes[-1] = tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)
    groups: list[list[Opcode]] = []
    group: list[Opcode] = []
    for tag, i1, i2, j1, j2 in codes:
        if tag == "equal" and i2 - i1 > n + n:  # a long unchanged run ends the hunk
            group.append((tag, i1, min(i2, i1 + n), j1, min(j2, j1 + n)))
            groups.append(group)
            group = []
            i1, j1 = max(i1, i2 - n), max(j1, j2 - n)
        group.append((tag, i1, i2, j1, j2))
    if group and not (len(group) == 1 and group[0][0] == "equal"):
        groups.append(group)
    return [g for g in groups if any(op[0] != "equal" for op in g)]


def _opcodes(a: list[str], b: list[str]) -> list[Opcode]:
    """difflib's opcodes from ``a`` to ``b``, bounded in work.

    The common head and tail are matched directly; difflib compares only the
    middle, and only when that costs at most `DIFF_WORK` line comparisons. A
    middle too tangled for that (many repeated lines on both sides: a hostile
    rewrite) becomes one block replaced, still exact, only less minimal.
    """
    head = 0
    most = min(len(a), len(b))
    while head < most and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < most - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    am, bm = a[head : len(a) - tail], b[head : len(b) - tail]
    ops: list[Opcode] = [("equal", 0, head, 0, head)] if head else []
    if am or bm:
        if _work(am, bm) <= DIFF_WORK:
            # here, not at the top: razard's memory holds only what it has used (a repair
            # may never come), and difflib with its imports is ~0.2 MiB
            import difflib

            middle: list[Opcode] = list(difflib.SequenceMatcher(None, am, bm).get_opcodes())
        else:
            tag = "replace" if am and bm else ("delete" if am else "insert")
            middle = [(tag, 0, len(am), 0, len(bm))]
        ops += [(t, i1 + head, i2 + head, j1 + head, j2 + head) for t, i1, i2, j1, j2 in middle]
    if tail:
        ops.append(("equal", len(a) - tail, len(a), len(b) - tail, len(b)))
    merged: list[Opcode] = []
    for op in ops:  # a head or tail next to an equal run of the middle: one run
        if merged and op[0] == "equal" and merged[-1][0] == "equal":
            prev = merged.pop()
            op = ("equal", prev[1], op[2], prev[3], op[4])
        merged.append(op)
    return merged or [("equal", 0, 0, 0, 0)]


def _work(a: list[str], b: list[str]) -> int:
    """About how many line comparisons difflib makes on ``a`` and ``b`` (its autojunk rule)."""
    counts: dict[str, int] = {}
    for line in b:
        counts[line] = counts.get(line, 0) + 1
    popular = len(b) // 100 + 1 if len(b) >= 200 else len(b) + 1
    return len(a) + sum(c for line in a if (c := counts.get(line, 0)) <= popular)


def _range(start: int, stop: int) -> str:
    # difflib's "ed" range: 1-based start, a length of 1 left out, an empty range before it
    length = stop - start
    if length == 1:
        return f"{start + 1}"
    return f"{start if not length else start + 1},{length}"


def _keep_ends(text: str) -> list[str]:
    return [t + ("\n" if nl else "") for t, nl in split_lines(text)]

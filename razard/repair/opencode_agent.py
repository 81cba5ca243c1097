"""The ``opencode`` repair agent: the opencode CLI edits a scratch copy, git reads the change back.

    artifacts --copy--> scratch/ (git init + commit) --opencode run--> edited scratch/
        --git diff--> Proposal.diff (only paths inside the declared artifacts)

opencode is run as ``opencode run --format json [--model M] <message>`` in the scratch
copy, with a deadline after which its whole process group is killed. A project-level
``opencode.json`` is written there: safe defaults (no shell, no web fetches, no writes
outside the scratch copy, no autoupdate, no sharing, no snapshots) overlaid with the
roster's ``config`` (provider settings, model, permissions). The real component files
are never touched: the patch engine applies the returned diff.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from razard.repair.registry import run_with_deadline
from razard.repair.types import AgentFailed, AgentSkipped, Proposal, RepairContext

DEFAULT_DEADLINE: Final = 300.0
#: stdout kept in Proposal.raw.
RAW_LIMIT: Final = 64 * 1024
#: Files larger than this are not copied into the scratch copy (and cannot be changed).
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
#: A longer message goes to opencode's stdin (it appends piped input to the message):
#: one argv string is capped at 128 KiB by the kernel.
ARGV_MESSAGE_LIMIT: Final = 100_000
CONFIG_FILE: Final = "opencode.json"
NOT_INSTALLED: Final = "opencode is not installed (scripts/install_opencode.sh)"

#: Written into the scratch copy's opencode.json unless the roster's config overrides them.
DEFAULT_CONFIG: Final[Mapping[str, Any]] = {
    "$schema": "https://opencode.ai/config.json",
    "autoupdate": False,
    "share": "disabled",
    "snapshot": False,
    "permission": {"bash": "deny", "webfetch": "deny", "external_directory": "deny"},
}

INSTRUCTIONS: Final = (
    "You are in a scratch copy of the component's files (the current directory). Edit the "
    "files listed above in place with your edit/write tools instead of replying with JSON; "
    "change nothing else. Finish with one short paragraph: what you changed and why."
)

_GIT_ENV: Final = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_LITERAL_PATHSPECS": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


class OpencodeAgent:
    """A roster rung backed by the opencode CLI (npm package ``opencode-ai``)."""

    kind = "opencode"

    def __init__(
        self,
        name: str,
        artifact_root: Path,
        artifacts: Sequence[str],
        *,
        binary: str = "opencode",
        model: str = "",
        deadline: float = DEFAULT_DEADLINE,
        max_attempts: int = 1,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.artifact_root = Path(artifact_root)
        self.artifacts = tuple(artifacts)
        self.binary = binary
        self.model = model
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.config = dict(config) if config is not None else None

    async def propose(self, ctx: RepairContext) -> Proposal:
        """Let opencode edit a scratch copy of the artifacts; return its change as a diff."""
        exe = shutil.which(self.binary)
        if exe is None:
            raise AgentSkipped(NOT_INSTALLED)
        if shutil.which("git") is None:
            raise AgentSkipped("git is not installed (the opencode rung reads changes with git)")
        scratch = Path(tempfile.mkdtemp(prefix=f"razar-opencode-{ctx.component}-"))
        try:
            work = scratch / "work"
            skipped = await asyncio.to_thread(self._prepare, work)
            stdout = await self._run(exe, work, ctx)
            change = await asyncio.to_thread(_read_change, work, self.artifacts, skipped)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        raw = stdout.decode("utf-8", "replace")
        events = parse_events(raw)
        note = ""
        if change.dropped:
            shown = ", ".join(change.dropped[:10])
            more = f" and {len(change.dropped) - 10} more" if len(change.dropped) > 10 else ""
            note = f"dropped edits outside the artifacts: {shown}{more}"
        if not change.diff:
            why = "; ".join(x for x in (event_error(events), note) if x)
            raise AgentFailed("opencode made no change" + (f" ({why})" if why else ""))
        text = last_text(events) or "opencode changed " + ", ".join(change.changed)
        return Proposal(
            agent=self.name,
            rationale=f"{text}\n\n({note})" if note else text,
            diff=change.diff,
            raw=raw if len(raw) <= RAW_LIMIT else raw[:RAW_LIMIT] + "\n...(truncated)",
        )

    # -- steps ---------------------------------------------------------------------------

    def _prepare(self, work: Path) -> frozenset[str]:
        """Copy the artifacts into ``work``, commit them, write opencode.json.

        Returns the artifact paths that were not copied (symlinks, special or huge files, and
        everything under a symlinked directory): a change to one of them is dropped like an
        edit outside the artifacts.
        """
        work.mkdir()
        skipped: set[str] = set()
        for artifact in self.artifacts:
            rel = _clean(artifact)
            if rel is None:
                continue
            src = self.artifact_root / rel
            if artifact.endswith("/"):
                if src.is_symlink() or (os.path.lexists(src) and not src.is_dir()):
                    skipped.add(rel)
                elif src.is_dir():
                    _copy_tree(src, work / rel, rel, skipped)
            elif not _copy_file(src, work / rel):
                if os.path.lexists(src):
                    skipped.add(rel)
        git = _Git(work)
        git("init", "--quiet")
        git("add", "--all", "--force")
        git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "artifacts before repair")
        if CONFIG_FILE not in self.artifacts:
            (work / CONFIG_FILE).write_text(json.dumps(self.opencode_config(), indent=2) + "\n")
        return frozenset(skipped)

    def opencode_config(self) -> dict[str, Any]:
        """The opencode.json written into the scratch copy: defaults overlaid with ``config``."""
        merged: dict[str, Any] = json.loads(json.dumps(DEFAULT_CONFIG))
        for key, value in (self.config or {}).items():
            if key == "permission" and isinstance(value, Mapping):
                merged["permission"].update(value)
            else:
                merged[key] = value
        return merged

    async def _run(self, exe: str, work: Path, ctx: RepairContext) -> bytes:
        message = ctx.prompt() + "\n\n" + INSTRUCTIONS
        argv = [exe, "run", "--format", "json"]
        if self.model:
            argv += ["--model", self.model]
        stdin: bytes | None = None
        if len(message.encode()) > ARGV_MESSAGE_LIMIT:
            argv.append("The repair request follows.")
            stdin = message.encode()
        else:
            argv.append(message)
        env = _without_git_vars(os.environ)
        env["PWD"] = str(work)  # opencode takes its project directory from $PWD, not getcwd()
        env.setdefault("OPENCODE_DISABLE_AUTOUPDATE", "1")
        if CONFIG_FILE in self.artifacts:  # the artifact keeps its name; the config goes by env
            env["OPENCODE_CONFIG_CONTENT"] = json.dumps(self.opencode_config())
        try:
            run = await run_with_deadline(
                argv, deadline=self.deadline, cwd=work, env=env, stdin=stdin
            )
        except OSError as e:
            raise AgentFailed(f"cannot run {exe}: {e.strerror or e}") from e
        if run.timed_out:
            raise AgentFailed(f"opencode did not finish within {self.deadline:g}s and was killed")
        if run.returncode != 0:
            detail = event_error(parse_events(run.stdout.decode("utf-8", "replace")))
            tail = run.stderr.decode("utf-8", "replace").strip()[-2000:]
            if detail and tail:
                detail += f"; stderr: {tail}"
            raise AgentFailed(
                f"opencode exited with status {run.returncode}: {detail or tail or '(no output)'}"
            )
        return run.stdout


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Change:
    """What opencode changed in the scratch copy."""

    diff: str  # git diff of the paths inside the artifacts
    changed: tuple[str, ...]  # those paths
    dropped: tuple[str, ...]  # changed paths outside the artifacts, left out of the diff


def inside(path: str, artifacts: Sequence[str]) -> bool:
    """True when relative ``path`` is a declared artifact or lies under an artifact directory."""
    for artifact in artifacts:
        rel = _clean(artifact)
        if rel is None:
            continue
        if artifact.endswith("/"):
            if path.startswith(rel + "/"):
                return True
        elif path == rel:
            return True
    return False


def parse_events(stdout: str) -> list[dict[str, Any]]:
    """The JSON events of ``opencode run --format json`` (one object a line; others ignored)."""
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_text(events: Sequence[Mapping[str, Any]]) -> str:
    """The last text part the model wrote, stripped ("" if none)."""
    for event in reversed(events):
        part = event.get("part")
        if event.get("type") == "text" and isinstance(part, Mapping):
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                return text.strip()
    return ""


def event_error(events: Sequence[Mapping[str, Any]]) -> str:
    """The message of the last ``error`` event ("" if none)."""
    for event in reversed(events):
        if event.get("type") != "error":
            continue
        error = event.get("error")
        if isinstance(error, Mapping):
            data = error.get("data")
            if isinstance(data, Mapping) and isinstance(data.get("message"), str):
                return f"{error.get('name', 'error')}: {data['message']}"
            return str(error.get("name") or error)
        return str(error)
    return ""


def _clean(artifact: str) -> str | None:
    """A declared artifact as a clean relative POSIX path, or None if it is not one."""
    rel = artifact.rstrip("/")
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts or ".git" in p.parts:
        return None
    return p.as_posix()


def _copy_file(src: Path, dst: Path) -> bool:
    """Copy a regular file of bounded size (never following a symlink); False if not copied."""
    try:
        st = src.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=False)
    return True


def _copy_tree(src: Path, dst: Path, rel: str, skipped: set[str]) -> None:
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for d in list(dirnames):
            if (base / d).is_symlink():
                dirnames.remove(d)
                skipped.add(_rel(base / d, src, rel))
        for f in filenames:
            target = dst / (base / f).relative_to(src)
            if not _copy_file(base / f, target):
                skipped.add(_rel(base / f, src, rel))


def _without_git_vars(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less GIT_DIR, GIT_WORK_TREE & co, which would point git away from the copy."""
    return {k: v for k, v in env.items() if not k.startswith("GIT_")}


def _under_any(path: str, paths: frozenset[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in paths)


def _rel(path: Path, src: Path, rel: str) -> str:
    return f"{rel}/{path.relative_to(src).as_posix()}"


_GIT_SETTINGS: Final = (
    "user.name=razard",
    "user.email=razard@localhost",
    "core.quotePath=false",
    "commit.gpgSign=false",
    f"core.hooksPath={os.devnull}",
)


class _Git:
    def __init__(self, work: Path) -> None:
        self.work = work

    def __call__(self, *args: str) -> str:
        env = {**_without_git_vars(os.environ), **_GIT_ENV}
        cmd = ["git", *(a for kv in _GIT_SETTINGS for a in ("-c", kv)), *args]
        done = subprocess.run(
            cmd, cwd=self.work, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise AgentFailed(f"git {args[0]} failed in the scratch copy: {done.stderr.strip()}")
        return done.stdout


def _read_change(work: Path, artifacts: Sequence[str], skipped: frozenset[str]) -> Change:
    """The scratch copy's changes since the commit, split into kept and dropped paths."""
    git = _Git(work)
    status = git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")
    kept: list[str] = []
    untracked: list[str] = []
    dropped: list[str] = []
    for record in filter(None, status.split("\0")):
        code, path = record[:2], record[3:]
        if path == CONFIG_FILE and CONFIG_FILE not in artifacts:
            continue  # ours
        if inside(path, artifacts) and not _under_any(path, skipped):
            kept.append(path)
            if code == "??":
                untracked.append(path)
        else:
            dropped.append(path)
    if not kept:
        return Change("", (), tuple(dropped))
    if untracked:
        git("add", "--intent-to-add", "--force", "--", *untracked)
    diff = git(
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--src-prefix=a/",
        "--dst-prefix=b/",
        "--",
        *kept,
    )
    return Change(diff, tuple(kept), tuple(dropped))

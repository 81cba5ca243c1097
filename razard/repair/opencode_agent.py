"""The ``opencode`` repair agent: the opencode CLI edits a scratch copy, git reads the change back.

    artifacts --copy--> scratch/ (git init + commit) --opencode run--> edited scratch/
        --git diff--> Proposal.diff (only paths inside the declared artifacts)

opencode is run as ``opencode run --format json [--model M] <message>`` in the scratch
copy, with a deadline after which its whole process group is killed. A project-level
``opencode.json`` is written there: safe defaults (no shell, no web fetches, no writes
outside the scratch copy, no autoupdate, no sharing, no snapshots) overlaid with the
roster's ``config`` (provider settings, model, permissions). The real component files
are never touched: the patch engine applies the returned diff.

The copy reads artifact files only through the symlink-refusing walk of
`razard.repair.snapshots` and leaves out opencode's own control files (``.opencode/``,
``opencode.json``, ``AGENTS.md``, ...), which opencode would load as config, plugins or
instructions. opencode runs with an allowlisted environment and a HOME and XDG
directories of its own inside the scratch directory, removed with it. Secrets found in
``config`` (apiKey, token, authorization) are masked in everything the agent returns.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from razard.repair.registry import run_with_deadline
from razard.repair.snapshots import UnsafePath, open_parent, open_root, read_regular
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

#: opencode's own files, never copied from the artifacts to the top of the scratch copy: its
#: project config, config dir (plugins run code), and instruction/skill files it loads.
CONTROL_NAMES: Final = frozenset(
    {
        CONFIG_FILE,
        "opencode.jsonc",
        ".opencode",
        "AGENTS.md",
        "CLAUDE.md",
        "CONTEXT.md",
        ".claude",
        ".agents",
    }
)
#: razard's environment variables that opencode gets (besides LC_*): nothing else of it.
ENV_KEPT: Final = frozenset({"PATH", "LANG", "TZ", "TMPDIR"})
#: Keys (any case) of ``config`` whose string values are masked in what the agent returns.
SECRET_KEYS: Final = frozenset({"apikey", "api_key", "token", "authorization"})
#: Shorter secret values are not masked (it would garble every message, and reveal little).
MIN_SECRET: Final = 4
MASK: Final = "***"

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

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
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.artifact_root = Path(artifact_root)
        self.artifacts = tuple(artifacts)
        self.binary = binary
        self.model = model
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.config = dict(config) if config is not None else None
        #: Extra variables for opencode (OPENCODE_*, npm_config_*), set over the allowlist.
        self.env = dict(env) if env is not None else {}
        self._secrets = _secret_values(self.config or {})

    def mask(self, text: str) -> str:
        """``text`` with every secret value of ``config`` replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text

    async def propose(self, ctx: RepairContext) -> Proposal:
        """Let opencode edit a scratch copy of the artifacts; return its change as a diff."""
        try:
            return await self._propose(ctx)
        except AgentFailed as e:
            raise AgentFailed(self.mask(str(e))) from None  # no chained unmasked text

    async def _propose(self, ctx: RepairContext) -> Proposal:
        exe = shutil.which(self.binary)
        if exe is None:
            raise AgentSkipped(NOT_INSTALLED)
        if shutil.which("git") is None:
            raise AgentSkipped("git is not installed (the opencode rung reads changes with git)")
        scratch = Path(tempfile.mkdtemp(prefix=f"razar-opencode-{ctx.component}-"))
        try:
            work = scratch / "work"
            skipped = await asyncio.to_thread(self._prepare, work)
            stdout = await self._run(exe, scratch, work, ctx)
            change = await asyncio.to_thread(_read_change, work, self.artifacts, skipped)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        raw = self.mask(stdout.decode("utf-8", "replace"))
        events = parse_events(raw)
        note = "; ".join(
            x
            for x in (
                _listing("dropped edits outside the artifacts", change.dropped),
                _listing("not copied (symlinks, special, huge or opencode's files)", skipped),
            )
            if x
        )
        if not change.diff:
            why = "; ".join(x for x in (event_error(events), note) if x)
            raise AgentFailed("opencode made no change" + (f" ({why})" if why else ""))
        text = last_text(events) or "opencode changed " + ", ".join(change.changed)
        return Proposal(
            agent=self.name,
            rationale=self.mask(f"{text}\n\n({note})" if note else text),
            diff=change.diff,
            raw=raw if len(raw) <= RAW_LIMIT else raw[:RAW_LIMIT] + "\n...(truncated)",
        )

    # -- steps ---------------------------------------------------------------------------

    def _prepare(self, work: Path) -> frozenset[str]:
        """Copy the artifacts into ``work``, commit them, write opencode.json.

        Files are read by a walk from the artifact root that refuses a symlink at every
        step. Returns the artifact paths that were not copied (symlinks, anything reached
        through one, special or huge files, opencode's control files): a change to one of
        them is dropped like an edit outside the artifacts. ``.git`` entries are left out.
        """
        work.mkdir()
        skipped: set[str] = set()
        try:
            with open_root(str(self.artifact_root)) as root_fd:
                for artifact in self.artifacts:
                    parsed = _artifact(artifact)
                    if parsed is None:
                        continue
                    rel, is_dir = parsed
                    if _refused(rel):
                        skipped.add(rel)
                    elif not is_dir:
                        _copy_file(root_fd, rel, rel, work, skipped)
                    else:
                        try:
                            with open_parent(root_fd, posixpath.join(rel, "x")) as dfd:
                                if dfd is not None:
                                    _copy_dir(dfd, rel, work, skipped)
                        except (UnsafePath, OSError):
                            skipped.add(rel)
        except UnsafePath as e:
            raise AgentFailed(str(e)) from None
        git = _Git(work)
        git("init", "--quiet")
        git("add", "--all", "--force")
        git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", "artifacts before repair")
        # never an artifact's own opencode.json: that one is a control file, not copied
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

    def environment(self, scratch: Path, work: Path) -> dict[str, str]:
        """opencode's environment: PATH, locale, TZ, TMPDIR of razard's; HOME and XDG dirs
        inside ``scratch``; then ``env``. Nothing else of razard's (tokens, sockets, GIT_*)."""
        env = {k: v for k, v in os.environ.items() if k in ENV_KEPT or k.startswith("LC_")}
        env.setdefault("PATH", os.defpath)
        home = scratch / "home"
        env["HOME"] = str(home)
        for var, sub in (
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_STATE_HOME", ".local/state"),
        ):
            (home / sub).mkdir(parents=True, exist_ok=True)
            env[var] = str(home / sub)
        env["OPENCODE_DISABLE_AUTOUPDATE"] = "1"
        env.update(self.env)
        env["PWD"] = str(work)  # opencode takes its project directory from $PWD, not getcwd()
        return env

    async def _run(self, exe: str, scratch: Path, work: Path, ctx: RepairContext) -> bytes:
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
        env = self.environment(scratch, work)
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
    """True when relative ``path`` is a declared artifact or lies under an artifact directory.

    As for the patch engine, a directory is declared with a trailing ``/``; ``"./"`` is the
    whole artifact root.
    """
    for artifact in artifacts:
        parsed = _artifact(artifact)
        if parsed is None:
            continue
        rel, is_dir = parsed
        if is_dir:
            if not rel or path.startswith(rel + "/"):
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


def _artifact(artifact: str) -> tuple[str, bool] | None:
    """A declared artifact as (normalised relative POSIX path, is a directory), or None.

    ``"./"`` is the root directory, ``""``; an absolute path, ``..`` or ``.git`` is None.
    """
    is_dir = artifact.endswith("/")
    if not artifact or artifact.startswith("/") or ".." in artifact.split("/"):
        return None
    rel = posixpath.normpath(artifact)
    if rel == ".":
        return ("", True) if is_dir else None  # "." names no file (as in the patch engine)
    if ".git" in rel.split("/"):
        return None
    return rel, is_dir


def _refused(rel: str) -> bool:
    """True for opencode's own files: a control name at the top, ``.opencode`` anywhere."""
    parts = rel.split("/")
    return parts[0] in CONTROL_NAMES or ".opencode" in parts


def _copy_file(dfd: int, name: str, rel: str, work: Path, skipped: set[str]) -> None:
    """Copy the bytes of regular file ``name`` under ``dfd`` to ``work/rel``; else skip it.

    A hard-linked file is skipped: it may be a secret outside the artifacts
    linked in, and opencode's model would see it."""
    try:
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except OSError:
        skipped.add(rel)
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        skipped.add(rel)
        return
    try:
        state = read_regular(dfd, name, MAX_FILE_BYTES)  # no symlink at any step
    except UnsafePath:
        skipped.add(rel)
        return
    if state is None:
        return
    dst = work / rel
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(dst, flags, 0o600)
        try:
            view = memoryview(state.data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, (state.mode & 0o777) | 0o600)
        finally:
            os.close(fd)
    except OSError:
        skipped.add(rel)


def _copy_dir(dfd: int, rel: str, work: Path, skipped: set[str]) -> None:
    """Copy the directory open as ``dfd`` (artifact path ``rel``) without following links."""
    for name in sorted(os.listdir(dfd)):
        path = posixpath.join(rel, name)
        if name == ".git":  # a repository, or a file pointing git at one
            continue
        if _refused(path):
            skipped.add(path)
            continue
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            _copy_file(dfd, name, path, work, skipped)
        elif stat.S_ISDIR(st.st_mode):
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            except OSError:  # swapped for a symlink since the stat, or unreadable
                skipped.add(path)
                continue
            try:
                _copy_dir(sub, path, work, skipped)
            except OSError:
                skipped.add(path)
            finally:
                os.close(sub)
        else:
            skipped.add(path)


def _secret_values(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The string values under secret-named keys anywhere in ``config``, longest first.

    Each also as it appears inside a JSON string, and an ``Authorization`` value's last
    word (the token of ``Bearer <token>``) on its own.
    """
    found: set[str] = set()

    def walk(node: object, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, secret or str(key).lower() in SECRET_KEYS)
        elif isinstance(node, (list, tuple)):
            for value in node:
                walk(value, secret)
        elif secret and isinstance(node, str):
            for value in (node, node.strip(), *node.split()[-1:]):
                if len(value) >= MIN_SECRET:
                    found.add(value)
                    found.add(json.dumps(value)[1:-1])

    walk(config, False)
    return tuple(sorted(found, key=len, reverse=True))


def _listing(label: str, paths: Collection[str]) -> str:
    """``"label: a, b"`` for at most ten sorted paths ("" for none)."""
    if not paths:
        return ""
    shown = sorted(paths)
    more = f" and {len(shown) - 10} more" if len(shown) > 10 else ""
    return f"{label}: {', '.join(shown[:10])}{more}"


def _without_git_vars(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less GIT_DIR, GIT_WORK_TREE & co, which would point git away from the copy."""
    return {k: v for k, v in env.items() if not k.startswith("GIT_")}


def _under_any(path: str, paths: frozenset[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in paths)


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
        if path == CONFIG_FILE:
            continue  # ours
        if inside(path, artifacts) and not _under_any(path, skipped) and not _refused(path):
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

"""The built-in ``registry`` repair agent: known failure signatures -> known fixes, no network.

``config/error_registry.toml`` lists entries::

    [[entry]]
    name = "missing-model-path"               # unique
    pattern = "KeyError: 'model_path'"        # Python regex (re.MULTILINE)
    components = ["*"]                        # optional globs of component names
    description = "..."
    [entry.fix]
    type = "patch"                            # "patch" | "command" | "healer"
    edits = [{ path = "config.toml", search = "...", replace = "..." }]

The pattern is searched in the failure's error, probe output and journal lines
(one text, newline-joined). Fix templates may use ``{component}``, ``{unit}``,
``{layer}`` and ``{<group>}`` for every named group of the pattern, e.g.
``(?P<port>\\d+)`` -> ``{port}``. A fix is one of:

- ``patch``: search/replace edits, returned as a `Proposal` for the patch engine;
- ``command``: an argv run with a deadline (env ``RAZAR_COMPONENT``/``RAZAR_UNIT``/
  ``RAZAR_LAYER``); exit 0 means done, anything else is a failed attempt;
- ``healer``: the layer's healer (``layer = ""``: the component's own), run by the
  layer agent; healed means done, anything else is a failed attempt. Without
  layer agents (a registry used on its own) the entry is skipped with a reason;
- ``unit_kill``: a signal (``signal = "SIGTERM"``) to every process of the
  component's own unit, through systemd (``KillUnit``): never a process outside
  that cgroup, whatever the failure's text says, and never razard's own unit.

Commands run as root with a minimal environment (``PATH``, ``LANG`` and the
``RAZAR_*`` variables): razard's tokens never reach them. A pattern's groups come
from text a component (or anyone able to write the journal) chooses: the shipped
registry never gives them to a command, and a registry that does should only
pass them where any value is harmless.

An entry already tried for the component (a history record by this agent naming it
as ``signature`` or ``entry``) is not proposed again; the next matching one is.

One module (~690 lines): the registry file's parser, the agent that matches an entry and
the deadline runner of its command fixes are one agent, used only when a registry is
configured (loaded lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from razard.configreader import shown_key
from razard.errors import ConfigError, ConfigProblem, RazarError
from razard.layers import LAYERS, Layer
from razard.repair.types import AgentFailed, AgentSkipped, FileEdit, Proposal, RepairContext

#: Where the shipped registry lives in a checkout.
DEFAULT_REGISTRY: Final = Path(__file__).resolve().parents[2] / "config" / "error_registry.toml"
DEFAULT_COMMAND_DEADLINE: Final = 60.0
#: How much of a command's output is kept for the records and error messages.
OUTPUT_LIMIT: Final = 16 * 1024
HEALERS_UNAVAILABLE: Final = "no layer agents to run healers"
#: Runs a layer's healer: (layer, component, unit) -> (healed, what it said).
RunHealer = Callable[[str, str, str], Awaitable[tuple[bool, str]]]
#: Signals every process of a unit (unit, signal number); raises `RazarError` when it cannot.
KillUnit = Callable[[str, int], Awaitable[None]]
#: The whole environment of a command fix (plus RAZAR_COMPONENT/UNIT/LAYER)
COMMAND_ENV: Final[Mapping[str, str]] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
UNIT_KILL_UNAVAILABLE: Final = "no systemd connection to signal the unit"
UNSUCCESSFUL: Final = frozenset({"failed", "refused", "reverted"})

FixType = Literal["patch", "command", "healer", "unit_kill"]
_Problem = Callable[[str, str], None]

_PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONTEXT_FIELDS: Final = frozenset({"component", "unit", "layer"})
_ENTRY_KEYS: Final = frozenset({"name", "pattern", "components", "description", "fix"})
_FIX_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "patch": frozenset({"type", "edits"}),
    "command": frozenset({"type", "argv"}),
    "healer": frozenset({"type", "layer"}),
    "unit_kill": frozenset({"type", "signal"}),
}
#: signals a unit_kill fix may send
UNIT_SIGNALS: Final[Mapping[str, int]] = {
    "SIGTERM": int(signal.SIGTERM),
    "SIGKILL": int(signal.SIGKILL),
    "SIGINT": int(signal.SIGINT),
    "SIGHUP": int(signal.SIGHUP),
    "SIGUSR1": int(signal.SIGUSR1),
    "SIGUSR2": int(signal.SIGUSR2),
}
_EDIT_KEYS: Final = frozenset({"path", "search", "replace"})
#: Programs that run their arguments as code: a pattern's text must never reach them.
SHELLS: Final = frozenset(
    {"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "env"}
)


# --------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class PatchFix:
    """Search/replace edit templates, relative to the component's artifact root."""

    edits: tuple[FileEdit, ...]
    type: Literal["patch"] = "patch"


@dataclass(frozen=True)
class CommandFix:
    """A command template (argv, no shell) that repairs the fault when it exits 0."""

    argv: tuple[str, ...]
    type: Literal["command"] = "command"


@dataclass(frozen=True)
class HealerFix:
    """Run a layer's healer; ``layer == ""`` means the failing component's own layer."""

    layer: Layer | Literal[""] = ""
    type: Literal["healer"] = "healer"


@dataclass(frozen=True)
class UnitKillFix:
    """Signal every process in the failing component's own unit (systemd ``KillUnit``)."""

    signal: str = "SIGTERM"
    type: Literal["unit_kill"] = "unit_kill"


Fix = PatchFix | CommandFix | HealerFix | UnitKillFix


@dataclass(frozen=True)
class RegistryEntry:
    """One known failure signature and its fix."""

    name: str
    pattern: re.Pattern[str]
    fix: Fix
    components: tuple[str, ...] = ("*",)
    description: str = ""

    def applies_to(self, component: str) -> bool:
        """True when ``component`` matches one of the entry's name globs."""
        return any(fnmatch.fnmatchcase(component, glob) for glob in self.components)

    def search(self, ctx: RepairContext) -> re.Match[str] | None:
        """The pattern's match in the failure's error, probe output and journal, if any."""
        if not self.applies_to(ctx.component):
            return None
        return self.pattern.search(failure_text(ctx))


def failure_text(ctx: RepairContext) -> str:
    """The text a registry pattern is searched in: error, probe output, journal lines."""
    return "\n".join([ctx.error, ctx.probe_output, *ctx.journal])


# --------------------------------------------------------------------------- loading


def load_registry(path: Path) -> tuple[RegistryEntry, ...]:
    """Read and validate an error registry; raises `ConfigError` listing every problem."""
    file = str(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError([ConfigProblem(file, "(file)", f"cannot read: {e.strerror or e}")]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(file, "(file)", f"not UTF-8 text: {e}")]) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([ConfigProblem(file, "(syntax)", f"invalid TOML: {e}")]) from e
    return parse_registry(doc, file)


def parse_registry(doc: Mapping[str, Any], file: str = "<registry>") -> tuple[RegistryEntry, ...]:
    """Validate an already-parsed registry document (see `load_registry`)."""
    problems: list[ConfigProblem] = []

    def problem(key: str, reason: str) -> None:
        problems.append(ConfigProblem(file, key, reason))

    for key in doc:
        if key != "entry":
            problem(shown_key(key), 'unknown key; expected "entry" (an array of [[entry]] tables)')
    raw_entries = doc.get("entry", [])
    if not isinstance(raw_entries, list):
        problem("entry", "expected an array of tables ([[entry]])")
        raw_entries = []
    entries: list[RegistryEntry] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_entries):
        entry = _parse_entry(raw, f"entry[{i}]", problem)
        if entry is None:
            continue
        if entry.name in seen:
            problem(
                f"entry[{i}].name",
                f"duplicate name {entry.name!r} (also entry[{seen[entry.name]}])",
            )
            continue
        seen[entry.name] = i
        entries.append(entry)
    if problems:
        raise ConfigError(problems)
    return tuple(entries)


def _parse_entry(raw: Any, prefix: str, problem: _Problem) -> RegistryEntry | None:
    if not isinstance(raw, dict):
        problem(prefix, "expected a table")
        return None
    ok = True
    for key in raw:
        if key not in _ENTRY_KEYS:
            problem(
                f"{prefix}.{shown_key(key)}",
                f"unknown key; expected one of: {', '.join(sorted(_ENTRY_KEYS))}",
            )
            ok = False

    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problem(f"{prefix}.name", "required: a non-empty string")
        ok = False

    pattern: re.Pattern[str] | None = None
    raw_pattern = raw.get("pattern")
    if not isinstance(raw_pattern, str) or not raw_pattern:
        problem(f"{prefix}.pattern", "required: a non-empty regular expression")
        ok = False
    else:
        try:
            pattern = re.compile(raw_pattern, re.MULTILINE)
        except re.error as e:
            problem(f"{prefix}.pattern", f"invalid regular expression: {e}")
            ok = False

    components: tuple[str, ...] = ("*",)
    if "components" in raw:
        value = raw["components"]
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            problem(f"{prefix}.components", "expected a non-empty list of name globs")
            ok = False
        else:
            components = tuple(value)

    description = raw.get("description", "")
    if not isinstance(description, str):
        problem(f"{prefix}.description", "expected a string")
        ok = False

    allowed = _CONTEXT_FIELDS | frozenset(pattern.groupindex if pattern else ())
    fix = _parse_fix(raw.get("fix"), f"{prefix}.fix", allowed, pattern is not None, problem)
    if not ok or fix is None or pattern is None:
        return None
    assert isinstance(name, str) and isinstance(description, str)
    return RegistryEntry(name, pattern, fix, components, description)


def _parse_fix(
    raw: Any, prefix: str, placeholders: frozenset[str], check_placeholders: bool, problem: _Problem
) -> Fix | None:
    if raw is None:
        problem(prefix, "required: a [entry.fix] table")
        return None
    if not isinstance(raw, dict):
        problem(prefix, "expected a table")
        return None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in _FIX_KEYS:
        problem(
            f"{prefix}.type",
            f'must be "patch", "command", "healer" or "unit_kill", got {kind!r}',
        )
        return None
    ok = True
    for key in raw:
        if key not in _FIX_KEYS[kind]:
            allowed = ", ".join(sorted(_FIX_KEYS[kind]))
            problem(
                f"{prefix}.{shown_key(key)}",
                f"unknown key for a {kind} fix; expected one of: {allowed}",
            )
            ok = False

    def templates(key: str, *texts: str) -> None:
        nonlocal ok
        if not check_placeholders:
            return
        for text in texts:
            for m in _PLACEHOLDER.finditer(text):
                if m.group(1) not in placeholders:
                    known = ", ".join("{" + p + "}" for p in sorted(placeholders))
                    problem(key, f"unknown placeholder {m.group(0)}; known: {known}")
                    ok = False

    fix: Fix | None = None
    if kind == "patch":
        edits = _parse_edits(raw.get("edits"), f"{prefix}.edits", problem)
        if edits is None:
            return None
        for i, e in enumerate(edits):
            templates(f"{prefix}.edits[{i}]", e.path, e.search, e.replace)
        fix = PatchFix(edits)
    elif kind == "command":
        argv = raw.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) for a in argv)
            or not argv[0]
        ):
            problem(f"{prefix}.argv", 'required: a non-empty list of strings, e.g. ["/usr/bin/x"]')
            return None
        if not os.path.isabs(argv[0]):
            problem(f"{prefix}.argv", f"the program must be an absolute path, got {argv[0]!r}")
            return None
        templates(f"{prefix}.argv", *argv)
        shell = next((a for a in argv if PurePosixPath(a).name in SHELLS), None)
        from_failure = sorted(
            {
                m.group(0)
                for a in argv
                for m in _PLACEHOLDER.finditer(a)
                if m.group(1) not in _CONTEXT_FIELDS
            }
        )
        if shell is not None and from_failure:
            problem(
                f"{prefix}.argv",
                f"{shell} would run text taken from the failure ({', '.join(from_failure)}) "
                "as code; give it to a program as its own argument instead",
            )
            return None
        fix = CommandFix(tuple(argv))
    elif kind == "unit_kill":
        sig = raw.get("signal", "SIGTERM")
        if sig not in UNIT_SIGNALS:
            problem(f"{prefix}.signal", f"must be one of {', '.join(UNIT_SIGNALS)}, got {sig!r}")
            return None
        fix = UnitKillFix(sig)
    else:
        layer = raw.get("layer", "")
        if layer != "" and layer not in LAYERS:
            problem(f"{prefix}.layer", f"must be one of {', '.join(LAYERS)}, got {layer!r}")
            return None
        fix = HealerFix(layer)
    return fix if ok else None


def _parse_edits(raw: Any, prefix: str, problem: _Problem) -> tuple[FileEdit, ...] | None:
    if not isinstance(raw, list) or not raw:
        problem(prefix, "required for a patch fix: a non-empty list of {path, search, replace}")
        return None
    edits: list[FileEdit] = []
    ok = True
    for i, item in enumerate(raw):
        key = f"{prefix}[{i}]"
        if not isinstance(item, dict):
            problem(key, "expected a table {path, search, replace}")
            ok = False
            continue
        for k in item:
            if k not in _EDIT_KEYS:
                problem(
                    f"{key}.{shown_key(k)}", "unknown key; expected one of: path, replace, search"
                )
                ok = False
        values: dict[str, str] = {}
        for k in ("path", "search", "replace"):
            v = item.get(k)
            if not isinstance(v, str):
                problem(f"{key}.{k}", "required: a string")
                ok = False
            else:
                values[k] = v
        path = values.get("path")
        if path is not None:
            reason = _bad_relative_path(path)
            if reason:
                problem(f"{key}.path", reason)
                ok = False
        if len(values) == 3:
            edits.append(FileEdit(values["path"], values["search"], values["replace"]))
    return tuple(edits) if ok else None


def _bad_relative_path(path: str) -> str:
    if not path:
        return "must not be empty"
    if path.startswith("/") or "\\" in path:
        return f"must be relative to the artifact root, got {path!r}"
    if ".." in PurePosixPath(path).parts:
        return f"must not contain '..', got {path!r}"
    return ""


# --------------------------------------------------------------------------- the agent


class EntryFailed(AgentFailed):
    """A command fix failed; ``entry`` names the registry entry (the message starts with it)."""

    def __init__(self, entry: str, message: str) -> None:
        self.entry = entry
        super().__init__(f"registry:{entry}: {message}")


class RegistryAgent:
    """The ``registry`` rung: the first untried entry matching the failure supplies the fix."""

    kind = "registry"

    def __init__(
        self,
        entries: Sequence[RegistryEntry],
        max_attempts: int = 1,
        command_deadline: float = DEFAULT_COMMAND_DEADLINE,
        run_healer: RunHealer | None = None,
        kill_unit: KillUnit | None = None,
    ) -> None:
        self.name = "registry"
        self.run_healer = run_healer
        self.kill_unit = kill_unit
        self.entries = tuple(entries)
        self.max_attempts = max_attempts
        self.command_deadline = command_deadline

    def tried(self, ctx: RepairContext) -> set[str]:
        """Entries this agent already tried without success in this failure cycle.

        A fix that healed an earlier incident is offered again (after a rollback, or when
        the fault comes back); one that failed last week does not block it today.
        """
        names: set[str] = set()
        for record in ctx.history:
            # aborted (interrupted) or healed attempts did not show the fix to be wrong
            if record.get("agent") != self.name or record.get("status") not in UNSUCCESSFUL:
                continue
            if ctx.cycle_started is not None and float(record.get("unix", 0)) < ctx.cycle_started:
                continue
            if record.get("component", ctx.component) != ctx.component:
                continue
            for key in ("signature", "entry"):
                value = record.get(key)
                if isinstance(value, str) and value:
                    names.add(value)
            rationale = record.get("rationale")
            if isinstance(rationale, str) and rationale.startswith("registry:"):
                names.add(rationale.split(":", 2)[1])
        return names

    def matches(self, ctx: RepairContext) -> list[tuple[RegistryEntry, re.Match[str]]]:
        """Every entry matching the failure, in registry order (tried ones included)."""
        found = []
        for entry in self.entries:
            m = entry.search(ctx)
            if m is not None:
                found.append((entry, m))
        return found

    async def propose(self, ctx: RepairContext) -> Proposal:
        """The first matching, untried entry's fix; see the module docstring."""
        found = self.matches(ctx)
        if not found:
            raise AgentFailed("no registry entry matches")
        tried = self.tried(ctx)
        skipped: list[str] = []
        for entry, match in found:
            if entry.name in tried:
                continue
            values = _values(ctx, match)
            fix = entry.fix
            if isinstance(fix, HealerFix):
                layer = fix.layer or ctx.layer
                if self.run_healer is None:
                    skipped.append(f"{entry.name}: needs the {layer} healer")
                    continue
                healed, said = await self.run_healer(layer, ctx.component, ctx.unit)
                if not healed:
                    raise EntryFailed(entry.name, f"the {layer} healer did not heal: {said}")
                return Proposal(
                    agent=self.name,
                    rationale=f"registry:{entry.name}: ran the {layer} healer ({said})",
                    raw=said,
                )
            if isinstance(fix, UnitKillFix):
                if self.kill_unit is None:
                    skipped.append(f"{entry.name}: {UNIT_KILL_UNAVAILABLE}")
                    continue
                try:
                    await self.kill_unit(ctx.unit, UNIT_SIGNALS[fix.signal])
                except RazarError as e:
                    raise EntryFailed(entry.name, f"cannot signal {ctx.unit}: {e}") from e
                return Proposal(
                    agent=self.name,
                    rationale=f"registry:{entry.name}: sent {fix.signal} to the processes of "
                    f"{ctx.unit} ({entry.description or 'known fix'})",
                    raw=f"matched {match.group(0)!r}",
                )
            if isinstance(fix, PatchFix):
                edits = tuple(
                    FileEdit(
                        _fill(e.path, values), _fill(e.search, values), _fill(e.replace, values)
                    )
                    for e in fix.edits
                )
                stale = _stale_edit(edits, ctx.artifacts)
                if stale:
                    skipped.append(f"{entry.name}: {stale}")
                    continue
                paths = ", ".join(dict.fromkeys(e.path for e in edits))
                return Proposal(
                    agent=self.name,
                    rationale=f"registry:{entry.name}: {entry.description or 'known fix'} "
                    f"(edits {paths})",
                    edits=edits,
                    raw=f"matched {match.group(0)!r}",
                )
            argv = _command(entry.name, fix.argv, values)
            return await self._run_command(ctx, entry, argv)
        if not skipped:
            names = ", ".join(e.name for e, _ in found)
            raise AgentFailed(f"every matching registry entry was already tried: {names}")
        if all(s.endswith(" healer") for s in skipped):
            raise AgentSkipped(f"{HEALERS_UNAVAILABLE} ({'; '.join(skipped)})")
        if all(s.endswith(UNIT_KILL_UNAVAILABLE) for s in skipped):
            raise AgentSkipped(f"{UNIT_KILL_UNAVAILABLE} ({'; '.join(skipped)})")
        raise AgentFailed(f"no matching registry entry applies ({'; '.join(skipped)})")

    async def _run_command(
        self, ctx: RepairContext, entry: RegistryEntry, argv: tuple[str, ...]
    ) -> Proposal:
        # not razard's environment: it holds the agents' and targets' tokens
        env = dict(COMMAND_ENV)
        env.update(RAZAR_COMPONENT=ctx.component, RAZAR_UNIT=ctx.unit, RAZAR_LAYER=ctx.layer)
        try:
            run = await run_with_deadline(argv, deadline=self.command_deadline, env=env)
        except OSError as e:
            raise EntryFailed(entry.name, f"cannot run {argv[0]}: {e.strerror or e}") from e
        output = run.output()
        if run.timed_out:
            raise EntryFailed(
                entry.name,
                f"{argv[0]} did not finish within {self.command_deadline:g}s and was killed; "
                f"output: {output or '(none)'}",
            )
        if run.returncode != 0:
            raise EntryFailed(
                entry.name,
                f"{argv[0]} exited with status {run.returncode}; output: {output or '(none)'}",
            )
        return Proposal(
            agent=self.name,
            rationale=f"registry:{entry.name}: ran {argv[0]} (exit 0)",
            raw=output,
        )


def _values(ctx: RepairContext, match: re.Match[str]) -> dict[str, str]:
    values = {k: v or "" for k, v in match.groupdict().items()}
    values.update(component=ctx.component, unit=ctx.unit, layer=ctx.layer)
    return values


def _fill(template: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _command(entry: str, templates: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """The argv of a command fix, filled; `EntryFailed` when the failure's text would subvert it.

    Each template stays one argument (no shell ever splits or expands it). Text from the
    failure may not turn an argument into an option (a leading ``-`` the template did not
    have) nor carry a NUL, which no argv can hold.
    """
    argv: list[str] = []
    for template in templates:
        arg = _fill(template, values)
        if "\0" in arg:
            raise EntryFailed(entry, f"refused to run: an argument from {template!r} holds a NUL")
        if arg.startswith("-") and not template.startswith("-"):
            raise EntryFailed(
                entry,
                f"refused to run: {template!r} became {arg[:40]!r}, which reads as an option",
            )
        argv.append(arg)
    return tuple(argv)


def _stale_edit(edits: Sequence[FileEdit], artifacts: Mapping[str, str]) -> str:
    """Why an edit cannot apply to the artifact text the context carries ("" if it can)."""
    for e in edits:
        text = artifacts.get(e.path)
        if text is not None and e.search and e.search not in text:
            return f"{e.path} does not contain {e.search!r}"
    return ""


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class CompletedRun:
    """A finished (or killed) child process: exit status, captured output, whether it timed out."""

    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool

    def output(self, limit: int = OUTPUT_LIMIT) -> str:
        """stdout then stderr as text, the tail kept when longer than ``limit``."""
        text = (self.stdout + self.stderr).decode("utf-8", "replace").strip()
        return text if len(text) <= limit else "..." + text[-limit:]


async def run_with_deadline(
    argv: Sequence[str],
    *,
    deadline: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    limit: int = 1024 * 1024,
) -> CompletedRun:
    """Run ``argv`` in its own process group; kill the whole group at ``deadline`` seconds.

    Output beyond ``limit`` bytes per stream is read and discarded. Raises `OSError` when
    the program cannot be started. Cancellation kills the group too.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    out = bytearray()
    err = bytearray()
    timed_out = False

    async def drain(stream: asyncio.StreamReader | None, buf: bytearray) -> None:
        if stream is None:
            return
        while chunk := await stream.read(65536):
            if len(buf) < limit:
                buf += chunk[: limit - len(buf)]

    async def feed() -> None:
        if stdin is None or proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()

    try:
        # the drains end when every holder of the pipes is gone, not only the direct child
        async with asyncio.timeout(deadline):
            await asyncio.gather(feed(), drain(proc.stdout, out), drain(proc.stderr, err))
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None or timed_out:
            _kill_group(proc.pid)
            await proc.wait()
    return CompletedRun(proc.returncode, bytes(out), bytes(err), timed_out)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)

"""The built-in ``registry`` repair agent and its error registry file."""

from __future__ import annotations

import ast
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from razard.errors import ConfigError, RazarError
from razard.repair.registry import (
    DEFAULT_REGISTRY,
    CommandFix,
    EntryFailed,
    HealerFix,
    PatchFix,
    RegistryAgent,
    RegistryEntry,
    UnitKillFix,
    load_registry,
    parse_registry,
)
from razard.repair.types import AgentFailed, AgentSkipped, FileEdit, RepairContext


def _ctx(error: str = "", **kw: Any) -> RepairContext:
    base: dict[str, Any] = {"component": "app", "unit": "razar-app.service", "layer": "throat"}
    base.update(kw)
    return RepairContext(error=error, **base)


def _entry(
    name: str, pattern: str, fix: Any, components: tuple[str, ...] = ("*",)
) -> RegistryEntry:
    return RegistryEntry(name, re.compile(pattern, re.MULTILINE), fix, components)


def _patch(path: str = "app.conf", search: str = "a", replace: str = "b") -> PatchFix:
    return PatchFix((FileEdit(path, search, replace),))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text(text)
    return path


def _keys(error: ConfigError) -> list[str]:
    return [p.key for p in error.problems]


# --------------------------------------------------------------------------- the file


def test_shipped_registry_loads_with_every_fix_type() -> None:
    """config/error_registry.toml is valid and has patch, healer and unit_kill entries, and
    no command: none of its root actions takes its target from the failure's text."""
    entries = load_registry(DEFAULT_REGISTRY)
    assert 3 <= len(entries) <= 5
    assert {type(e.fix) for e in entries} == {PatchFix, HealerFix, UnitKillFix}
    assert len({e.name for e in entries}) == len(entries)


async def test_shipped_registry_heals_the_demo_fault_with_exactly_the_app_conf_edit() -> None:
    """The demo's 'unknown mode brokn' failure gets the single edit mode = brokn -> mode = ok."""
    agent = RegistryAgent(load_registry(DEFAULT_REGISTRY))
    ctx = _ctx(
        "razar-app.service: Main process exited, code=exited, status=2/INVALIDARGUMENT",
        component="demo-app",
        journal=("app.py[4242]: error: unknown mode 'brokn'",),
        artifacts={"app.py": "...", "app.conf": "mode = brokn\n"},
    )
    proposal = await agent.propose(ctx)
    assert proposal.edits == (FileEdit("app.conf", "mode = brokn", "mode = ok"),)
    assert proposal.diff == ""
    assert proposal.agent == "registry"
    assert proposal.rationale.startswith("registry:demo-unknown-mode:")


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("TypeError: EngineArgs.__init__() got an unexpected keyword argument 'max_num_seq'",
         "vllm-max-num-seqs-typo"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
         "cuda-oom-halve-batch"),
        ("OSError: [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): "
         "address already in use", "port-in-use"),
        ("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7)",
         "nccl-collective-timeout"),
    ],
)  # fmt: skip
def test_shipped_registry_recognises_realistic_failures(text: str, name: str) -> None:
    """Each shipped signature matches the log line it was written for, for a model server."""
    agent = RegistryAgent(load_registry(DEFAULT_REGISTRY))
    matched = [e.name for e, _ in agent.matches(_ctx(text, component="llm-model"))]
    assert matched == [name]


def test_every_mistake_is_reported_with_its_key(tmp_path: Path) -> None:
    """All problems of a bad registry come in one ConfigError, each naming its key."""
    path = _write(
        tmp_path,
        """
colour = "blue"

[[entry]]
name = "ok"
pattern = "boom"
[entry.fix]
type = "patch"
edits = [{ path = "a.conf", search = "x", replace = "y" }]

[[entry]]
name = "bad-regex"
pattern = "unclosed ("
[entry.fix]
type = "command"
argv = ["/bin/true"]

[[entry]]
name = "bad-type"
pattern = "x"
[entry.fix]
type = "reboot"

[[entry]]
name = "ok"
pattern = "dup"
components = []
[entry.fix]
type = "healer"
layer = "liver"

[[entry]]
pattern = "x"
severity = "high"
[entry.fix]
type = "patch"
edits = [{ path = "../etc/passwd", search = "x", replace = "{nope}", extra = 1 }]

[[entry]]
name = "relative-command"
pattern = "(?P<port>[0-9]+)"
[entry.fix]
type = "command"
argv = ["fuser", "{port}"]
layer = "root"
""",
    )
    with pytest.raises(ConfigError) as info:
        load_registry(path)
    keys = _keys(info.value)
    assert keys == [
        "colour",
        "entry[1].pattern",
        "entry[2].fix.type",
        "entry[3].components",
        "entry[3].fix.layer",
        "entry[4].severity",
        "entry[4].name",
        "entry[4].fix.edits[0].extra",
        "entry[4].fix.edits[0].path",
        "entry[5].fix.layer",
        "entry[5].fix.argv",
    ]
    text = str(info.value)
    assert f"{path}: entry[1].pattern: invalid regular expression" in text
    assert "must not contain '..'" in text and "unknown key" in text


def test_placeholders_and_command_paths_are_checked(tmp_path: Path) -> None:
    """Unknown {placeholders} and a relative program are problems; named groups are known."""
    doc: dict[str, Any] = {
        "entry": [
            {
                "name": "p",
                "pattern": "port (?P<port>[0-9]+)",
                "fix": {"type": "command", "argv": ["/usr/bin/fuser", "{port}/tcp", "{pid}"]},
            },
            {"name": "q", "pattern": "x", "fix": {"type": "command", "argv": ["fuser"]}},
        ]
    }
    with pytest.raises(ConfigError) as info:
        parse_registry(doc, "r.toml")
    assert _keys(info.value) == ["entry[0].fix.argv", "entry[1].fix.argv"]
    assert "unknown placeholder {pid}" in str(info.value)
    assert "absolute path" in str(info.value)


def test_duplicate_names_and_unreadable_files_are_problems(tmp_path: Path) -> None:
    """Two entries with one name, invalid TOML and a missing file are all ConfigErrors."""
    one = {"name": "a", "pattern": "x", "fix": {"type": "healer"}}
    with pytest.raises(ConfigError, match=r"entry\[1\]\.name: duplicate name 'a'"):
        parse_registry({"entry": [one, one]})
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_registry(_write(tmp_path, "[[entry]\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- matching


async def test_pattern_is_searched_in_error_probe_output_and_journal() -> None:
    """A signature anywhere in the error, the probe output or a journal line is a match."""
    agent = RegistryAgent([_entry("e", r"^fatal: disk (?:full|gone)$", _patch())])
    for ctx in (
        _ctx("fatal: disk full"),
        _ctx("unhealthy", probe_output="GET /health -> 500\nfatal: disk gone"),
        _ctx("exited", journal=("starting", "fatal: disk full", "stopped")),
    ):
        assert (await agent.propose(ctx)).rationale.startswith("registry:e:")
    with pytest.raises(AgentFailed, match="^no registry entry matches$"):
        await agent.propose(_ctx("fatal: disk full soon"))


async def test_components_globs_limit_an_entry() -> None:
    """An entry with component globs applies only to components whose name matches one."""
    agent = RegistryAgent(
        [
            _entry("gpu-only", "boom", _patch(replace="gpu"), ("gpu-*", "*-trainer")),
            _entry("any", "boom", _patch(replace="any")),
        ]
    )
    assert (await agent.propose(_ctx("boom", component="gpu-feeder"))).edits[0].replace == "gpu"
    assert (await agent.propose(_ctx("boom", component="bert-trainer"))).edits[0].replace == "gpu"
    assert (await agent.propose(_ctx("boom", component="api"))).edits[0].replace == "any"


async def test_entries_already_tried_for_the_component_are_skipped() -> None:
    """History records by the registry naming an entry move on to the next matching entry."""
    agent = RegistryAgent(
        [
            _entry("first", "boom", _patch(replace="1")),
            _entry("second", "boom", _patch(replace="2")),
        ]
    )
    tried_first = (
        {"component": "app", "agent": "registry", "signature": "first", "status": "reverted"},
        {"component": "other", "agent": "registry", "entry": "second", "status": "reverted"},
        {"component": "app", "agent": "kimi-cho", "entry": "second", "status": "failed"},
    )
    proposal = await agent.propose(_ctx("boom", history=tried_first))
    assert proposal.edits[0].replace == "2"
    both = (
        *tried_first,
        {"component": "app", "agent": "registry", "entry": "second", "status": "refused"},
    )
    with pytest.raises(AgentFailed, match="already tried: first, second"):
        await agent.propose(_ctx("boom", history=both))


async def test_a_fix_that_healed_or_failed_in_an_older_cycle_is_offered_again() -> None:
    """Only this cycle's unsuccessful tries count: a known fix comes back after a rollback."""
    agent = RegistryAgent([_entry("fix", "boom", _patch(replace="1"))])
    healed = {
        "component": "app",
        "agent": "registry",
        "signature": "fix",
        "status": "healed",
        "unix": 200.0,
    }
    old_failure = {
        "component": "app",
        "agent": "registry",
        "signature": "fix",
        "status": "reverted",
        "unix": 50.0,
    }
    ctx = _ctx("boom", history=(old_failure, healed), cycle_started=100.0)
    assert (await agent.propose(ctx)).edits[0].replace == "1"
    this_cycle = {**old_failure, "unix": 150.0}
    with pytest.raises(AgentFailed, match="already tried: fix"):
        await agent.propose(_ctx("boom", history=(this_cycle,), cycle_started=100.0))


async def test_patch_templates_are_filled_and_stale_ones_passed_over() -> None:
    """{component} and named groups are filled in; a search absent from the file is skipped."""
    entries = [
        _entry("stale", "limit (?P<n>[0-9]+)", _patch("{component}.conf", "max = 1", "max = 2")),
        _entry("fill", "limit (?P<n>[0-9]+)", _patch("{component}.conf", "max = 5", "max = {n}")),
    ]
    ctx = _ctx("over limit 64", artifacts={"app.conf": "max = 5\n"})
    proposal = await RegistryAgent(entries).propose(ctx)
    assert proposal.edits == (FileEdit("app.conf", "max = 5", "max = 64"),)
    with pytest.raises(AgentFailed, match=r"stale: app.conf does not contain 'max = 1'"):
        await RegistryAgent(entries[:1]).propose(ctx)


async def test_healer_fix_without_layer_agents_is_skipped() -> None:
    """Without layer agents a healer entry skips the rung with a reason; a later matching
    patch entry still runs."""
    healer = _entry("nccl", "NCCL timeout", HealerFix("sacral"))
    with pytest.raises(AgentSkipped, match="no layer agents to run healers"):
        await RegistryAgent([healer]).propose(_ctx("NCCL timeout"))
    agent = RegistryAgent([healer, _entry("fallback", "NCCL", _patch())])
    assert (await agent.propose(_ctx("NCCL timeout"))).rationale.startswith("registry:fallback:")


async def test_healer_fix_runs_the_named_layer_healer() -> None:
    """A healer entry runs the layer's healer: healed is a proposal without edits (the
    handover verifies it), not healed is a failed attempt naming the healer's reason."""
    calls: list[tuple[str, str, str]] = []

    def runner(healed: bool, said: str) -> Any:
        async def run(layer: str, component: str, unit: str) -> tuple[bool, str]:
            calls.append((layer, component, unit))
            return healed, said

        return run

    ctx = _ctx("NCCL timeout")
    own = _entry("own-layer", "NCCL timeout", HealerFix(""))
    agent = RegistryAgent([own], run_healer=runner(True, "healed: GPU flushed"))
    proposal = await agent.propose(ctx)
    assert proposal.edits == () and proposal.diff == ""
    assert "ran the " + ctx.layer + " healer (healed: GPU flushed)" in proposal.rationale
    assert calls == [(ctx.layer, ctx.component, ctx.unit)]
    root = _entry("net", "NCCL timeout", HealerFix("root"))
    agent = RegistryAgent([root], run_healer=runner(False, "not healed: target unreachable"))
    with pytest.raises(AgentFailed, match="root healer did not heal: not healed: target"):
        await agent.propose(ctx)
    assert calls[-1][0] == "root"


# --------------------------------------------------------------------------- commands


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fix.py"
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_command_exit_0_is_a_proposal_without_edits(tmp_path: Path) -> None:
    """A command that exits 0 is the repair: no edits, the rationale names the program."""
    out = tmp_path / "env.txt"
    script = _script(
        tmp_path,
        f"open({str(out)!r}, 'w').write(' '.join(os.environ[k] for k in "
        "('RAZAR_COMPONENT', 'RAZAR_UNIT', 'RAZAR_LAYER')) + ' ' + sys.argv[1])\n"
        "print('freed port')",
    )
    agent = RegistryAgent(
        [_entry("port", r"port (?P<port>\d+) busy", CommandFix((script, "{port}")))]
    )
    proposal = await agent.propose(_ctx("port 8000 busy"))
    assert proposal.rationale == f"registry:port: ran {script} (exit 0)"
    assert proposal.edits == () and proposal.diff == ""
    assert "freed port" in proposal.raw
    assert out.read_text() == "app razar-app.service throat 8000"


async def test_command_exit_1_fails_with_its_output(tmp_path: Path) -> None:
    """A command that exits non-zero fails the attempt, quoting its status and output."""
    script = _script(tmp_path, "print('fuser: no process found', file=sys.stderr)\nsys.exit(1)")
    agent = RegistryAgent([_entry("port", "busy", CommandFix((script,)))])
    with pytest.raises(EntryFailed) as info:
        await agent.propose(_ctx("busy"))
    assert info.value.entry == "port"
    assert "exited with status 1" in str(info.value)
    assert "fuser: no process found" in str(info.value)
    assert str(info.value).startswith("registry:port:")


async def test_hanging_command_is_killed_at_the_deadline(tmp_path: Path) -> None:
    """A command still running at the deadline is killed with its children; the attempt fails."""
    pid_file = tmp_path / "child.pid"
    script = _script(
        tmp_path,
        "import subprocess\n"
        f"open({str(pid_file)!r}, 'w').write(str(subprocess.Popen(['sleep', '300']).pid))\n"
        "print('waiting', flush=True)\ntime.sleep(300)",
    )
    agent = RegistryAgent([_entry("hang", "busy", CommandFix((script,)))], command_deadline=1.0)
    started = time.monotonic()
    with pytest.raises(
        AgentFailed, match=r"did not finish within 1s and was killed; output: waiting"
    ):
        await agent.propose(_ctx("busy"))
    assert time.monotonic() - started < 10
    # SIGKILL was sent; dying is the kernel's work, and on a busy machine it can lag
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)  # noqa: ASYNC251 - a test waiting on the kernel, nothing else to run
    assert not _alive(child)


async def test_shipped_port_in_use_fix_signals_only_the_components_own_unit() -> None:
    """The shipped port-in-use entry signals the failing component's unit (KillUnit), whatever
    port the failure names: the port is text the component chose, never a target."""
    entries = load_registry(DEFAULT_REGISTRY)
    entry = next(e for e in entries if e.name == "port-in-use")
    assert isinstance(entry.fix, UnitKillFix)
    killed: list[tuple[str, int]] = []

    async def kill_unit(unit: str, sig: int) -> None:
        killed.append((unit, sig))

    error = (
        "OSError: [Errno 98] error while attempting to bind on address ('127.0.0.1', 9360): "
        "address already in use"
    )
    proposal = await RegistryAgent(entries, kill_unit=kill_unit).propose(_ctx(error))
    assert killed == [("razar-app.service", signal.SIGTERM)]
    assert proposal.rationale.startswith("registry:port-in-use: sent SIGTERM to the processes of")
    with pytest.raises(AgentSkipped, match="no systemd connection"):
        await RegistryAgent(entries).propose(_ctx(error))


async def test_a_unit_that_cannot_be_signalled_fails_the_attempt() -> None:
    """KillUnit refused (razard's own unit, no such unit): a failed attempt naming why."""

    async def refuse(unit: str, sig: int) -> None:
        raise RazarError(f"{unit} is razard's own unit")

    agent = RegistryAgent([_entry("k", "busy", UnitKillFix())], kill_unit=refuse)
    with pytest.raises(AgentFailed, match="cannot signal razar-app.service: .*own unit"):
        await agent.propose(_ctx("busy"))


def test_unit_kill_takes_only_known_signals(tmp_path: Path) -> None:
    """A unit_kill fix names one of a few signals; anything else is a config error."""
    path = tmp_path / "r.toml"
    path.write_text(
        '[[entry]]\nname = "k"\npattern = "x"\n[entry.fix]\ntype = "unit_kill"\n'
        'signal = "SIGSTOP"\n'
    )
    with pytest.raises(ConfigError, match=r"entry\[0\]\.fix\.signal: must be one of SIGTERM"):
        load_registry(path)


async def test_a_command_gets_a_minimal_environment_without_razards_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command fix runs with PATH, LANG and RAZAR_* only: none of razard's tokens."""
    monkeypatch.setenv("RAZAR_OPENAI_TOKEN", "sk-canary-registry-env")
    monkeypatch.setenv("HOME", "/root")
    script = _script(tmp_path, "print(sorted(os.environ))\nprint(dict(os.environ))")
    agent = RegistryAgent([_entry("env", "busy", CommandFix((script,)))])
    proposal = await agent.propose(_ctx("busy"))
    assert "sk-canary-registry-env" not in proposal.raw
    names = ast.literal_eval(proposal.raw.splitlines()[0])
    assert set(names) - {"LC_CTYPE"} == {
        "PATH",
        "LANG",
        "RAZAR_COMPONENT",
        "RAZAR_UNIT",
        "RAZAR_LAYER",
    }


async def test_missing_program_fails_the_attempt(tmp_path: Path) -> None:
    """A command whose program does not exist fails the attempt with the reason."""
    agent = RegistryAgent([_entry("gone", "busy", CommandFix((str(tmp_path / "nope"),)))])
    with pytest.raises(AgentFailed, match="cannot run .*nope"):
        await agent.propose(_ctx("busy"))


def test_agent_identity() -> None:
    """The agent presents itself to the roster as registry/registry with its attempt budget."""
    agent = RegistryAgent([], max_attempts=3, command_deadline=5)
    assert (agent.name, agent.kind, agent.max_attempts) == ("registry", "registry", 3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited, it only waits to be reaped
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False

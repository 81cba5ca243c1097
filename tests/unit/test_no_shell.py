"""Healer and registry commands never pass untrusted text through a shell: the code paths are
scanned for shell use, and hostile component names and error text run through the registry's
command fix and the healer runner without a single marker file appearing."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agents.healer import HealerMetrics, HealerRunner
from razard.config import parse_config
from razard.errors import ConfigError
from razard.journal import EventLog
from razard.repair.registry import SHELLS, RegistryAgent, parse_registry
from razard.repair.types import AgentFailed, RepairContext

REPO = Path(__file__).resolve().parents[2]
#: The code that runs healers, registry commands and the opencode CLI.
SCANNED = sorted(
    [
        REPO / "agents" / "healer.py",
        REPO / "agents" / "confinement.py",
        *(REPO / "agents" / "healing").glob("*.py"),
        REPO / "razard" / "repair" / "registry.py",
        REPO / "razard" / "repair" / "opencode_agent.py",
        REPO / "razard" / "repair" / "handover.py",
        *(REPO / "scripts" / "chakra_healing").glob("*.py"),
    ]
)
#: Calls that always go through /bin/sh.
SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
    ("loop", "subprocess_shell"),
}


def _dotted(node: ast.expr) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute):
        base = node.value
        name = base.id if isinstance(base, ast.Name) else getattr(base, "attr", "")
        return (name, node.attr)
    return None


def shell_uses(path: Path) -> list[str]:
    """Every place in ``path`` that runs something through a shell, as ``file:line: what``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[str] = []
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    found.append(f"{where}:{node.lineno}: shell={ast.unparse(kw.value)}")
            name = _dotted(node.func)
            if name in SHELL_CALLS or (name is not None and name[1] == "create_subprocess_shell"):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node.func)}()")
        if isinstance(node, ast.List | ast.Tuple):
            items = node.elts
            for k in range(len(items) - 2):
                prog, flag, script = items[k], items[k + 1], items[k + 2]
                if (
                    isinstance(prog, ast.Constant)
                    and isinstance(prog.value, str)
                    and Path(prog.value).name in SHELLS
                    and isinstance(flag, ast.Constant)
                    and flag.value == "-c"
                    and not (isinstance(script, ast.Constant) and isinstance(script.value, str))
                ):
                    found.append(
                        f"{where}:{node.lineno}: {prog.value} -c with a script built at run time"
                    )
    return found


def test_the_scanner_finds_each_kind_of_shell_use(tmp_path: Path) -> None:
    """The scanner itself flags shell=True, os.system, os.popen, *_shell and sh -c with text."""
    bad = tmp_path / "probe.py"
    bad.write_text(
        "import os, subprocess, asyncio\n"
        "subprocess.run('x', shell=True)\n"
        "subprocess.Popen(['x'], shell=flag)\n"
        "os.system('x')\n"
        "os.popen('x')\n"
        "subprocess.getoutput('x')\n"
        "asyncio.create_subprocess_shell('x')\n"
        "argv = ['/bin/sh', '-c', f'restart {name}']\n"
        "ok = ['/bin/sh', '-c', 'exec \"$0\"', name]\n"
        "subprocess.run(['x'], shell=False)\n"
    )
    hits = shell_uses(bad)
    assert [h.split(": ", 1)[1] for h in hits] == [
        "shell=True",
        "shell=flag",
        "os.system()",
        "os.popen()",
        "subprocess.getoutput()",
        "asyncio.create_subprocess_shell()",
        "/bin/sh -c with a script built at run time",
    ]


def test_healer_registry_and_opencode_code_never_use_a_shell() -> None:
    """No subprocess call in the healer, registry or opencode paths goes through a shell."""
    hits = [h for path in SCANNED for h in shell_uses(path)]
    assert not hits, "\n".join(hits)
    print(f"files scanned for shell use: {len(SCANNED)}, shell uses found: 0")


def test_shell_healers_never_expand_what_razard_passes_in() -> None:
    """The shell healer wrappers hand over to Python: no eval, no $RAZAR_COMPONENT/UNIT use."""
    scripts = sorted((REPO / "scripts" / "chakra_healing").glob("*.sh"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        assert "eval" not in text.split(), script
        for name in ("RAZAR_COMPONENT", "RAZAR_UNIT", "RAZAR_LAYER"):
            assert f"${name}" not in text and f"${{{name}" not in text, (script, name)


# --------------------------------------------------------------------------- behaviour


def hostile(markers: Path) -> str:
    """Text that creates a marker file under ``markers`` if any shell ever evaluates it."""
    m = markers
    return (
        f"$(touch {m}/dollar) `touch {m}/backtick`; touch {m}/semicolon "
        f"| touch {m}/pipe && touch {m}/and || touch {m}/or\n touch {m}/newline "
        f"> {m}/redirect $((1+1)) ${{IFS}}touch${{IFS}}{m}/ifs & touch {m}/background"
    )


def test_registry_command_gets_hostile_error_text_as_one_literal_argument(tmp_path: Path) -> None:
    """A pattern group full of shell syntax reaches the command as one argument, never run."""
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "argv.json"
    program = tmp_path / "record-argv"
    program.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'component': os.environ['RAZAR_COMPONENT']}}, "
        f"open({str(out)!r}, 'w'))\n"
    )
    program.chmod(0o755)
    entries = parse_registry(
        {
            "entry": [
                {
                    "name": "echo-it",
                    "pattern": r"fatal: (?P<what>.*)",
                    "fix": {"type": "command", "argv": [str(program), "{what}", "--", "{unit}"]},
                }
            ]
        }
    )
    text = hostile(markers).replace("\n", " ")
    ctx = RepairContext(
        component=f"web;touch {markers}/component",
        unit=f"razar-$(touch {markers}/unit).service",
        layer="throat",
        error=f"fatal: {text}",
    )
    agent = RegistryAgent(entries, command_deadline=30)
    proposal = asyncio.run(agent.propose(ctx))
    assert proposal.rationale.startswith("registry:echo-it: ran")
    seen = json.loads(out.read_text())
    assert seen == {"argv": [text, "--", ctx.unit], "component": ctx.component}
    assert sorted(os.listdir(markers)) == []
    print(f"shell metacharacter markers created by the registry command: 0/{text.count('touch')}")


def test_registry_value_that_would_read_as_an_option_is_not_run(tmp_path: Path) -> None:
    """Error text that would turn an argument into an option (``--kill``) stops the command."""
    marker = tmp_path / "ran"
    entries = parse_registry(
        {
            "entry": [
                {
                    "name": "kill-port",
                    "pattern": r"port (?P<port>\S+) busy",
                    "fix": {"type": "command", "argv": ["/usr/bin/touch", "{port}"]},
                }
            ]
        }
    )
    ctx = RepairContext(
        component="web",
        unit="razar-web.service",
        layer="throat",
        error=f"port --reference={marker} busy",
    )
    with pytest.raises(AgentFailed, match="reads as an option"):
        asyncio.run(RegistryAgent(entries).propose(ctx))
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["/bin/sh", "-c", "fuser -k {port}/tcp"],
        ["/usr/bin/bash", "-c", "echo {what}"],
        ["/usr/bin/env", "sh", "-c", "x {what}"],
    ],
)
def test_registry_refuses_a_shell_given_failure_text(argv: list[str]) -> None:
    """A command fix that hands a pattern's text to a shell is a config error naming the key."""
    with pytest.raises(ConfigError) as info:
        parse_registry(
            {
                "entry": [
                    {
                        "name": "shelly",
                        "pattern": r"(?P<port>\d+) (?P<what>.*)",
                        "fix": {"type": "command", "argv": argv},
                    }
                ]
            },
            "error_registry.toml",
        )
    (problem,) = info.value.problems
    assert problem.key == "entry[0].fix.argv" and "as code" in problem.reason


def test_registry_allows_a_shell_given_only_config_values() -> None:
    """A shell command using only {component}/{unit}/{layer} (from razard's config) is allowed."""
    (entry,) = parse_registry(
        {
            "entry": [
                {
                    "name": "ok",
                    "pattern": "x",
                    "fix": {"type": "command", "argv": ["/bin/sh", "-c", "exit 0", "{unit}"]},
                }
            ]
        }
    )
    assert entry.name == "ok"


def test_healer_runner_passes_hostile_names_as_plain_environment(tmp_path: Path) -> None:
    """A healer run for a hostile component/unit/why gets them verbatim and runs no shell."""
    markers = tmp_path / "markers"
    markers.mkdir()
    seen = tmp_path / "env.json"
    healer = tmp_path / "healer"
    healer.write_text(
        f"#!{sys.executable}\nimport json, os\n"
        f"keys = ('RAZAR_COMPONENT', 'RAZAR_UNIT', 'RAZAR_LAYER')\n"
        f"json.dump({{k: os.environ[k] for k in keys}}, open({str(seen)!r}, 'w'))\n"
        "print(json.dumps({'healed_by': 'test', 'steps': []}))\n"
    )
    healer.chmod(0o755)
    config = parse_config(
        {
            "razard": {"state_dir": str(tmp_path / "state"), "bus": "user"},
            "chakra": {"runtime_dir": str(tmp_path / "run"), "throat": {"healer": [str(healer)]}},
            "component": [
                {"name": "api", "layer": "throat", "priority": 10, "command": ["/bin/true"]}
            ],
        },
        tmp_path / "razard.toml",
        env={},
    )
    runner = HealerRunner(
        config.chakra,
        state_dir=tmp_path / "state",
        bus="user",
        config_path=tmp_path / "razard.toml",
        events=EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no-journald")),
        metrics=HealerMetrics(CollectorRegistry()),
    )
    text = hostile(markers)
    run = asyncio.run(
        runner.run("throat", component=f"api{text}", unit=f"razar-{text}.service", why=text)
    )
    assert run.result == "healed", run.reason
    env = json.loads(seen.read_text())
    assert env == {
        "RAZAR_COMPONENT": f"api{text}",
        "RAZAR_UNIT": f"razar-{text}.service",
        "RAZAR_LAYER": "throat",
    }
    assert sorted(os.listdir(markers)) == []
    print(f"shell metacharacter markers created by the healer runner: 0/{text.count('touch')}")

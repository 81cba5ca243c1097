"""Hostile config and roster files: hypothesis-made malformed documents, and the razard CLI.

Every malformed file gives a clean error naming the file and the key, a non-zero exit and no
traceback; razard starts nothing (no state directory, no unit file). Extends
test_config_properties.py (razard.toml's parser) to the roster ``razar_ai_agents.json`` and to
the command line.
"""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from razard.cli import cli
from razard.errors import ConfigError
from razard.repair.registry import parse_registry
from razard.repair.roster import (
    KINDS,
    MAX_AGENT_TIMEOUT,
    MAX_MAX_ATTEMPTS,
    Roster,
    load_roster,
    parse_roster,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "razar_ai_agents.json"
RAZARD = Path(sys.executable).parent / "razard"
SRC = Path("/etc/razard/razar_ai_agents.json")
AGENTS, REGISTRY = "razar_ai_agents.json", "error_registry.toml"

PROPS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

AGENT_KEYS = [
    "name", "kind", "endpoint", "endpoint_env", "auth", "token_env", "token_file", "model",
    "timeout", "max_attempts", "config", "bogus",
]  # fmt: skip
STRINGS = [
    "", " ", "registry", "openai", "opencode", "bearer", "none", "http://127.0.0.1:1/v1",
    "ftp://x", "KIMI_K2_URL", "1BAD", "a\n", "a\x00b", "~", "~nobody-razar/x", "\ud800",
    "é", "crown", "x" * 70,
]  # fmt: skip

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(STRINGS),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(AGENT_KEYS), st.text(max_size=8)), inner, max_size=5
        ),
    ),
    max_leaves=12,
)
agent_objects = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.sampled_from(["registry", "crown", "k2", "A", ""]), json_values),
        "kind": st.one_of(st.sampled_from([*KINDS, "grpc"]), json_values),
        "endpoint": st.one_of(st.sampled_from(STRINGS), json_values),
        "endpoint_env": st.one_of(st.sampled_from(STRINGS), json_values),
        "auth": st.one_of(st.sampled_from(["none", "bearer", "basic"]), json_values),
        "token_env": st.one_of(st.sampled_from(STRINGS), json_values),
        "token_file": st.one_of(st.sampled_from(STRINGS), json_values),
        "model": json_values,
        "timeout": st.one_of(st.floats(allow_nan=True), st.integers(-5, 10**6), json_values),
        "max_attempts": st.one_of(st.integers(-5, 1000), json_values),
        "config": json_values,
        "bogus": json_values,
    },
)
roster_documents = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "active": st.one_of(st.sampled_from(["registry", "crown", "nope"]), json_values),
            "agents": st.one_of(st.lists(agent_objects, max_size=4), json_values),
            "extra": json_values,
        },
    ),
)


def check_roster(data: Any, source: Path = SRC) -> Roster | None:
    """parse_roster gives a sound Roster, or a ConfigError whose problems all name the file."""
    try:
        roster = parse_roster(data, source)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == str(source) and p.key and p.reason
            assert str(p).startswith(f"{source}: ")
            assert not any(ord(c) < 32 or ord(c) == 127 for c in p.key), p.key
        return None
    names = [a.name for a in roster.agents]
    assert roster.agents and len(set(names)) == len(names)
    assert roster.active in (*names, "")
    for a in roster.agents:
        assert a.kind in KINDS
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", a.name)
        assert math.isfinite(a.timeout) and 0 < a.timeout <= MAX_AGENT_TIMEOUT
        assert 1 <= a.max_attempts <= MAX_MAX_ATTEMPTS
        assert a.auth in ("none", "bearer")
    return roster


@PROPS
@given(roster_documents)
def test_random_roster_documents_give_a_roster_or_named_problems(data: Any) -> None:
    """Any JSON document gives a sound roster or a ConfigError naming the file and keys."""
    check_roster(data)


@PROPS
@given(st.data())
def test_mutated_shipped_roster_never_crashes(data: st.DataObject) -> None:
    """The shipped roster with one value replaced, removed or added is judged cleanly."""
    doc = json.loads(SHIPPED.read_text())
    agents = doc["agents"]
    i = data.draw(st.integers(0, len(agents) - 1), label="agent")
    key = data.draw(st.sampled_from(AGENT_KEYS), label="key")
    how = data.draw(st.sampled_from(["set", "delete"]), label="how")
    mutated = copy.deepcopy(doc)
    if how == "delete":
        mutated["agents"][i].pop(key, None)
    else:
        mutated["agents"][i][key] = data.draw(json_values, label="value")
    check_roster(mutated)


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("name", 7, "name"),
    ("name", "Not Valid!", "name"),
    ("kind", ["openai"], "kind"),
    ("kind", "grpc", "kind"),
    ("endpoint", "ftp://x", "endpoint"),
    ("endpoint_env", "1-BAD", "endpoint_env"),
    ("auth", "basic", "auth"),
    ("token_env", {"a": 1}, "token_env"),
    ("token_file", "a\x00b", "token_file"),
    ("timeout", "120", "timeout"),
    ("timeout", -1, "timeout"),
    ("timeout", float("nan"), "timeout"),
    ("timeout", float("inf"), "timeout"),
    ("timeout", 10**400, "timeout"),
    ("max_attempts", 0, "max_attempts"),
    ("max_attempts", 2.5, "max_attempts"),
    ("max_attempts", True, "max_attempts"),
    ("config", {"provider": {}}, "config"),
    ("bogus", 1, "bogus"),
]


@pytest.mark.parametrize(("key", "value", "named"), WRONG_TYPES)
def test_each_bad_agent_value_is_named_by_its_key(key: str, value: Any, named: str) -> None:
    """A bad value in agents[1] is reported as agents[1].<key>, nothing else breaks."""
    doc = json.loads(SHIPPED.read_text())
    doc["agents"][1][key] = value
    with pytest.raises(ConfigError) as info:
        parse_roster(doc, SRC)
    keys = [p.key for p in info.value.problems]
    assert f"agents[1].{named}" in keys, keys
    assert all(k.startswith("agents[1]") for k in keys), keys


@PROPS
@given(raw=st.binary(max_size=400))
def test_roster_file_of_random_bytes(tmp_path: Path, raw: bytes) -> None:
    """Random bytes in the roster file give a roster or a ConfigError naming the file."""
    path = tmp_path / "razar_ai_agents.json"
    path.write_bytes(raw)
    try:
        load_roster(path)
    except ConfigError as e:
        assert all(p.file == str(path) and p.key for p in e.problems)


ROSTER_FRAGMENTS = [
    "{", "}", "[", "]", ",", ":", '"agents"', '"active"', '"name"', '"kind"', '"timeout"',
    '"registry"', '"openai"', "1", "-1", "1e999", "NaN", "Infinity", "null", "true", '"\\ud800"',
    '"\\u0000"', "[" * 5000, '{"a":' * 3000, "9" * 5000,
]  # fmt: skip


@PROPS
@given(st.lists(st.sampled_from(ROSTER_FRAGMENTS), max_size=30).map("".join))
def test_roster_file_of_json_like_fragments(tmp_path: Path, text: str) -> None:
    """JSON-like fragments (deep nesting, huge numbers, NaN) never crash load_roster."""
    path = tmp_path / "razar_ai_agents.json"
    path.write_text(text)
    try:
        load_roster(path)
    except ConfigError as e:
        assert all(p.file == str(path) and p.key for p in e.problems)


# --------------------------------------------------------------------------- the CLI

GOOD_TOML = """\
[razard]
state_dir = "{state}"
bus = "user"
unit_dir = "{units}"

[[component]]
name = "api"
layer = "throat"
priority = 1
command = ["/bin/sleep", "1000"]
"""


Case = tuple[str, str, str | bytes, dict[str, str | bytes], str]


def bad_files(tmp: Path) -> list[Case]:
    """(case, file the problem is in, razard.toml content, files beside it, key named)."""
    good = GOOD_TOML.format(state=tmp / "state", units=tmp / "units")
    cfg = str(tmp / "razard.toml")
    roster, registry = str(tmp / AGENTS), str(tmp / REGISTRY)
    shipped = json.loads(SHIPPED.read_text())
    bad_timeout = copy.deepcopy(shipped)
    bad_timeout["agents"][2]["timeout"] = "soon"
    api = "component[0] (api)"
    shell_fix = (
        '[[entry]]\nname = "x"\npattern = "port (?P<port>.*)"\n'
        '[entry.fix]\ntype = "command"\nargv = ["/bin/sh", "-c", "fuser -k {port}/tcp"]\n'
    )
    return [
        ("toml syntax", cfg, good + "\n[[component]\n", {}, "(syntax)"),
        ("binary config", cfg, b"\x7fELF\x00\x00\xff\xfe", {}, "(file)"),
        ("wrong layer", cfg, good.replace('"throat"', '"navel"'), {}, f"{api}.layer"),
        ("priority a string", cfg, good.replace("= 1\n", '= "1"\n'), {}, f"{api}.priority"),
        ("unknown key", cfg, good + 'bogus = "x"\n', {}, f"{api}.bogus"),
        ("relative command", cfg, good.replace("/bin/sleep", "sleep"), {}, f"{api}.command"),
        ("table twice", cfg, good + "[razard]\n", {}, "(syntax)"),
        ("port range", cfg, good.replace('"user"', '"user"\nmetrics_port = 70000'), {},
         "razard.metrics_port"),
        ("roster syntax", roster, good, {AGENTS: '{"agents": ['}, "(syntax)"),
        ("roster an array", roster, good, {AGENTS: "[1, 2]"}, "(document)"),
        ("roster bad timeout", roster, good, {AGENTS: json.dumps(bad_timeout)},
         "agents[2].timeout"),
        ("roster duplicate key", roster, good, {AGENTS: '{"active": "a", "active": "b"}'},
         "(syntax)"),
        ("roster not UTF-8", roster, good, {AGENTS: b'{"agents": ["\xff"]}'}, "(file)"),
        ("roster odd key", roster, good, {AGENTS: '{"agents": [], "\\u001b[2J": 1}'},
         '"\\u001b[2J"'),
        ("registry syntax", registry, good, {REGISTRY: "[[entry]\n"}, "(syntax)"),
        ("registry not UTF-8", registry, good, {REGISTRY: b"\xff\xfe"}, "(file)"),
        ("registry shell fix", registry, good, {REGISTRY: shell_fix}, "entry[0].fix.argv"),
        ("registry bad regex", registry, good, {REGISTRY: '[[entry]]\nname = "x"\npattern = "("\n'
         '[entry.fix]\ntype = "healer"\n'}, "entry[0].pattern"),
    ]  # fmt: skip


def write_case(tmp: Path, config: str | bytes, beside: dict[str, str | bytes]) -> Path:
    path = tmp / "razard.toml"
    path.write_bytes(config if isinstance(config, bytes) else config.encode())
    for name, content in beside.items():
        (tmp / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def run_razard(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RAZARD), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "DBUS_SESSION_BUS_ADDRESS": "unix:path=/nonexistent"},
    )


@pytest.mark.parametrize("case", [c[0] for c in bad_files(Path("/x"))])
def test_razard_refuses_a_bad_file_naming_file_and_key(tmp_path: Path, case: str) -> None:
    """`razard --config` and `razard check-config` refuse it: exit code, file and key, no trace."""
    (name, file, config, beside, key) = next(c for c in bad_files(tmp_path) if c[0] == case)
    path = write_case(tmp_path, config, beside)
    started = run_razard("--config", str(path))
    checked = run_razard("check-config", str(path))
    for p, code in ((started, 2), (checked, 1)):
        assert p.returncode == code, (name, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr + p.stdout
        assert f"{file}: {key}" in p.stderr, p.stderr
    assert not (tmp_path / "state").exists(), "razard created its state dir"
    assert not (tmp_path / "units").exists(), "razard wrote unit files"
    print(
        f"{name}: exit {started.returncode}/{checked.returncode}: {checked.stderr.splitlines()[0]}"
    )


def test_missing_and_unreadable_config_are_clean_errors(tmp_path: Path) -> None:
    """A missing config or a directory in its place: exit non-zero, the path named, no trace."""
    (tmp_path / "dir.toml").mkdir()
    for path in (tmp_path / "missing.toml", tmp_path / "dir.toml"):
        for args, code in ((("--config", str(path)), 2), (("check-config", str(path)), 1)):
            p = run_razard(*args)
            assert p.returncode == code and str(path) in p.stderr, p.stderr
            assert "Traceback" not in p.stderr


CLI_PROPS = settings(PROPS, max_examples=150)


@CLI_PROPS
@given(
    text=st.one_of(
        st.text(max_size=200),
        st.lists(
            st.sampled_from(
                [
                    "[razard]\n",
                    "[[component]]\n",
                    'name = "a"\n',
                    'layer = "root"\n',
                    "priority = 1\n",
                    'command = ["/bin/true"]\n',
                    'bus = "user"\n',
                    "=",
                    "[",
                    "probe = { type = 'tcp' }\n",
                    "restart = 5\n",
                    "\n",
                    '"',
                    "1e999",
                ]
            ),  # fmt: skip
            max_size=12,
        ).map("".join),
    ),
    roster=st.one_of(st.none(), roster_documents.map(lambda d: json.dumps(d, allow_nan=True))),
)
def test_check_config_never_tracebacks(tmp_path: Path, text: str, roster: str | None) -> None:
    """check-config on random config and roster files exits 0 or 1 with every problem named."""
    path = tmp_path / "razard.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    agents = tmp_path / "razar_ai_agents.json"
    if roster is None:
        agents.unlink(missing_ok=True)
    else:
        agents.write_text(roster)
    result = CliRunner().invoke(cli, ["check-config", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        lines = result.stderr.splitlines()
        assert lines[-1].startswith(f"{path}: ") and "problem(s)" in lines[-1]
        for line in lines[:-1]:
            if line.startswith("warning:"):
                continue
            assert line.startswith((f"{path}: ", f"{agents}: ", "environment: ")), line


REGISTRY_KEYS = ["entry", "name", "pattern", "components", "description", "fix", "type", "argv",
                 "edits", "layer", "path", "search", "replace", ""]  # fmt: skip
registry_values = st.recursive(
    st.one_of(
        json_scalars,
        st.sampled_from(["patch", "command", "healer", "/bin/sh", "-c", "(?P<p>.*)", "{p}", "("]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(REGISTRY_KEYS), inner, max_size=5),
    ),
    max_leaves=15,
)


@PROPS
@given(st.dictionaries(st.sampled_from(REGISTRY_KEYS), registry_values, max_size=3))
def test_random_registry_documents_give_entries_or_named_problems(doc: dict[str, Any]) -> None:
    """Any error-registry document gives entries or a ConfigError naming the file and keys."""
    source = "/etc/razard/error_registry.toml"
    try:
        entries = parse_registry(doc, source)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == source and p.key and p.reason
            assert not any(ord(c) < 32 for c in p.key), p.key
        return
    assert len({e.name for e in entries}) == len(entries)


def test_an_unknown_key_with_terminal_escapes_is_shown_quoted(tmp_path: Path) -> None:
    """A key that would repaint the operator's terminal is named, quoted, never raw."""
    from razard.config import load_config
    from razard.errors import ConfigError

    cfg = tmp_path / "razard.toml"
    cfg.write_text('"\\u001b[2J" = 1\n"" = 2\n[razard]\nbus = "user"\n')
    try:
        load_config(cfg)
    except ConfigError as e:
        text = str(e)
    else:
        raise AssertionError("an unknown key was accepted")
    assert "\x1b" not in text
    assert '"\\u001b[2J"' in text and '""' in text


def test_opencode_scratch_copy_leaves_out_a_hard_linked_file(tmp_path: Path) -> None:
    """A hard link to a secret planted among the artifacts never reaches the scratch copy."""
    import os

    from razard.repair.opencode_agent import _copy_dir

    app = tmp_path / "app"
    app.mkdir()
    (app / "app.conf").write_text("mode = ok\n")
    secret = tmp_path / "secret"
    secret.write_text("password=hunter2\n")
    os.link(secret, app / "linked.conf")
    work = tmp_path / "work"
    work.mkdir()
    skipped: set[str] = set()
    fd = os.open(app, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _copy_dir(fd, "app", work, skipped)
    finally:
        os.close(fd)
    assert (work / "app" / "app.conf").read_text() == "mode = ok\n"
    assert not (work / "app" / "linked.conf").exists()
    assert "app/linked.conf" in skipped

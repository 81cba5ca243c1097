"""Unit tests of razard.config: valid files parse, every mistake is reported by key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from razard.config import (
    DEFAULT_START_TIMEOUT,
    Config,
    DaemonConfig,
    ProbeConfig,
    RestartPolicy,
    load_config,
    parse_config,
    unit_name_for,
)
from razard.errors import ConfigError, ConfigProblem, RazarError

SRC = Path("/etc/razard/razard.toml")
EXAMPLE = Path(__file__).parents[2] / "config" / "razard.toml"

FULL_TOML = """\
[razard]
state_dir = "/srv/razard-state"
bus = "user"
metrics_address = "0.0.0.0"
metrics_port = 9400
unit_dir = "/run/razard-units"

[[component]]
name = "gpu-persist"
layer = "sacral"
priority = 10
unit = "nvidia-persistenced.service"
description = "keeps the driver loaded"
artifact_root = "/etc/nvidia"
artifacts = ["persistenced.conf"]

[[component]]
name = "inference"
layer = "third_eye"
priority = 30
command = ["/opt/bin/serve", "--port", "8000"]
environment = { CUDA_VISIBLE_DEVICES = "0", MODE = "fast" }
working_directory = "/srv/inference"
user = "inference"
start_timeout = 120
artifacts = ["config/"]

[component.probe]
type = "http"
url = "http://127.0.0.1:8000/health"
expect_status = 204
interval = 10
timeout = 1.5
failure_threshold = 4

[component.restart]
attempts = 7
backoff_base = 2
backoff_cap = 90.0
healthy_window = 600
jitter = 0.5
"""


def write(directory: Path, text: str | bytes, name: str = "razard.toml") -> Path:
    """Write a config file under ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def comp(**over: Any) -> dict[str, Any]:
    """A valid unit component named ``api``; ``over`` replaces keys (None deletes one)."""
    c: dict[str, Any] = {"name": "api", "layer": "throat", "priority": 20, "unit": "api.service"}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def cmd_comp(**over: Any) -> dict[str, Any]:
    """A valid command component named ``api``; ``over`` replaces keys (None deletes one)."""
    return comp(**{"unit": None, "command": ["/usr/bin/api", "--serve"], **over})


def problems_of(
    data: dict[str, Any], env: dict[str, str] | None = None, source: Path = SRC
) -> list[ConfigProblem]:
    """The problems parse_config reports for ``data`` (failing the test if it accepts it)."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, source, env={} if env is None else env)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def keys_of(data: dict[str, Any], env: dict[str, str] | None = None) -> list[str]:
    """The dotted keys of every problem parse_config reports for ``data``."""
    return [p.key for p in problems_of(data, env)]


# --------------------------------------------------------------------------- valid files


def test_full_config_parses_into_expected_objects(tmp_path: Path) -> None:
    """A valid file with a unit and a command component yields exactly the configured values."""
    path = write(tmp_path, FULL_TOML)
    cfg = load_config(path, env={})
    assert isinstance(cfg, Config)
    assert cfg.source == path.resolve()
    assert cfg.daemon == DaemonConfig(
        state_dir=Path("/srv/razard-state"),
        bus="user",
        metrics_address="0.0.0.0",
        metrics_port=9400,
        unit_dir=Path("/run/razard-units"),
    )
    assert [c.name for c in cfg.components] == ["gpu-persist", "inference"]

    gpu = cfg.components[0]
    assert gpu.layer == "sacral"
    assert gpu.priority == 10
    assert gpu.unit == "nvidia-persistenced.service"
    assert not gpu.owned
    assert gpu.command == ()
    assert gpu.probe is None
    assert gpu.restart == RestartPolicy()
    assert gpu.artifacts == ("persistenced.conf",)
    assert gpu.artifact_root == "/etc/nvidia"
    assert gpu.description == "keeps the driver loaded"

    inf = cfg.components[1]
    assert inf.owned
    assert inf.unit == unit_name_for("inference") == "razar-inference.service"
    assert inf.command == ("/opt/bin/serve", "--port", "8000")
    assert inf.environment == (("CUDA_VISIBLE_DEVICES", "0"), ("MODE", "fast"))
    assert inf.working_directory == "/srv/inference"
    assert inf.user == "inference"
    assert inf.start_timeout == 120.0
    assert inf.probe == ProbeConfig(
        kind="http",
        interval=10.0,
        timeout=1.5,
        failure_threshold=4,
        url="http://127.0.0.1:8000/health",
        expect_status=204,
    )
    assert inf.restart == RestartPolicy(
        attempts=7, backoff_base=2.0, backoff_cap=90.0, healthy_window=600.0, jitter=0.5
    )
    assert isinstance(inf.restart.backoff_base, float)


def test_empty_document_gives_default_daemon_and_no_components() -> None:
    """An empty file is valid: every [razard] key takes its default and nothing is supervised."""
    cfg = parse_config({}, SRC, env={})
    assert cfg.daemon == DaemonConfig()
    assert cfg.daemon.state_dir == Path("/var/lib/razard")
    assert cfg.daemon.bus == "system"
    assert cfg.daemon.metrics_address == "127.0.0.1"
    assert cfg.daemon.metrics_port == 9360
    assert cfg.daemon.unit_dir is None
    assert cfg.components == ()


def test_minimal_component_gets_defaults() -> None:
    """A component with only the required keys gets the default restart policy and timeouts."""
    cfg = parse_config({"component": [cmd_comp()]}, SRC, env={})
    (c,) = cfg.components
    assert c.unit == "razar-api.service"
    assert c.probe is None
    assert c.restart == RestartPolicy()
    assert c.start_timeout == DEFAULT_START_TIMEOUT
    assert c.environment == ()
    assert c.working_directory == ""
    assert c.user == ""
    assert c.artifacts == ()
    assert c.description == ""


def test_probe_defaults_per_kind() -> None:
    """Probes get default interval/timeout/threshold, tcp host 127.0.0.1 and http status 200."""
    cfg = parse_config(
        {
            "component": [
                comp(name="a", unit="a.service", probe={"type": "tcp", "port": 80}),
                comp(name="b", unit="b.service", probe={"type": "http", "url": "https://x/h"}),
                comp(name="c", unit="c.service", probe={"type": "exec", "command": ["/bin/true"]}),
            ]
        },
        SRC,
        env={},
    )
    tcp, http, exe = (c.probe for c in cfg.components)
    assert tcp == ProbeConfig(kind="tcp", host="127.0.0.1", port=80)
    assert http == ProbeConfig(kind="http", url="https://x/h", expect_status=200)
    assert exe == ProbeConfig(kind="exec", command=("/bin/true",))


def test_relative_state_dir_resolves_against_config_directory(tmp_path: Path) -> None:
    """A relative state_dir/unit_dir is taken relative to the config file's directory."""
    path = write(tmp_path / "etc", '[razard]\nstate_dir = "state"\nunit_dir = "../units"\n')
    cfg = load_config(path, env={})
    base = (tmp_path / "etc").resolve()
    assert cfg.daemon.state_dir == base / "state"
    assert cfg.daemon.unit_dir == base / ".." / "units"


def test_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    """An absolute state_dir is used as written."""
    path = write(tmp_path, '[razard]\nstate_dir = "/var/lib/other"\n')
    assert load_config(path, env={}).daemon.state_dir == Path("/var/lib/other")


def test_metrics_port_env_overrides_file() -> None:
    """RAZAR_METRICS_PORT in env= overrides [razard].metrics_port."""
    data = {"razard": {"metrics_port": 9400}}
    assert parse_config(data, SRC, env={"RAZAR_METRICS_PORT": "9999"}).daemon.metrics_port == 9999
    assert parse_config(data, SRC, env={}).daemon.metrics_port == 9400
    assert parse_config({}, SRC, env={"RAZAR_METRICS_PORT": "0"}).daemon.metrics_port == 0


def test_metrics_port_env_defaults_to_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without env=, parse_config reads RAZAR_METRICS_PORT from the process environment."""
    monkeypatch.setenv("RAZAR_METRICS_PORT", "9555")
    assert parse_config({}, SRC).daemon.metrics_port == 9555
    monkeypatch.delenv("RAZAR_METRICS_PORT")
    assert parse_config({}, SRC).daemon.metrics_port == 9360


@pytest.mark.parametrize(
    "value", ["", "abc", "-1", "65536", "99999999", " 9360", "93.6", "²", "٩٣"]
)
def test_invalid_metrics_port_env_is_a_problem(value: str) -> None:
    """An unusable RAZAR_METRICS_PORT is a problem keyed `$RAZAR_METRICS_PORT`, not a crash."""
    probs = problems_of({}, env={"RAZAR_METRICS_PORT": value})
    assert [p.key for p in probs] == ["$RAZAR_METRICS_PORT"]
    assert repr(value) in probs[0].reason


def test_config_component_lookup_and_with_retries() -> None:
    """Config.component finds by name and with_retries sets every restart budget."""
    cfg = parse_config(
        {"component": [comp(name="a", unit="a.service"), comp(name="b", unit="b.service")]},
        SRC,
        env={},
    )
    assert cfg.component("b") is cfg.components[1]
    assert cfg.component("zzz") is None
    changed = cfg.with_retries(0)
    assert [c.restart.attempts for c in changed.components] == [0, 0]
    assert [c.restart.attempts for c in cfg.components] == [5, 5]


def test_equal_values_of_many_components_are_one_object_each() -> None:
    """Hundreds of components keep one copy of what they have in common (the parsed file
    has one per place): the layer, a program, a probe's timeouts, a restart policy."""
    restart = {"attempts": 10, "backoff_base": 0.5}

    def probed(name: str, port: int) -> dict[str, Any]:
        return cmd_comp(
            name=name,
            # copies, as the TOML parser makes them: equal, not the same objects
            layer="".join(["cr", "own"]),
            command=["".join(["/usr/bin/", "app"]), name],
            probe={"type": "tcp", "port": port, "timeout": float("1.5")},
            restart=dict(restart),
        )

    cfg = parse_config({"component": [probed("a", 81), probed("b", 82)]}, SRC, env={})
    a, b = cfg.components
    assert a.layer == "crown" and a.layer is b.layer
    assert a.command == ("/usr/bin/app", "a") and a.command[0] is b.command[0]
    assert a.restart == b.restart == RestartPolicy(attempts=10, backoff_base=0.5)
    assert a.restart is b.restart
    assert a.probe is not None and b.probe is not None
    assert (a.probe.port, b.probe.port) == (81, 82)
    assert a.probe.timeout == 1.5 and a.probe.timeout is b.probe.timeout
    # without a restart table: the defaults, one object for all
    plain = parse_config({"component": [comp(name="c"), comp(name="d", unit="d.service")]}, SRC)
    assert plain.components[0].restart is plain.components[1].restart == RestartPolicy()
    # with_retries: shared policies stay shared, each component's budget is the new one
    retried = cfg.with_retries(3)
    assert [c.restart.attempts for c in retried.components] == [3, 3]
    assert retried.components[0].restart is retried.components[1].restart
    assert retried.components[0].restart.backoff_base == 0.5
    assert not hasattr(a, "__dict__")  # slots: no per-instance dict


def test_a_negative_zero_is_not_shared_with_a_zero() -> None:
    """Sharing equal values never turns one into another that prints differently."""
    data = {
        "component": [
            comp(name="a", unit="a.service", restart={"backoff_base": 0.0, "backoff_cap": 0.0}),
            comp(name="b", unit="b.service", restart={"backoff_base": -0.0, "backoff_cap": 0.0}),
        ]
    }
    a, b = parse_config(data, SRC, env={}).components
    assert str(a.restart.backoff_base) == "0.0"
    assert str(b.restart.backoff_base) == "-0.0"
    assert a.restart is not b.restart


# --------------------------------------------------------------------------- single mistakes

P = "component[0] (api)"  # the prefix of a component whose name is valid

MISTAKES: list[tuple[str, dict[str, Any], str]] = [
    # unknown keys at every level
    ("unknown top-level key", {"razrd": {}}, "razrd"),
    ("unknown razard key", {"razard": {"metrics_prot": 1}}, "razard.metrics_prot"),
    ("unknown component key", {"component": [comp(restrat={})]}, f"{P}.restrat"),
    (
        "unknown probe key",
        {"component": [comp(probe={"type": "tcp", "port": 80, "intervall": 5})]},
        f"{P}.probe.intervall",
    ),
    ("unknown restart key", {"component": [comp(restart={"attempt": 3})]}, f"{P}.restart.attempt"),
    # required keys
    ("missing name", {"component": [comp(name=None)]}, "component[0].name"),
    ("missing layer", {"component": [comp(layer=None)]}, f"{P}.layer"),
    ("missing priority", {"component": [comp(priority=None)]}, f"{P}.priority"),
    # bad values
    ("invalid name", {"component": [comp(name="API Server")]}, "component[0].name"),
    ("bad layer", {"component": [comp(layer="gpu")]}, f"{P}.layer"),
    ("priority out of range", {"component": [comp(priority=-1)]}, f"{P}.priority"),
    ("bad unit name", {"component": [comp(unit="api")]}, f"{P}.unit"),
    ("both unit and command", {"component": [comp(command=["/bin/api"])]}, P),
    ("neither unit nor command", {"component": [comp(unit=None)]}, P),
    ("command as a string", {"component": [cmd_comp(command="/usr/bin/api --x")]}, f"{P}.command"),
    ("empty command", {"component": [cmd_comp(command=[])]}, f"{P}.command"),
    ("non-string argv", {"component": [cmd_comp(command=["/bin/api", 8])]}, f"{P}.command"),
    ("relative program", {"component": [cmd_comp(command=["api", "--x"])]}, f"{P}.command"),
    ("newline in argv", {"component": [cmd_comp(command=["/bin/a", "x\ny"])]}, f"{P}.command"),
    ("bad probe type", {"component": [comp(probe={"type": "grpc"})]}, f"{P}.probe.type"),
    ("probe without type", {"component": [comp(probe={"port": 80})]}, f"{P}.probe.type"),
    ("probe not a table", {"component": [comp(probe="http")]}, f"{P}.probe"),
    (
        "http url on a tcp probe",
        {"component": [comp(probe={"type": "tcp", "port": 80, "url": "http://x/"})]},
        f"{P}.probe.url",
    ),
    (
        "expect_status on a tcp probe",
        {"component": [comp(probe={"type": "tcp", "port": 80, "expect_status": 200})]},
        f"{P}.probe.expect_status",
    ),
    (
        "port on an http probe",
        {"component": [comp(probe={"type": "http", "url": "http://x/", "port": 80})]},
        f"{P}.probe.port",
    ),
    (
        "command on a tcp probe",
        {"component": [comp(probe={"type": "tcp", "port": 80, "command": ["/bin/true"]})]},
        f"{P}.probe.command",
    ),
    ("tcp probe without port", {"component": [comp(probe={"type": "tcp"})]}, f"{P}.probe.port"),
    ("http probe without url", {"component": [comp(probe={"type": "http"})]}, f"{P}.probe.url"),
    (
        "http probe with a non-http url",
        {"component": [comp(probe={"type": "http", "url": "ftp://x/"})]},
        f"{P}.probe.url",
    ),
    (
        "exec probe without command",
        {"component": [comp(probe={"type": "exec"})]},
        f"{P}.probe.command",
    ),
    (
        "working_directory ending in a backslash (a unit line continuation)",
        {"component": [cmd_comp(working_directory="/srv/app\\")]},
        f"{P}.working_directory",
    ),
    (
        "exec probe with a relative program",
        {"component": [comp(probe={"type": "exec", "command": ["./check.sh"]})]},
        f"{P}.probe.command",
    ),
    (
        "zero probe interval",
        {"component": [comp(probe={"type": "tcp", "port": 1, "interval": 0})]},
        f"{P}.probe.interval",
    ),
    (
        "backoff_cap < backoff_base",
        {"component": [comp(restart={"backoff_base": 10, "backoff_cap": 5})]},
        f"{P}.restart.backoff_cap",
    ),
    ("jitter above 1", {"component": [comp(restart={"jitter": 1.5})]}, f"{P}.restart.jitter"),
    (
        "nan backoff",
        {"component": [comp(restart={"backoff_base": float("nan")})]},
        f"{P}.restart.backoff_base",
    ),
    ("restart not a table", {"component": [comp(restart=5)]}, f"{P}.restart"),
    # wrong types
    ("bool priority", {"component": [comp(priority=True)]}, f"{P}.priority"),
    ("bool metrics_port", {"razard": {"metrics_port": False}}, "razard.metrics_port"),
    ("bool attempts", {"component": [comp(restart={"attempts": True})]}, f"{P}.restart.attempts"),
    (
        "bool failure_threshold",
        {"component": [comp(probe={"type": "tcp", "port": 1, "failure_threshold": True})]},
        f"{P}.probe.failure_threshold",
    ),
    ("float priority", {"component": [comp(priority=1.5)]}, f"{P}.priority"),
    ("bool start_timeout", {"component": [comp(start_timeout=True)]}, f"{P}.start_timeout"),
    ("string start_timeout", {"component": [comp(start_timeout="30s")]}, f"{P}.start_timeout"),
    ("integer name", {"component": [comp(name=7)]}, "component[0].name"),
    ("metrics_port out of range", {"razard": {"metrics_port": 70000}}, "razard.metrics_port"),
    ("bad bus", {"razard": {"bus": "session"}}, "razard.bus"),
    ("razard not a table", {"razard": ["x"]}, "razard"),
    ("component not an array", {"component": comp()}, "component"),
    ("component entry not a table", {"component": ["api"]}, "component[0]"),
    # environment / working_directory / user
    (
        "environment with a bad name",
        {"component": [cmd_comp(environment={"1BAD": "x"})]},
        f"{P}.environment.1BAD",
    ),
    (
        "environment value not a string",
        {"component": [cmd_comp(environment={"PORT": 80})]},
        f"{P}.environment.PORT",
    ),
    ("environment not a table", {"component": [cmd_comp(environment="A=1")]}, f"{P}.environment"),
    ("environment with unit", {"component": [comp(environment={"A": "1"})]}, f"{P}.environment"),
    ("user with unit", {"component": [comp(user="svc")]}, f"{P}.user"),
    (
        "working_directory with unit",
        {"component": [comp(working_directory="/srv")]},
        f"{P}.working_directory",
    ),
    (
        "relative working_directory",
        {"component": [cmd_comp(working_directory="srv")]},
        f"{P}.working_directory",
    ),
    ("bad user name", {"component": [cmd_comp(user="Bad User")]}, f"{P}.user"),
    # artifacts
    ("artifacts not a list", {"component": [comp(artifacts="/var/log")]}, f"{P}.artifacts"),
    ("artifact with ..", {"component": [comp(artifacts=["a/../../etc"])]}, f"{P}.artifacts"),
    ("absolute artifact", {"component": [comp(artifacts=["/etc/passwd"])]}, f"{P}.artifacts"),
    ("artifacts without a root", {"component": [comp(artifacts=["a.conf"])]}, f"{P}.artifact_root"),
    ("empty artifact", {"component": [comp(artifacts=[""])]}, f"{P}.artifacts"),
    # paths that cannot be expanded
    (
        "unknown ~user in state_dir",
        {"razard": {"state_dir": "~no-such-user-razar/x"}},
        "razard.state_dir",
    ),
    (
        "unknown ~user in unit_dir",
        {"razard": {"unit_dir": "~no-such-user-razar"}},
        "razard.unit_dir",
    ),
    # numbers too large for a float
    ("huge start_timeout", {"component": [comp(start_timeout=10**400)]}, f"{P}.start_timeout"),
]


@pytest.mark.parametrize(("data", "key"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_mistake_is_reported_at_its_dotted_key(data: dict[str, Any], key: str) -> None:
    """Each kind of mistake yields a problem naming the exact dotted key, the file and a reason."""
    probs = problems_of(data)
    assert key in [p.key for p in probs]
    for p in probs:
        assert p.file == str(SRC)
        assert p.reason
        assert str(p) == f"{SRC}: {p.key}: {p.reason}"


def test_unknown_key_reason_lists_the_allowed_keys() -> None:
    """An unknown key's reason names the keys that are allowed there."""
    (p,) = problems_of({"razard": {"metrics_prot": 1}})
    assert "metrics_port" in p.reason and "state_dir" in p.reason


def test_duplicate_names_are_reported_on_the_second() -> None:
    """Two components with one name: the second is reported at component[1].name."""
    probs = problems_of({"component": [comp(unit="a.service"), comp(unit="b.service")]})
    assert [p.key for p in probs] == ["component[1].name"]
    assert "component[0]" in probs[0].reason


def test_duplicate_units_are_reported_on_the_second() -> None:
    """Two components supervising one unit: the second is reported at its .unit key."""
    probs = problems_of({"component": [comp(name="a"), comp(name="b")]})
    assert [p.key for p in probs] == ["component[1] (b).unit"]
    assert "'a'" in probs[0].reason


def test_command_component_unit_clashing_with_unit_component_is_a_duplicate() -> None:
    """A unit component naming razar-<name>.service clashes with the command component's unit."""
    data = {"component": [cmd_comp(), comp(name="other", unit="razar-api.service")]}
    assert keys_of(data) == ["component[1] (other).unit"]


# --------------------------------------------------------------------------- many mistakes


def test_every_mistake_in_a_file_is_reported() -> None:
    """Several mistakes across the file are all reported, not just the first."""
    data = {
        "extra": 1,
        "razard": {"bus": "session", "metrics_port": True},
        "component": [
            comp(
                name="a",
                unit="a.service",
                layer="gpu",
                restart={"backoff_base": 9, "backoff_cap": 1},
            ),
            cmd_comp(name="b", command="serve --now", probe={"type": "tcp", "url": "http://x/"}),
            comp(name="c", unit="c.service", priority=True, environment={"X": "1"}),
        ],
    }
    keys = keys_of(data)
    for expected in [
        "extra",
        "razard.bus",
        "razard.metrics_port",
        "component[0] (a).layer",
        "component[0] (a).restart.backoff_cap",
        "component[1] (b).command",
        "component[1] (b).probe.url",
        "component[1] (b).probe.port",
        "component[2] (c).priority",
        "component[2] (c).environment",
    ]:
        assert expected in keys, expected
    assert len(keys) == len(set(keys)) == 10


def test_error_message_lists_every_problem_line_by_line() -> None:
    """str(ConfigError) has one `file: key: reason` line per problem and is a RazarError."""
    with pytest.raises(ConfigError) as info:
        parse_config({"a": 1, "b": 2, "razard": {"bus": 3}}, SRC, env={})
    err = info.value
    assert isinstance(err, RazarError)
    lines = str(err).splitlines()
    assert lines == [str(p) for p in err.problems]
    assert len(lines) == 3
    assert all(line.startswith(f"{SRC}: ") for line in lines)


def test_bad_component_does_not_hide_later_components_mistakes() -> None:
    """A broken component is skipped but the components after it are still checked."""
    data = {"component": ["not a table", comp(name=None), comp(name="x", layer="nope")]}
    assert keys_of(data) == ["component[0]", "component[1].name", "component[2] (x).layer"]


# --------------------------------------------------------------------------- load_config


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A file that does not exist gives ConfigError naming the file, not an OSError."""
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (p,) = info.value.problems
    assert p.file == str(path)
    assert p.key == "(file)"
    assert str(path) in str(info.value)


def test_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A directory where the file should be gives ConfigError naming it."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={})
    assert info.value.problems[0].file == str(tmp_path)


def test_invalid_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A TOML syntax error gives ConfigError with key (syntax) naming the file."""
    path = write(tmp_path, "[razard\nbus = \n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (p,) = info.value.problems
    assert (p.file, p.key) == (str(path), "(syntax)")
    assert str(path) in str(info.value)


def test_non_utf8_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    """A file that is not UTF-8 gives ConfigError naming the file and saying so."""
    path = write(tmp_path, b'[razard]\nstate_dir = "/var/lib/\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (p,) = info.value.problems
    assert (p.file, p.key) == (str(path), "(file)")
    assert "UTF-8" in p.reason


def test_integer_too_long_for_python_is_a_syntax_problem(tmp_path: Path) -> None:
    """An integer literal over Python's digit limit is a (syntax) problem, not a ValueError."""
    path = write(tmp_path, "[razard]\nmetrics_port = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [(p.file, p.key) for p in info.value.problems] == [(str(path), "(syntax)")]


def test_deeply_nested_toml_is_a_syntax_problem(tmp_path: Path) -> None:
    """Arrays nested thousands deep are a (syntax) problem, not a RecursionError."""
    path = write(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [(p.file, p.key) for p in info.value.problems] == [(str(path), "(syntax)")]


def test_load_config_problems_name_the_resolved_file(tmp_path: Path) -> None:
    """Problems found after parsing name the config file's resolved path."""
    path = write(tmp_path, "[razard]\nbus = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert [(p.file, p.key) for p in info.value.problems] == [(str(path.resolve()), "razard.bus")]


def test_load_config_accepts_a_string_path(tmp_path: Path) -> None:
    """load_config takes a str as well as a Path."""
    path = write(tmp_path, "")
    assert load_config(str(path), env={}).components == ()


# --------------------------------------------------------------------------- the example file


def test_example_config_is_valid() -> None:
    """config/razard.toml, the file operators copy, parses without problems."""
    cfg = load_config(EXAMPLE, env={})
    assert cfg.daemon == DaemonConfig(
        state_dir=Path("/var/lib/razard"),
        bus="system",
        metrics_address="127.0.0.1",
        metrics_port=9360,
    )


def test_example_config_components() -> None:
    """The example has a unit, an http, a tcp and an exec component on the expected layers."""
    cfg = load_config(EXAMPLE, env={})
    summary = [
        (c.name, c.layer, c.owned, c.probe.kind if c.probe else None) for c in cfg.components
    ]
    assert summary == [
        ("nvidia-persistenced", "sacral", False, None),
        ("inference", "third_eye", True, "http"),
        ("api-gateway", "throat", True, "tcp"),
        ("scheduler", "crown", True, "exec"),
    ]
    units = [c.unit for c in cfg.components]
    assert units[0] == "nvidia-persistenced.service"
    assert units[1:] == [
        "razar-inference.service",
        "razar-api-gateway.service",
        "razar-scheduler.service",
    ]
    assert all(c.artifacts for c in cfg.components)
    priorities = [c.priority for c in cfg.components]
    assert priorities == sorted(priorities)


# --------------------------------------------------------------------------- injection


@pytest.mark.parametrize(
    "component",
    [
        cmd_comp(name="api\n"),
        comp(unit="api.service\n"),
        cmd_comp(environment={"A\n": "1"}),
        cmd_comp(user="svc\n"),
        cmd_comp(working_directory="/srv\nExecStartPre=/bin/true"),
        cmd_comp(description="x\r[Service]\rExecStartPre=/evil"),
        cmd_comp(environment={"A": "b\rExecStartPost=/evil"}),
        cmd_comp(command=["/bin/app", "a\rb"]),
    ],
    ids=[
        "name",
        "unit",
        "environment",
        "user",
        "working_directory",
        "description-cr",
        "env-value-cr",
        "argv-cr",
    ],
)
def test_newlines_in_unit_file_values_are_rejected(component: dict[str, Any]) -> None:
    """A value that would put a newline into the generated unit file is a problem."""
    problems_of({"component": [component]})

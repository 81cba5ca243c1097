"""Property tests of razard.config: no input makes the parser fail with anything but ConfigError."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from razard.config import Config, load_config, parse_config
from razard.errors import ConfigError
from razard.layers import LAYERS

SRC = Path("/etc/razard/razard.toml")
EXAMPLE = Path(__file__).parents[2] / "config" / "razard.toml"

PROPS = settings(max_examples=200, deadline=None)

KNOWN_KEYS = [
    # top level and [razard]
    "razard", "component", "state_dir", "bus", "metrics_address", "metrics_port", "unit_dir",
    # [[component]]
    "name", "unit", "command", "environment", "working_directory", "user", "priority", "layer",
    "probe", "restart", "artifacts", "start_timeout", "description",
    # probe
    "type", "interval", "timeout", "failure_threshold", "url", "expect_status", "host", "port",
    # restart
    "attempts", "backoff_base", "backoff_cap", "healthy_window", "jitter",
]  # fmt: skip

INTERESTING_STRINGS = [
    "", " ", "~", "~/x", "~no-such-user-razar/x", "~\x00", "/", "..", "/a/../b", "relative",
    "system", "user", "exec", "http", "tcp", "http://127.0.0.1:1/h", "ftp://x", "a.service",
    "razar-a.service", "a\n", "a\x00b", "é", "\ud800", *LAYERS,
]  # fmt: skip

# Integers a TOML parser can produce: 64-bit and beyond (tomllib has no range limit),
# including ones too large to convert to a float.
toml_ints = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 70000),
    st.sampled_from([10**308, 10**400, -(10**400), 2**64]),
)
toml_floats = st.floats(allow_nan=True, allow_infinity=True)
toml_strings = st.one_of(st.text(max_size=20), st.sampled_from(INTERESTING_STRINGS))
toml_scalars = st.one_of(
    toml_strings,
    toml_ints,
    toml_floats,
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.just(dt.UTC)),
)
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12))
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=10,
)


def check(data: Any, env: dict[str, str] | None = None, source: Path = SRC) -> Config | None:
    """parse_config returns a Config or raises ConfigError whose problems all name ``source``."""
    try:
        cfg = parse_config(data, source, env={} if env is None else env)
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file == str(source)
            assert str(source) in str(p)
            assert isinstance(p.key, str)
            assert isinstance(p.reason, str) and p.reason
        assert str(source) in str(e)
        return None
    assert isinstance(cfg, Config)
    assert_invariants(cfg)
    return cfg


def assert_invariants(cfg: Config) -> None:
    """What every accepted Config guarantees to the rest of razard."""
    names = [c.name for c in cfg.components]
    units = [c.unit for c in cfg.components]
    assert len(set(names)) == len(names)
    assert len(set(units)) == len(units)
    assert 0 <= cfg.daemon.metrics_port <= 65535
    assert cfg.daemon.bus in ("system", "user")
    assert cfg.daemon.state_dir.is_absolute()
    for c in cfg.components:
        assert c.layer in LAYERS
        assert isinstance(c.priority, int) and not isinstance(c.priority, bool)
        assert c.owned == bool(c.command)
        if c.command:
            assert c.command[0].startswith("/")
        else:
            assert not (c.environment or c.working_directory or c.user)
        r = c.restart
        assert 0 <= r.backoff_base <= r.backoff_cap
        assert 0 <= r.jitter <= 1
        assert r.attempts >= 0
        assert all(math.isfinite(x) for x in (r.backoff_base, r.backoff_cap, r.healthy_window))
        assert math.isfinite(c.start_timeout) and c.start_timeout > 0
        if c.probe is not None:
            assert c.probe.kind in ("exec", "http", "tcp")
            assert c.probe.interval > 0 and c.probe.timeout > 0
            assert c.probe.failure_threshold >= 1
            if c.probe.kind == "exec":
                assert c.probe.command
            if c.probe.kind == "tcp":
                assert 1 <= c.probe.port <= 65535


# --------------------------------------------------------------------------- documents


PROBE_KEYS = ["interval", "timeout", "command", "url", "expect_status", "host", "port", "bogus"]


def component_tables() -> st.SearchStrategy[dict[str, Any]]:
    """Component tables built from the real keys, each with a plausible or random value."""
    plausible: dict[str, st.SearchStrategy[Any]] = {
        "name": st.one_of(st.sampled_from(["api", "gpu", "db", "a-1"]), toml_strings),
        "layer": st.one_of(st.sampled_from(LAYERS), toml_strings),
        "priority": toml_ints,
        "unit": st.one_of(st.sampled_from(["api.service", "gpu.service"]), toml_strings),
        "command": st.one_of(
            st.lists(st.sampled_from(["/bin/true", "x", "", "--a"]), max_size=3), toml_values
        ),
        "environment": st.dictionaries(st.text(max_size=6), toml_values, max_size=3),
        "working_directory": toml_strings,
        "user": toml_strings,
        "probe": st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["exec", "http", "tcp", "grpc"])},
                optional=dict.fromkeys(PROBE_KEYS, toml_values),
            ),
            toml_values,
        ),
        "restart": st.one_of(
            st.dictionaries(
                st.sampled_from(
                    ["attempts", "backoff_base", "backoff_cap", "healthy_window", "jitter", "bogus"]
                ),
                st.one_of(toml_ints, toml_floats, toml_values),
                max_size=5,
            ),
            toml_values,
        ),
        "artifacts": st.one_of(st.lists(toml_strings, max_size=3), toml_values),
        "start_timeout": st.one_of(toml_ints, toml_floats),
        "description": toml_values,
    }
    return st.fixed_dictionaries({}, optional=plausible).flatmap(
        lambda d: st.dictionaries(keys, toml_values, max_size=2).map(lambda extra: {**extra, **d})
    )


daemon_tables = st.fixed_dictionaries(
    {},
    optional={
        "state_dir": toml_strings,
        "bus": st.one_of(st.sampled_from(["system", "user"]), toml_values),
        "metrics_address": toml_values,
        "metrics_port": toml_ints,
        "unit_dir": toml_strings,
        "bogus": toml_values,
    },
)

structured_documents = st.fixed_dictionaries(
    {},
    optional={
        "razard": st.one_of(daemon_tables, toml_values),
        "component": st.one_of(st.lists(component_tables(), max_size=4), toml_values),
        "extra": toml_values,
    },
)


@PROPS
@given(st.dictionaries(keys, toml_values, max_size=6))
def test_random_documents_never_crash(data: dict[str, Any]) -> None:
    """Any table of random keys and values gives a Config or a ConfigError naming the file."""
    check(data)


@PROPS
@given(structured_documents)
def test_structured_documents_never_crash(data: dict[str, Any]) -> None:
    """Documents shaped like a config, with random values in every slot, never crash the parser."""
    check(data)


@PROPS
@given(
    st.one_of(st.just({}), st.builds(lambda p: {"razard": {"metrics_port": p}}, toml_ints)),
    st.one_of(st.text(max_size=8), st.integers(-10, 10**6).map(str), st.text("0123456789²٩")),
)
def test_any_metrics_port_env_is_a_port_or_a_problem(data: dict[str, Any], port: str) -> None:
    """Any RAZAR_METRICS_PORT is used as a port 0-65535 or reported; it never crashes."""
    cfg = check(data, env={"RAZAR_METRICS_PORT": port})
    if cfg is not None:
        assert port.isascii() and port.isdigit()
        assert cfg.daemon.metrics_port == int(port)


# --------------------------------------------------------------------------- mutations

VALID = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def _tables(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every table (dict) in ``doc``."""
    out: list[tuple[Any, ...]] = []
    if isinstance(doc, dict):
        out.append(path)
        for k, v in doc.items():
            out += _tables(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _tables(v, (*path, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


TABLES = _tables(VALID)
LEAVES = [(t, k) for t in TABLES for k in _get(VALID, t)]
REQUIRED = [(t, k) for t, k in LEAVES if len(t) == 2 and k in ("name", "layer", "priority")]


def test_example_document_is_valid() -> None:
    """The unmutated example document parses (so a mutation's error is the mutation's)."""
    assert check(VALID) is not None


@PROPS
@given(st.data())
def test_mutated_valid_config_never_crashes(data: st.DataObject) -> None:
    """Deleting keys, retyping values and adding keys to a valid config never crashes."""
    doc = copy.deepcopy(VALID)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        tables = _tables(doc)
        table_path = data.draw(st.sampled_from(tables), label="table")
        table = _get(doc, table_path)
        op = data.draw(st.sampled_from(["delete", "retype", "add"]), label="op")
        if op == "add" or not table:
            table[data.draw(keys, label="key")] = data.draw(toml_values, label="value")
        elif op == "delete":
            del table[data.draw(st.sampled_from(sorted(table)), label="key")]
        else:
            table[data.draw(st.sampled_from(sorted(table)), label="key")] = data.draw(
                toml_values, label="value"
            )
    check(doc)


@PROPS
@given(st.sampled_from(TABLES), st.text(min_size=1, max_size=12), toml_values)
def test_unknown_key_anywhere_is_reported(
    table_path: tuple[Any, ...], key: str, value: Any
) -> None:
    """An unknown key added to any table of a valid config is a problem naming that key."""
    doc = copy.deepcopy(VALID)
    table = _get(doc, table_path)
    assume(key not in KNOWN_KEYS and key not in table)
    # environment tables take any variable name: an unknown key there is a variable
    assume("environment" not in table_path)
    table[key] = value
    with pytest.raises(ConfigError) as info:
        parse_config(doc, SRC, env={})
    # a key that is not plain [A-Za-z0-9_-] is shown JSON-quoted (no raw escapes reach a tty)
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    assert any(p.key.endswith(f".{shown}") or p.key == shown for p in info.value.problems)


@PROPS
@given(st.sampled_from(REQUIRED))
def test_deleting_a_required_key_is_reported(leaf: tuple[tuple[Any, ...], str]) -> None:
    """Deleting a component's name, layer or priority is a problem at that key."""
    table_path, key = leaf
    doc = copy.deepcopy(VALID)
    del _get(doc, table_path)[key]
    with pytest.raises(ConfigError) as info:
        parse_config(doc, SRC, env={})
    assert any(p.key.endswith(f".{key}") for p in info.value.problems)


# --------------------------------------------------------------------------- load_config


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document for ``doc`` (top-level keys; values as inline TOML), for datetimes too."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, dt.datetime | dt.date | dt.time):
            return v.isoformat()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        assert isinstance(v, dict)
        return "{" + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + "}"

    return "".join(f"{json.dumps(k)} = {value(v)}\n" for k, v in doc.items())


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props") / "razard.toml"


def check_load(path: Path) -> None:
    """load_config gives a Config or a ConfigError whose problems all name the file."""
    try:
        cfg = load_config(path, env={})
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.file in (str(path), str(path.resolve()))
            assert p.file in str(p)
        return
    assert isinstance(cfg, Config)
    assert_invariants(cfg)


PROPS_FILE = settings(
    PROPS, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@PROPS_FILE
@given(st.binary(max_size=300))
def test_load_config_random_bytes(config_file: Path, raw: bytes) -> None:
    """Random bytes in the config file give a Config or a ConfigError naming the file."""
    config_file.write_bytes(raw)
    check_load(config_file)


TOML_FRAGMENTS = [
    "[razard]\n", "[[component]]\n", "[component.probe]\n", "[component.restart]\n",
    "[component]\n", "\n", " = ", "=", "[", "]", "{", "}", ",", ".", '"', "'", '"""', "#",
    "1", "-1", "0x1F", "1e999", "nan", "inf", "true", "1979-05-27T07:32:00Z", "07:32:00",
    '"x"', '"/bin/true"', '"~"', '"tcp"', '"http"', '"exec"', '"sacral"', "\\u0000",
    *(k + " = " for k in KNOWN_KEYS),
    "9" * 4400, "[" * 1000, "{a=" * 500,  # past Python's int-digit and recursion limits
]  # fmt: skip


@PROPS_FILE
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(TOML_FRAGMENTS)).map("".join)))
def test_load_config_random_text(config_file: Path, text: str) -> None:
    """Random text and TOML-like fragments in the config file never crash load_config."""
    config_file.write_bytes(text.encode("utf-8", "surrogatepass"))
    check_load(config_file)


@PROPS_FILE
@given(structured_documents, st.data())
def test_load_config_serialised_and_corrupted(
    config_file: Path, doc: dict[str, Any], data: st.DataObject
) -> None:
    """Config-shaped documents written as TOML, then maybe corrupted, never crash load_config."""
    text = to_toml(doc)
    if text and data.draw(st.booleans(), label="corrupt"):
        i = data.draw(st.integers(0, len(text)), label="at")
        j = data.draw(st.integers(i, min(len(text), i + 10)), label="to")
        text = text[:i] + data.draw(st.text(max_size=5), label="insert") + text[j:]
    config_file.write_bytes(text.encode("utf-8", "surrogatepass"))
    check_load(config_file)

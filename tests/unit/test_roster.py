"""Unit tests of razard.repair.roster: the shipped roster loads, every mistake is reported by key,
and endpoints, tokens, thresholds and availability are decided from the environment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from razard.errors import ConfigError, ConfigProblem
from razard.repair.roster import (
    DEFAULT_AGENT_TIMEOUT,
    AgentSpec,
    Roster,
    Thresholds,
    availability,
    load_roster,
    read_token,
    resolve_endpoint,
    thresholds,
)
from razard.repair.types import AgentSkipped

SHIPPED = Path(__file__).parents[2] / "config" / "razar_ai_agents.json"
SECRET = "sk-very-secret-token-42"


def write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "razar_ai_agents.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def agent(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "k2-coder",
        "kind": "openai",
        "endpoint": "",
        "endpoint_env": "KIMI_K2_URL",
        "auth": "bearer",
        "token_env": "KIMI_K2_TOKEN",
        "model": "kimi-k2",
        "timeout": 30,
        "max_attempts": 2,
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not None}


def problems(tmp_path: Path, doc: Any) -> list[ConfigProblem]:
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_roster(path)
    assert all(p.file == str(path) for p in info.value.problems)
    return info.value.problems


def keys(tmp_path: Path, doc: Any) -> list[str]:
    return [p.key for p in problems(tmp_path, doc)]


# --------------------------------------------------------------------------- the shipped roster


def test_shipped_roster_loads_in_ladder_order() -> None:
    """config/razar_ai_agents.json loads: registry, crown, kimi-cho, k2-coder, opencode, rstar."""
    roster = load_roster(SHIPPED)
    names = [a.name for a in roster.agents]
    assert names == ["registry", "crown", "kimi-cho", "k2-coder", "opencode", "rstar"]
    assert roster.active == "registry"
    assert roster.from_active() == roster.agents
    assert [a.kind for a in roster.agents] == [
        "registry",
        "openai",
        "openai",
        "openai",
        "opencode",
        "openai",
    ]


def test_shipped_roster_uses_the_runbook_env_names() -> None:
    """The remote rungs are configured by CROWN_*, KIMI_CHO_*, KIMI_K2_* and RSTAR_* variables."""
    roster = load_roster(SHIPPED)
    env = {a.name: (a.endpoint_env, a.token_env) for a in roster.agents}
    assert env["crown"] == ("CROWN_URL", "CROWN_TOKEN")
    assert env["kimi-cho"] == ("KIMI_CHO_URL", "KIMI_CHO_TOKEN")
    assert env["k2-coder"] == ("KIMI_K2_URL", "KIMI_K2_TOKEN")
    assert env["rstar"] == ("RSTAR_ENDPOINT", "RSTAR_TOKEN")
    assert all(a.endpoint == "" for a in roster.agents)  # no remote model is reachable by default


def test_shipped_roster_on_a_bare_machine_runs_only_the_registry() -> None:
    """With no env and no opencode, every rung but registry is skipped with what to set."""
    reasons = {s.name: why for s, why in availability(load_roster(SHIPPED), {}, lambda _: None)}
    assert reasons == {
        "registry": None,
        "crown": "endpoint not configured: set CROWN_URL",
        "kimi-cho": "endpoint not configured: set KIMI_CHO_URL",
        "k2-coder": "endpoint not configured: set KIMI_K2_URL",
        "opencode": "opencode not installed",
        "rstar": "endpoint not configured: set RSTAR_ENDPOINT",
    }


# --------------------------------------------------------------------------- loading


def test_minimal_agent_gets_defaults(tmp_path: Path) -> None:
    """An agent with only name and kind gets the documented defaults."""
    path = write(
        tmp_path, {"active": "registry", "agents": [{"name": "registry", "kind": "registry"}]}
    )
    roster = load_roster(path)
    assert roster == Roster(
        source=path, active="registry", agents=(AgentSpec(name="registry", kind="registry"),)
    )
    assert roster.agents[0].timeout == DEFAULT_AGENT_TIMEOUT
    assert roster.agents[0].max_attempts == 1


def test_active_later_in_the_list_starts_the_ladder_there(tmp_path: Path) -> None:
    """from_active() is the active agent and every one after it."""
    doc = {"active": "k2-coder", "agents": [{"name": "registry", "kind": "registry"}, agent()]}
    roster = load_roster(write(tmp_path, doc))
    assert [a.name for a in roster.from_active()] == ["k2-coder"]
    assert roster.agent("k2-coder") is roster.agents[1]
    assert roster.agent("nobody") is None


def test_relative_token_file_is_taken_from_the_roster_directory(tmp_path: Path) -> None:
    """token_file relative to the roster file becomes an absolute path next to it."""
    doc = {"active": "k2-coder", "agents": [agent(token_file="secrets/k2.token")]}
    roster = load_roster(write(tmp_path, doc))
    assert roster.agents[0].token_file == str(tmp_path.resolve() / "secrets" / "k2.token")


@pytest.mark.parametrize(
    ("fields", "key", "reason"),
    [
        ({"endpoint_url": "http://x"}, "agents[0].endpoint_url", "unknown key"),
        ({"kind": "claude"}, "agents[0].kind", "must be one of openai, opencode, registry"),
        ({"kind": None}, "agents[0].kind", "required key is missing"),
        ({"name": None}, "agents[0].name", "required key is missing"),
        ({"name": "K2 Coder"}, "agents[0].name", "is not a valid name"),
        ({"timeout": 0}, "agents[0].timeout", "must be > 0"),
        ({"timeout": "30s"}, "agents[0].timeout", "expected a number of seconds, got a string"),
        ({"timeout": True}, "agents[0].timeout", "expected a number of seconds, got a boolean"),
        ({"max_attempts": 0}, "agents[0].max_attempts", "must be between 1 and 100"),
        ({"max_attempts": 1.5}, "agents[0].max_attempts", "expected an integer"),
        ({"auth": "basic"}, "agents[0].auth", "must be one of none, bearer"),
        ({"endpoint": "localhost:8000"}, "agents[0].endpoint", "expected an http:// or https://"),
        ({"endpoint_env": "KIMI-K2"}, "agents[0].endpoint_env", "not an environment variable"),
        ({"model": 7}, "agents[0].model", "expected a string, got an integer"),
        (
            {"endpoint": "", "endpoint_env": ""},
            "agents[0].endpoint",
            "needs endpoint or endpoint_env",
        ),
        ({"token_env": ""}, "agents[0].auth", "bearer auth needs token_env or token_file"),
    ],
)
def test_each_agent_mistake_is_reported_by_key(
    tmp_path: Path, fields: dict[str, Any], key: str, reason: str
) -> None:
    """A wrong field is reported once, with its agents[i].key and why."""
    doc = {
        "active": "registry",
        "agents": [agent(**fields), {"name": "registry", "kind": "registry"}],
    }
    found = problems(tmp_path, doc)
    assert [p.key for p in found] == [key]
    assert reason in found[0].reason


def test_opencode_config_is_kept_and_only_valid_for_opencode(tmp_path: Path) -> None:
    """An opencode agent keeps its config object; elsewhere, or not an object, it is an error."""
    provider = {"provider": {"local": {"npm": "@ai-sdk/openai-compatible"}}}
    oc = {"name": "opencode", "kind": "opencode", "config": provider}
    roster = load_roster(write(tmp_path, {"active": "opencode", "agents": [oc]}))
    assert roster.agents[0].config == provider
    assert availability(roster, {}, lambda _: "/bin/opencode") == [(roster.agents[0], None)]
    bad = [agent(config={}), oc | {"name": "oc2", "config": ["x"]}]
    found = problems(tmp_path, {"active": "k2-coder", "agents": bad})
    assert [(p.key, p.reason) for p in found] == [
        ("agents[0].config", "only valid for opencode agents"),
        ("agents[1].config", "expected an object, got an array"),
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Mistakes in several agents and at the top level come back together, in file order."""
    doc = {
        "active": "gpt",
        "agents": [
            {"name": "registry", "kind": "registry", "colour": "blue"},
            agent(kind="claude"),
            {"kind": "openai", "endpoint_env": "X_URL"},
            agent(timeout=-1),
            "crown",
        ],
        "version": 2,
    }
    assert keys(tmp_path, doc) == [
        "version",
        "agents[0].colour",
        "agents[1].kind",
        "agents[2].name",
        "agents[3].timeout",
        "agents[4]",
        "active",
    ]


def test_duplicate_names_are_reported_with_both_places(tmp_path: Path) -> None:
    """Two agents with one name: the second is reported and points at the first."""
    doc = {"active": "k2-coder", "agents": [agent(), agent(model="other")]}
    (p,) = problems(tmp_path, doc)
    assert (p.key, p.reason) == ("agents[1].name", "duplicate name 'k2-coder' (also agents[0])")


def test_active_must_name_an_agent(tmp_path: Path) -> None:
    """An active name that is not in agents lists the names it could be."""
    (p,) = problems(tmp_path, {"active": "gpt-5", "agents": [agent()]})
    assert p.key == "active"
    assert "'gpt-5' is not an agent here; expected one of: k2-coder" in p.reason


@pytest.mark.parametrize(
    ("doc", "key", "reason"),
    [
        ('{"active": "x", "agents": [', "(syntax)", "line 1 column"),
        ("active = 'registry'\n", "(syntax)", "Expecting value"),
        ('{"active": "a", "active": "b", "agents": []}', "(syntax)", "duplicate key 'active'"),
        ("[1, 2]", "(document)", "expected a JSON object"),
        ('"registry"', "(document)", "got a string"),
        ({"active": "x"}, "agents", "required key is missing"),
        ({"active": "x", "agents": {}}, "agents", "expected an array of agent objects"),
        ({"active": "x", "agents": []}, "agents", "at least one agent is required"),
        ({"agents": [agent()]}, "active", "required key is missing"),
    ],
)
def test_document_mistakes_are_one_problem_naming_the_file(
    tmp_path: Path, doc: Any, key: str, reason: str
) -> None:
    """Bad JSON, a non-object and a missing or wrong top-level key each give one clear problem."""
    found = problems(tmp_path, doc)
    assert [p.key for p in found] == [key]
    assert reason in found[0].reason


def test_missing_or_binary_file_is_a_config_error(tmp_path: Path) -> None:
    """An unreadable or non-UTF-8 file is a ConfigError naming the file, not a traceback."""
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_roster(tmp_path / "absent.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_roster(binary)
    assert info.value.problems[0].file == str(binary)


# --------------------------------------------------------------------------- endpoint and token


def k2(**fields: Any) -> AgentSpec:
    base: dict[str, Any] = {
        "name": "k2-coder",
        "kind": "openai",
        "endpoint_env": "KIMI_K2_URL",
        "auth": "bearer",
        "token_env": "KIMI_K2_TOKEN",
    }
    return AgentSpec(**(base | fields))


def test_endpoint_from_env_overrides_the_file() -> None:
    """KIMI_K2_URL, when set and not empty, wins over the roster's endpoint."""
    s = k2(endpoint="http://10.0.0.5:8000/v1")
    assert resolve_endpoint(s, {}) == "http://10.0.0.5:8000/v1"
    assert resolve_endpoint(s, {"KIMI_K2_URL": ""}) == "http://10.0.0.5:8000/v1"
    assert resolve_endpoint(s, {"KIMI_K2_URL": "http://127.0.0.1:9/v1"}) == "http://127.0.0.1:9/v1"
    assert resolve_endpoint(k2(), {}) == ""


def test_token_from_env_then_file(tmp_path: Path) -> None:
    """The token comes from the env var first, else the first line of the token file, stripped."""
    token_file = tmp_path / "k2.token"
    token_file.write_text(f"  {SECRET}\nsecond line\n")
    s = k2(token_file=str(token_file))
    assert read_token(s, {"KIMI_K2_TOKEN": "from-env"}) == "from-env"
    assert read_token(s, {"KIMI_K2_TOKEN": " "}) == SECRET
    assert read_token(s, {}) == SECRET
    assert read_token(k2(), {}) is None
    token_file.write_text("\n")
    assert read_token(s, {}) is None


def test_unreadable_token_file_skips_without_showing_a_token(tmp_path: Path) -> None:
    """A token file that cannot be read raises AgentSkipped naming the file, not the token."""
    with pytest.raises(AgentSkipped, match=r"token file .*absent.token unreadable: No such file"):
        read_token(k2(token_file=str(tmp_path / "absent.token")), {})
    bad = tmp_path / "bad.token"
    bad.write_bytes(b"\xff" + SECRET.encode())
    with pytest.raises(AgentSkipped) as info:
        read_token(k2(token_file=str(bad)), {})
    assert "not UTF-8" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_token_never_appears_in_specs_rosters_or_reasons(tmp_path: Path) -> None:
    """Tokens are read on demand: no spec, roster or availability reason carries one."""
    token_file = tmp_path / "rstar.token"
    token_file.write_text(SECRET)
    doc = {
        "active": "k2-coder",
        "agents": [agent(), agent(name="rstar", token_file=str(token_file))],
    }
    roster = load_roster(write(tmp_path, doc))
    env = {"KIMI_K2_TOKEN": SECRET, "KIMI_K2_URL": "http://127.0.0.1:1/v1"}
    result = availability(roster, env, lambda _: None)
    assert [why for _, why in result] == [None, None]
    for text in (repr(roster), str(roster), repr(result), str(roster.agents)):
        assert SECRET not in text


# --------------------------------------------------------------------------- thresholds


def test_thresholds_defaults() -> None:
    """Unset: rStar after 9 attempts, no escalation warning."""
    assert thresholds({}) == Thresholds(rstar=9, escalation_warning=None)
    empty = {"RAZAR_RSTAR_THRESHOLD": "", "RAZAR_ESCALATION_WARNING_THRESHOLD": ""}
    assert thresholds(empty) == Thresholds(rstar=9, escalation_warning=None)


def test_thresholds_overrides() -> None:
    """The env sets both; 0 disables rStar and the warning."""
    env = {"RAZAR_RSTAR_THRESHOLD": "4", "RAZAR_ESCALATION_WARNING_THRESHOLD": " 3 "}
    assert thresholds(env) == Thresholds(rstar=4, escalation_warning=3)
    env = {"RAZAR_RSTAR_THRESHOLD": "0", "RAZAR_ESCALATION_WARNING_THRESHOLD": "0"}
    assert thresholds(env) == Thresholds(rstar=0, escalation_warning=None)


def test_threshold_that_is_not_a_number_names_the_variable() -> None:
    """A non-integer or negative threshold is a ConfigError naming each bad variable."""
    env = {"RAZAR_RSTAR_THRESHOLD": "nine", "RAZAR_ESCALATION_WARNING_THRESHOLD": "-1"}
    with pytest.raises(ConfigError) as info:
        thresholds(env)
    assert [p.key for p in info.value.problems] == [
        "$RAZAR_RSTAR_THRESHOLD",
        "$RAZAR_ESCALATION_WARNING_THRESHOLD",
    ]
    assert "got 'nine'" in str(info.value)


# --------------------------------------------------------------------------- availability


def reasons(env: dict[str, str], installed: bool = True) -> dict[str, str | None]:
    found = "/usr/local/bin/opencode" if installed else None
    return {s.name: why for s, why in availability(load_roster(SHIPPED), env, lambda _: found)}


FULL_ENV = {
    "CROWN_URL": "http://10.0.0.1/v1",
    "CROWN_TOKEN": "c",
    "KIMI_CHO_URL": "http://10.0.0.2/v1",
    "KIMI_CHO_TOKEN": "k",
    "KIMI_K2_URL": "https://api.moonshot.example/v1",
    "KIMI_K2_TOKEN": "k2",
    "OPENCODE_URL": "http://127.0.0.1:8080/v1",
    "RSTAR_ENDPOINT": "http://10.0.0.3/v1",
    "RSTAR_TOKEN": "r",
}


def test_every_rung_available_when_configured() -> None:
    """With every endpoint and token set and opencode installed, no rung is skipped."""
    assert set(reasons(FULL_ENV).values()) == {None}


def test_opencode_not_installed_is_skipped() -> None:
    """The opencode rung is skipped when `which opencode` finds nothing."""
    asked: list[str] = []

    def which(name: str) -> str | None:
        asked.append(name)
        return None

    result = dict((s.name, why) for s, why in availability(load_roster(SHIPPED), FULL_ENV, which))
    assert result["opencode"] == "opencode not installed"
    assert asked == ["opencode"]


def test_rstar_disabled_by_threshold_zero() -> None:
    """RAZAR_RSTAR_THRESHOLD=0 skips the rstar rung even when it is configured."""
    found = reasons(FULL_ENV | {"RAZAR_RSTAR_THRESHOLD": "0"})
    assert found["rstar"] == "rStar disabled: RAZAR_RSTAR_THRESHOLD=0"
    assert found["k2-coder"] is None


def test_bearer_without_token_is_skipped_naming_the_variable() -> None:
    """An endpoint without the token its bearer auth needs is skipped, naming the variable."""
    env = {k: v for k, v in FULL_ENV.items() if k != "RSTAR_TOKEN"}
    assert reasons(env)["rstar"] == "auth bearer but no token: set RSTAR_TOKEN"


def test_bearer_without_token_file_names_both_ways(tmp_path: Path) -> None:
    """With a token_file configured, the reason names the variable and the file."""
    token_file = tmp_path / "k2.token"
    doc = {"active": "k2-coder", "agents": [agent(token_file=str(token_file))]}
    roster = load_roster(write(tmp_path, doc))
    env = {"KIMI_K2_URL": "http://127.0.0.1:1/v1"}
    token_file.write_text("")
    ((_, why),) = availability(roster, env, lambda _: None)
    assert why == f"auth bearer but no token: set KIMI_K2_TOKEN or write {token_file}"
    token_file.unlink()
    ((_, why),) = availability(roster, env, lambda _: None)
    assert why is not None and why.startswith(f"token file {token_file} unreadable")


def test_endpoint_env_that_is_not_a_url_is_skipped_without_echoing_it() -> None:
    """A KIMI_K2_URL that is not http(s) skips the rung without showing the value (credentials?)."""
    found = reasons(FULL_ENV | {"KIMI_K2_URL": "user:pw@10.0.0.9:8000"})
    assert found["k2-coder"] == "endpoint not usable: KIMI_K2_URL is not an http:// or https:// URL"


def test_availability_with_a_bad_threshold_is_a_config_error() -> None:
    """A bad RAZAR_RSTAR_THRESHOLD makes availability raise ConfigError, not guess."""
    with pytest.raises(ConfigError, match="RAZAR_RSTAR_THRESHOLD"):
        reasons({"RAZAR_RSTAR_THRESHOLD": "many"})

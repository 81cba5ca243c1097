"""The repair roster: which agents the ladder asks, in which order, and whether each can run here.

``config/razar_ai_agents.json`` keeps the runbooks' shape::

    {"active": "registry",
     "agents": [{"name": "crown", "kind": "openai", "endpoint": "", "endpoint_env": "CROWN_URL",
                 "auth": "bearer", "token_env": "CROWN_TOKEN", "model": "crown",
                 "timeout": 120, "max_attempts": 2}, ...]}

The file is read once into frozen objects (`load_roster`); every mistake is collected with its
key (``agents[2].kind``) and raised together as one `ConfigError`, unknown keys included.
What depends on the machine is decided later, from the environment: the endpoint
(`resolve_endpoint`), the token (`read_token`), the thresholds (`thresholds`) and whether each
rung can run at all (`availability`). An agent that cannot run is skipped with a reason, never
an error. Tokens are read when needed and never stored in these objects.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from razard.config import NAME_RE
from razard.configreader import ENV_NAME_RE, Reader, join_key, typename
from razard.errors import ConfigError, ConfigProblem
from razard.repair.types import AgentSkipped

KINDS: Final = ("openai", "opencode", "registry")
AUTHS: Final = ("none", "bearer")
REMOTE_KINDS: Final = frozenset({"openai", "opencode"})  # need an endpoint to run
OPENCODE_BINARY: Final = "opencode"
RSTAR_AGENT: Final = "rstar"  # the rung RAZAR_RSTAR_THRESHOLD governs

DEFAULT_AGENT_TIMEOUT: Final = 120.0
MAX_AGENT_TIMEOUT: Final = 3600.0
DEFAULT_MAX_ATTEMPTS: Final = 1
MAX_MAX_ATTEMPTS: Final = 100

RSTAR_THRESHOLD_ENV: Final = "RAZAR_RSTAR_THRESHOLD"
ESCALATION_WARNING_ENV: Final = "RAZAR_ESCALATION_WARNING_THRESHOLD"
DEFAULT_RSTAR_THRESHOLD: Final = 9

_URL_RE: Final = re.compile(r"^https?://[^/\s]+\S*$")
_INT_RE: Final = re.compile(r"^\s*[0-9]{1,9}\s*$")
_TOP_KEYS: Final = frozenset({"active", "agents"})
_AGENT_KEYS: Final = frozenset(
    {
        "name",
        "kind",
        "endpoint",
        "endpoint_env",
        "auth",
        "token_env",
        "token_file",
        "model",
        "timeout",
        "max_attempts",
        "config",
    }
)


@dataclass(frozen=True)
class AgentSpec:
    """One rung of the roster as configured; the endpoint and token are resolved at run time.

    ``endpoint`` is the base URL (``http://host:port/v1``); ``""`` means: only ``endpoint_env``
    can configure it. ``token_file`` is absolute once loaded (relative paths are taken from the
    roster file's directory). ``timeout`` is the deadline of one attempt, in seconds.
    ``config`` (opencode agents only) is overlaid on the ``opencode.json`` written into the
    scratch copy: provider settings, permissions.
    """

    name: str
    kind: str
    endpoint: str = ""
    endpoint_env: str = ""
    auth: str = "none"
    token_env: str = ""
    token_file: str = ""
    model: str = ""
    timeout: float = DEFAULT_AGENT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    config: Mapping[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Roster:
    """The agents in the order the ladder asks them; ``active`` is the rung the ladder starts at."""

    source: Path
    active: str
    agents: tuple[AgentSpec, ...]

    def agent(self, name: str) -> AgentSpec | None:
        """The agent called ``name``, or None."""
        return next((a for a in self.agents if a.name == name), None)

    def from_active(self) -> tuple[AgentSpec, ...]:
        """The agents the ladder asks: ``active`` and every one after it, in order."""
        names = [a.name for a in self.agents]
        start = names.index(self.active) if self.active in names else 0
        return self.agents[start:]


@dataclass(frozen=True)
class Thresholds:
    """Thresholds from the environment.

    ``rstar``: cumulative attempts across all agents before rStar takes over; 0 disables rStar.
    ``escalation_warning``: escalations in one boot or repair cycle before an operator
    warning; None means no warning.
    """

    rstar: int
    escalation_warning: int | None


# --------------------------------------------------------------------------- loading


def load_roster(path: Path) -> Roster:
    """Read and validate a roster file; raises `ConfigError` listing every problem by key."""
    file = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError([ConfigProblem(file, "(file)", e.strerror or str(e))]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(file, "(file)", f"not UTF-8: {e}")]) from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise ConfigError([ConfigProblem(file, "(syntax)", f"{where}: {e.msg}")]) from None
    except ValueError as e:  # a duplicate key
        raise ConfigError([ConfigProblem(file, "(syntax)", str(e))]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(file, "(syntax)", "nested too deeply")]) from None
    return parse_roster(data, path)


def parse_roster(data: Any, source: Path) -> Roster:
    """Turn a parsed JSON document into a `Roster`, or raise `ConfigError` with every problem."""
    r = Reader(str(source))
    if not isinstance(data, dict):
        r.problem(
            "(document)",
            f'expected a JSON object {{"active": ..., "agents": [...]}}, got {typename(data)}',
        )
        raise ConfigError(r.problems)
    r.unknown(data, "", _TOP_KEYS)
    base = source.resolve().parent
    agents: list[AgentSpec] = []
    raw_agents = data.get("agents")
    if raw_agents is None:
        r.problem("agents", "required key is missing")
        raw_agents = []
    elif not isinstance(raw_agents, list):
        r.problem("agents", f"expected an array of agent objects, got {typename(raw_agents)}")
        raw_agents = []
    elif not raw_agents:
        r.problem("agents", "at least one agent is required")
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_agents):
        spec = _parse_agent(r, raw, f"agents[{i}]", base)
        if spec is None:
            continue
        if spec.name in seen:
            r.problem(
                f"agents[{i}].name",
                f"duplicate name {spec.name!r} (also agents[{seen[spec.name]}])",
            )
            continue
        seen[spec.name] = i
        agents.append(spec)
    # every name written down counts, so a mistake elsewhere in an agent is not reported twice
    names = [
        a["name"] for a in raw_agents if isinstance(a, dict) and isinstance(a.get("name"), str)
    ]
    active = r.string(data, "", "active")
    if active is not None and names and active not in names:
        r.problem("active", f"{active!r} is not an agent here; expected one of: {', '.join(names)}")
    if r.problems:
        raise ConfigError(r.problems)
    return Roster(source=source, active=active or "", agents=tuple(agents))


def _parse_agent(r: Reader, raw: Any, prefix: str, base: Path) -> AgentSpec | None:
    if not isinstance(raw, dict):
        r.problem(prefix, f"expected an agent object, got {typename(raw)}")
        return None
    before = len(r.problems)
    r.unknown(raw, prefix, _AGENT_KEYS)
    name = r.string(raw, prefix, "name")
    if name is not None and not NAME_RE.fullmatch(name):
        r.problem(
            f"{prefix}.name",
            f"{name!r} is not a valid name: lower-case letters, digits, _ and -, "
            "starting with a letter or digit, at most 63 characters",
        )
    kind = r.string(raw, prefix, "kind")
    if kind is not None and kind not in KINDS:
        r.problem(f"{prefix}.kind", f"must be one of {', '.join(KINDS)}; got {kind!r}")
    endpoint = r.string(raw, prefix, "endpoint", "") or ""
    if endpoint and not _URL_RE.fullmatch(endpoint):
        r.problem(f"{prefix}.endpoint", f"expected an http:// or https:// URL, got {endpoint!r}")
    endpoint_env = _env_name(r, raw, prefix, "endpoint_env")
    auth = r.string(raw, prefix, "auth", "none") or "none"
    if auth not in AUTHS:
        r.problem(f"{prefix}.auth", f"must be one of {', '.join(AUTHS)}; got {auth!r}")
    token_env = _env_name(r, raw, prefix, "token_env")
    token_file = r.string(raw, prefix, "token_file", "") or ""
    if token_file:
        if "\0" in token_file or "\n" in token_file:
            r.problem(f"{prefix}.token_file", "cannot contain newlines or NUL")
        else:
            try:
                token_file = str(base / Path(token_file).expanduser())
            except RuntimeError as e:  # ~user that does not exist
                r.problem(f"{prefix}.token_file", f"cannot expand {token_file!r}: {e}")
    model = r.string(raw, prefix, "model", "") or ""
    timeout = r.number(
        raw, prefix, "timeout", DEFAULT_AGENT_TIMEOUT, 0.0, MAX_AGENT_TIMEOUT, lo_open=True
    )
    max_attempts = (
        r.integer(raw, prefix, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_MAX_ATTEMPTS)
        or DEFAULT_MAX_ATTEMPTS
    )
    config: dict[str, Any] = {}
    if "config" in raw:
        if kind != "opencode":
            r.problem(f"{prefix}.config", "only valid for opencode agents")
        elif not isinstance(raw["config"], dict):
            r.problem(f"{prefix}.config", f"expected an object, got {typename(raw['config'])}")
        else:
            config = raw["config"]
    cfg = raw.get("config")  # a config that is not an object is reported above, not twice here
    has_provider = cfg is not None and (not isinstance(cfg, dict) or "provider" in cfg)
    no_endpoint = not raw.get("endpoint") and not raw.get("endpoint_env") and not has_provider
    if kind in REMOTE_KINDS and no_endpoint:
        r.problem(
            f"{prefix}.endpoint",
            f"an {kind} agent needs endpoint or endpoint_env"
            + (" (or config.provider)" if kind == "opencode" else "")
            + ", else it can never run",
        )
    if auth == "bearer" and not raw.get("token_env") and not raw.get("token_file"):
        r.problem(f"{prefix}.auth", "bearer auth needs token_env or token_file")
    if len(r.problems) > before or name is None or kind is None:
        return None
    return AgentSpec(
        name=name,
        kind=kind,
        endpoint=endpoint,
        endpoint_env=endpoint_env,
        auth=auth,
        token_env=token_env,
        token_file=token_file,
        model=model,
        timeout=timeout,
        max_attempts=max_attempts,
        config=config,
    )


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r} in one object")
        out[k] = v
    return out


def _env_name(r: Reader, obj: Mapping[str, Any], prefix: str, key: str) -> str:
    value = r.string(obj, prefix, key, "") or ""
    if value and not ENV_NAME_RE.fullmatch(value):
        r.problem(join_key(prefix, key), f"{value!r} is not an environment variable name")
        return ""
    return value


# --------------------------------------------------------------------------- the environment


def resolve_endpoint(spec: AgentSpec, env: Mapping[str, str]) -> str:
    """The agent's base URL: ``env[spec.endpoint_env]`` when set and not empty, else the file's.

    ``""`` means the endpoint is not configured and the agent is skipped.
    """
    if spec.endpoint_env:
        value = env.get(spec.endpoint_env, "").strip()
        if value:
            return value
    return spec.endpoint


def read_token(spec: AgentSpec, env: Mapping[str, str]) -> str | None:
    """The agent's token: ``env[spec.token_env]``, else the first line of ``spec.token_file``.

    None when neither is set (or the file's first line is empty). An unreadable token file
    raises `AgentSkipped`; no message ever carries the token itself.
    """
    if spec.token_env:
        value = env.get(spec.token_env, "").strip()
        if value:
            return value
    if not spec.token_file:
        return None
    try:
        with open(spec.token_file, encoding="utf-8") as f:
            first = f.readline()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise AgentSkipped(f"token file {spec.token_file} unreadable: {reason}") from None
    except UnicodeDecodeError:
        raise AgentSkipped(f"token file {spec.token_file} unreadable: not UTF-8") from None
    return first.strip() or None


def thresholds(env: Mapping[str, str]) -> Thresholds:
    """`RAZAR_RSTAR_THRESHOLD` (default 9; 0 disables rStar) and
    `RAZAR_ESCALATION_WARNING_THRESHOLD` (unset, empty or 0: no warning).

    A value that is not a non-negative integer raises `ConfigError` naming the variable.
    """
    problems: list[ConfigProblem] = []

    def read(name: str) -> int | None:
        raw = env.get(name, "")
        if not raw.strip():
            return None
        if not _INT_RE.fullmatch(raw):
            problems.append(
                ConfigProblem(
                    "environment", f"${name}", f"expected a whole number >= 0, got {raw!r}"
                )
            )
            return None
        return int(raw)

    rstar = read(RSTAR_THRESHOLD_ENV)
    warning = read(ESCALATION_WARNING_ENV)
    if problems:
        raise ConfigError(problems)
    return Thresholds(
        rstar=DEFAULT_RSTAR_THRESHOLD if rstar is None else rstar,
        escalation_warning=warning or None,
    )


def availability(
    roster: Roster,
    env: Mapping[str, str],
    which: Callable[[str], str | None] = shutil.which,
) -> list[tuple[AgentSpec, str | None]]:
    """Each agent with None when it can run here, else the reason it is skipped.

    The reasons name what to set: ``endpoint not configured: set KIMI_K2_URL``,
    ``opencode not installed``, ``rStar disabled: RAZAR_RSTAR_THRESHOLD=0``,
    ``auth bearer but no token: set RSTAR_TOKEN``. The rung named ``rstar`` is the one
    ``RAZAR_RSTAR_THRESHOLD=0`` disables; an opencode agent whose ``config`` has a
    ``provider`` needs no endpoint. Raises `ConfigError` when the thresholds in the
    environment are not numbers.
    """
    limits = thresholds(env)
    return [(spec, _skip_reason(spec, env, which, limits)) for spec in roster.agents]


def _skip_reason(
    spec: AgentSpec,
    env: Mapping[str, str],
    which: Callable[[str], str | None],
    limits: Thresholds,
) -> str | None:
    if spec.kind == "registry":
        return None
    if spec.name == RSTAR_AGENT and limits.rstar == 0:
        return f"rStar disabled: {RSTAR_THRESHOLD_ENV}=0"
    if spec.kind == "opencode" and which(OPENCODE_BINARY) is None:
        return f"{OPENCODE_BINARY} not installed"
    endpoint = resolve_endpoint(spec, env)
    # opencode can reach its model through the providers in its own config instead
    if not endpoint and not (spec.kind == "opencode" and "provider" in spec.config):
        where = f"set {spec.endpoint_env}" if spec.endpoint_env else "set endpoint in the roster"
        return f"endpoint not configured: {where}"
    if endpoint and not _URL_RE.fullmatch(endpoint):  # not shown: a URL may carry credentials
        return f"endpoint not usable: {spec.endpoint_env} is not an http:// or https:// URL"
    if spec.auth == "bearer":
        try:
            token = read_token(spec, env)
        except AgentSkipped as e:
            return str(e)
        if token is None:
            ways = [f"set {spec.token_env}"] if spec.token_env else []
            ways += [f"write {spec.token_file}"] if spec.token_file else []
            return f"auth bearer but no token: {' or '.join(ways)}"
    return None

"""razard's configuration: TOML in, frozen typed objects out.

Parsing never stops at the first mistake: every problem is collected with the
file, the dotted key and the reason, and raised together as one `ConfigError`.
Unknown keys are problems too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from agents.layers import LAYERS, Layer
from razard.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from agents.config import ChakraConfig
    from agents.monitoring import MonitoringConfig
    from razard.escalation.config import EscalationConfig
    from razard.fleet.config import FleetConfig

BusKind = Literal["system", "user"]
ProbeKind = Literal["exec", "http", "tcp"]

DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1"
DEFAULT_METRICS_PORT: Final = 9360
DEFAULT_STATE_DIR: Final = "/var/lib/razard"
DEFAULT_START_TIMEOUT: Final = 30.0
DEFAULT_PROBE_INTERVAL: Final = 5.0
DEFAULT_PROBE_TIMEOUT: Final = 2.0
DEFAULT_PROBE_THRESHOLD: Final = 3
DEFAULT_RESTART_ATTEMPTS: Final = 5
DEFAULT_BACKOFF_BASE: Final = 1.0
DEFAULT_BACKOFF_CAP: Final = 60.0
DEFAULT_HEALTHY_WINDOW: Final = 300.0
DEFAULT_JITTER: Final = 0.2
METRICS_PORT_ENV: Final = "RAZAR_METRICS_PORT"

NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
UNIT_RE: Final = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|mount|timer|scope)$")
_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USER_RE: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


@dataclass(frozen=True)
class ProbeConfig:
    """How to tell whether a running component is healthy."""

    kind: ProbeKind
    interval: float = DEFAULT_PROBE_INTERVAL
    timeout: float = DEFAULT_PROBE_TIMEOUT
    failure_threshold: int = DEFAULT_PROBE_THRESHOLD
    command: tuple[str, ...] = ()  # exec
    url: str = ""  # http
    expect_status: int = 200  # http
    host: str = "127.0.0.1"  # tcp
    port: int = 0  # tcp


@dataclass(frozen=True)
class RestartPolicy:
    """Restart budget and exponential backoff; resets after a healthy window."""

    attempts: int = DEFAULT_RESTART_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    healthy_window: float = DEFAULT_HEALTHY_WINDOW
    jitter: float = DEFAULT_JITTER


@dataclass(frozen=True)
class ComponentConfig:
    """One supervised component: an existing unit, or a command razard wraps in a unit."""

    name: str
    layer: Layer
    priority: int
    unit: str  # the unit name; for command components, the one razard writes
    command: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    working_directory: str = ""
    user: str = ""
    probe: ProbeConfig | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    artifacts: tuple[str, ...] = ()  # relative to artifact_root: what a repair may change
    artifact_root: str = ""  # absolute; defaults to working_directory
    start_timeout: float = DEFAULT_START_TIMEOUT
    description: str = ""
    heartbeat: bool = False  # the component beats in <runtime_dir>/heartbeat/<layer>/<name>

    @property
    def owned(self) -> bool:
        """True when razard writes and owns the unit file (a ``command`` component)."""
        return bool(self.command)


@dataclass(frozen=True)
class DaemonConfig:
    """The ``[razard]`` table."""

    state_dir: Path = Path(DEFAULT_STATE_DIR)
    bus: BusKind = "system"
    metrics_address: str = DEFAULT_METRICS_ADDRESS
    metrics_port: int = DEFAULT_METRICS_PORT
    unit_dir: Path | None = None  # where owned unit files go; None: derived from bus


@dataclass(frozen=True)
class Config:
    """The whole configuration, as read from ``source``."""

    source: Path
    daemon: DaemonConfig
    components: tuple[ComponentConfig, ...]
    chakra: ChakraConfig = field(default_factory=lambda: _default_chakra())
    monitoring: MonitoringConfig = field(default_factory=lambda: _default_monitoring())
    escalation: EscalationConfig = field(default_factory=lambda: _default_escalation())
    fleet: FleetConfig = field(default_factory=lambda: _default_fleet())

    def component(self, name: str) -> ComponentConfig | None:
        for c in self.components:
            if c.name == name:
                return c
        return None

    def with_retries(self, attempts: int) -> Config:
        """The same config with every component's restart budget set to ``attempts``."""
        from dataclasses import replace

        comps = tuple(
            replace(c, restart=replace(c.restart, attempts=attempts)) for c in self.components
        )
        return replace(self, components=comps)


def _default_chakra() -> ChakraConfig:
    from agents.config import parse_chakra

    return parse_chakra(Reader(""), None, Path("."))


def _default_monitoring() -> MonitoringConfig:
    from agents.monitoring import parse_monitoring

    return parse_monitoring(Reader(""), None)


def _default_escalation() -> EscalationConfig:
    from razard.escalation.config import EscalationConfig

    return EscalationConfig()


def _default_fleet() -> FleetConfig:
    from razard.fleet.config import FleetConfig

    return FleetConfig()


def unit_name_for(name: str) -> str:
    """The unit razard writes for a ``command`` component."""
    return f"razar-{name}.service"


# --------------------------------------------------------------------------- parsing


class Reader:
    """Collects problems while reading typed values out of parsed TOML or JSON objects."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(ConfigProblem(self.file, key, reason))

    def table(self, value: Any, key: str) -> Mapping[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(key, f"expected a table, got {typename(value)}")
            return None
        return value

    def unknown(self, table: Mapping[str, Any], prefix: str, allowed: AbstractSet[str]) -> None:
        for k in table:
            if k not in allowed:
                hint = f"; expected one of: {', '.join(sorted(allowed))}"
                self.problem(join_key(prefix, shown_key(str(k))), f"unknown key{hint}")

    def string(
        self, table: Mapping[str, Any], prefix: str, key: str, default: str | None = None
    ) -> str | None:
        if key not in table:
            if default is None:
                self.problem(join_key(prefix, key), "required key is missing")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.problem(join_key(prefix, key), f"expected a string, got {typename(value)}")
            return default
        return value

    def integer(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        default: int | None,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        if key not in table:
            if default is None:
                self.problem(join_key(prefix, key), "required key is missing")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(join_key(prefix, key), f"expected an integer, got {typename(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(join_key(prefix, key), f"must be between {lo} and {hi}, got {value}")
            return default
        return value

    def number(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        default: float,
        lo: float,
        hi: float,
        *,
        lo_open: bool = False,
    ) -> float:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(
                join_key(prefix, key), f"expected a number of seconds, got {typename(value)}"
            )
            return default
        try:
            f = float(value)
        except OverflowError:  # an integer too large for a float is out of range either way
            f = math.inf if value > 0 else -math.inf
        if f != f or f > hi or f < lo or (lo_open and f == lo):
            op = ">" if lo_open else ">="
            self.problem(join_key(prefix, key), f"must be {op} {lo:g} and <= {hi:g}, got {value}")
            return default
        return f

    def argv(self, table: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...] | None:
        value = table[key]
        if isinstance(value, str):
            self.problem(
                join_key(prefix, key),
                'expected a list of strings (argv), e.g. ["/usr/bin/app", "--port", "80"]',
            )
            return None
        if not isinstance(value, list) or not value:
            self.problem(join_key(prefix, key), "expected a non-empty list of strings (argv)")
            return None
        if not all(isinstance(v, str) for v in value):
            self.problem(join_key(prefix, key), "every element must be a string")
            return None
        if any(has_control(v) for v in value):
            self.problem(join_key(prefix, key), "arguments cannot contain control characters")
            return None
        if not value[0]:
            self.problem(join_key(prefix, key), "the program (first element) is empty")
            return None
        return tuple(value)


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (\\r and \\n end a line in a unit file)."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def shown_key(key: str) -> str:
    """A key as an error names it: bare when plain, quoted (JSON) when empty or odd, so a
    hostile key (escapes that repaint the terminal) never reaches it raw."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def join_key(prefix: str, key: str) -> str:
    """``prefix.key`` (or ``key`` at the top level): how a problem names its key."""
    return f"{prefix}.{key}" if prefix else key


def typename(value: Any) -> str:
    """How a problem names the type it got: "a table", "an array", ..."""
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(value), type(value).__name__)


_DAEMON_KEYS = {"state_dir", "bus", "metrics_address", "metrics_port", "unit_dir"}
_COMPONENT_KEYS = {
    "name",
    "heartbeat",
    "unit",
    "command",
    "environment",
    "working_directory",
    "user",
    "priority",
    "layer",
    "probe",
    "restart",
    "artifacts",
    "artifact_root",
    "start_timeout",
    "description",
}
_PROBE_KEYS = {
    "type",
    "interval",
    "timeout",
    "failure_threshold",
    "command",
    "url",
    "expect_status",
    "host",
    "port",
}
_PROBE_ONLY = {"exec": {"command"}, "http": {"url", "expect_status"}, "tcp": {"host", "port"}}
_RESTART_KEYS = {"attempts", "backoff_base", "backoff_cap", "healthy_window", "jitter"}


def _resolve(base: Path, raw: str) -> Path:
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (base / p)


def _resolve_key(r: Reader, base: Path, raw: str, key: str) -> Path | None:
    """`_resolve`, recording a problem (not raising) when ``~`` or ``~user`` cannot expand."""
    try:
        return _resolve(base, raw)
    except (RuntimeError, ValueError, KeyError) as e:
        r.problem(key, f"cannot expand {raw!r}: {e}")
        return None


def _parse_daemon(r: Reader, raw: Any, base: Path, env: Mapping[str, str]) -> DaemonConfig:
    t = r.table(raw, "razard") if raw is not None else {}
    if t is None:
        return DaemonConfig()
    r.unknown(t, "razard", _DAEMON_KEYS)
    state_dir = r.string(t, "razard", "state_dir", DEFAULT_STATE_DIR) or DEFAULT_STATE_DIR
    bus = r.string(t, "razard", "bus", "system")
    if bus not in ("system", "user"):
        r.problem("razard.bus", f'must be "system" or "user", got {bus!r}')
        bus = "system"
    addr = r.string(t, "razard", "metrics_address", DEFAULT_METRICS_ADDRESS)
    try:
        ipaddress.ip_address(addr or "")
    except ValueError:
        r.problem(
            "razard.metrics_address", f"expected an IP address such as 127.0.0.1, got {addr!r}"
        )
        addr = DEFAULT_METRICS_ADDRESS
    port = r.integer(t, "razard", "metrics_port", DEFAULT_METRICS_PORT, 0, 65535)
    env_port = env.get(METRICS_PORT_ENV)
    if env_port is not None:
        if re.fullmatch(r"[0-9]{1,5}", env_port) and int(env_port) <= 65535:
            port = int(env_port)
        else:
            r.problem(f"${METRICS_PORT_ENV}", f"must be a port number 0-65535, got {env_port!r}")
    unit_dir_raw = r.string(t, "razard", "unit_dir", "")
    state_path = _resolve_key(r, base, state_dir, "razard.state_dir") or Path(DEFAULT_STATE_DIR)
    unit_path = _resolve_key(r, base, unit_dir_raw, "razard.unit_dir") if unit_dir_raw else None
    return DaemonConfig(
        state_dir=state_path,
        bus=bus,  # type: ignore[arg-type]
        metrics_address=addr or DEFAULT_METRICS_ADDRESS,
        metrics_port=port if port is not None else DEFAULT_METRICS_PORT,
        unit_dir=unit_path,
    )


def _parse_probe(r: Reader, raw: Any, prefix: str) -> ProbeConfig | None:
    t = r.table(raw, prefix)
    if t is None:
        return None
    r.unknown(t, prefix, _PROBE_KEYS)
    kind = r.string(t, prefix, "type")
    if kind is None:
        return None
    if kind not in _PROBE_ONLY:
        r.problem(join_key(prefix, "type"), f'must be "exec", "http" or "tcp", got {kind!r}')
        return None
    for other, keys in _PROBE_ONLY.items():
        if other != kind:
            for k in keys & set(t) - _PROBE_ONLY[kind]:
                r.problem(join_key(prefix, k), f"only valid for {other} probes, this is {kind}")
    interval = r.number(t, prefix, "interval", DEFAULT_PROBE_INTERVAL, 0.0, 86400.0, lo_open=True)
    timeout = r.number(t, prefix, "timeout", DEFAULT_PROBE_TIMEOUT, 0.0, 3600.0, lo_open=True)
    threshold = r.integer(t, prefix, "failure_threshold", DEFAULT_PROBE_THRESHOLD, 1, 1000)
    command: tuple[str, ...] = ()
    url = ""
    expect_status = 200
    host = "127.0.0.1"
    port = 0
    if kind == "exec":
        if "command" not in t:
            r.problem(join_key(prefix, "command"), "required for exec probes")
        else:
            command = r.argv(t, prefix, "command") or ()
            if command and not command[0].startswith("/"):
                # a relative program is looked up in the working directory or PATH,
                # both of which someone other than root may control
                r.problem(
                    join_key(prefix, "command"),
                    f"the program must be an absolute path, got {command[0]!r}",
                )
                command = ()
    elif kind == "http":
        url = r.string(t, prefix, "url") or ""
        if url and not re.match(r"^https?://[^/\s]+", url):
            r.problem(join_key(prefix, "url"), f"expected an http:// or https:// URL, got {url!r}")
        expect_status = r.integer(t, prefix, "expect_status", 200, 100, 599) or 200
    else:
        host = r.string(t, prefix, "host", "127.0.0.1") or "127.0.0.1"
        port = r.integer(t, prefix, "port", None, 1, 65535) or 0
    return ProbeConfig(
        kind=kind,  # type: ignore[arg-type]
        interval=interval,
        timeout=timeout,
        failure_threshold=threshold or DEFAULT_PROBE_THRESHOLD,
        command=command,
        url=url,
        expect_status=expect_status,
        host=host,
        port=port,
    )


def _parse_restart(r: Reader, raw: Any, prefix: str) -> RestartPolicy:
    t = r.table(raw, prefix)
    if t is None:
        return RestartPolicy()
    r.unknown(t, prefix, _RESTART_KEYS)
    attempts = r.integer(t, prefix, "attempts", DEFAULT_RESTART_ATTEMPTS, 0, 10000)
    base = r.number(t, prefix, "backoff_base", DEFAULT_BACKOFF_BASE, 0.0, 3600.0)
    cap = r.number(t, prefix, "backoff_cap", DEFAULT_BACKOFF_CAP, 0.0, 86400.0)
    if cap < base:
        r.problem(
            join_key(prefix, "backoff_cap"), f"must be >= backoff_base ({base:g}), got {cap:g}"
        )
    window = r.number(t, prefix, "healthy_window", DEFAULT_HEALTHY_WINDOW, 0.0, 7 * 86400.0)
    jitter = r.number(t, prefix, "jitter", DEFAULT_JITTER, 0.0, 1.0)
    return RestartPolicy(
        attempts=attempts if attempts is not None else DEFAULT_RESTART_ATTEMPTS,
        backoff_base=base,
        backoff_cap=max(cap, base),
        healthy_window=window,
        jitter=jitter,
    )


def _parse_component(r: Reader, raw: Any, index: int) -> ComponentConfig | None:
    prefix = f"component[{index}]"
    t = r.table(raw, prefix)
    if t is None:
        return None
    n_before = len(r.problems)
    name = r.string(t, prefix, "name")
    if name is not None:
        if not NAME_RE.fullmatch(name):
            r.problem(
                join_key(prefix, "name"),
                f"{name!r} is not a valid name: lower-case letters, digits, _ and -, "
                "starting with a letter or digit, at most 63 characters",
            )
        else:
            prefix = f"component[{index}] ({name})"
    r.unknown(t, prefix, _COMPONENT_KEYS)
    layer = r.string(t, prefix, "layer")
    if layer is not None and layer not in LAYERS:
        r.problem(join_key(prefix, "layer"), f"must be one of {', '.join(LAYERS)}; got {layer!r}")
    priority = r.integer(t, prefix, "priority", None, 0, 1_000_000)

    unit = ""
    command: tuple[str, ...] = ()
    has_unit, has_cmd = "unit" in t, "command" in t
    if has_unit == has_cmd:
        r.problem(
            prefix, "exactly one of `unit` (an existing unit) or `command` (argv) is required"
        )
    elif has_unit:
        unit = r.string(t, prefix, "unit") or ""
        if unit and not UNIT_RE.fullmatch(unit):
            r.problem(join_key(prefix, "unit"), f"{unit!r} is not a unit name like app.service")
        for k in ("environment", "working_directory", "user"):
            if k in t:
                r.problem(
                    join_key(prefix, k),
                    "only valid with `command`: razard does not edit units it does not own",
                )
    else:
        command = r.argv(t, prefix, "command") or ()
        if command and not command[0].startswith("/"):
            r.problem(
                join_key(prefix, "command"),
                f"the program must be an absolute path (systemd runs it without a shell), "
                f"got {command[0]!r}",
            )

    environment: list[tuple[str, str]] = []
    if "environment" in t:
        env_t = r.table(t["environment"], join_key(prefix, "environment"))
        for k, v in (env_t or {}).items():
            key = join_key(join_key(prefix, "environment"), k)
            if not ENV_NAME_RE.fullmatch(k):
                r.problem(key, "not a valid environment variable name")
            elif not isinstance(v, str):
                r.problem(key, f"expected a string, got {typename(v)}")
            elif has_control(v):
                r.problem(key, "value cannot contain control characters (newline, CR, NUL...)")
            else:
                environment.append((k, v))
    working_directory = r.string(t, prefix, "working_directory", "") or ""
    if working_directory and (
        not working_directory.startswith("/")
        or has_control(working_directory)
        or working_directory.endswith("\\")  # a unit file's line continuation
    ):
        r.problem(
            join_key(prefix, "working_directory"),
            "must be an absolute path without newlines, NUL or a trailing backslash",
        )
    user = r.string(t, prefix, "user", "") or ""
    if user and not USER_RE.fullmatch(user):
        r.problem(join_key(prefix, "user"), f"{user!r} is not a valid user name")

    probe = _parse_probe(r, t["probe"], join_key(prefix, "probe")) if "probe" in t else None
    restart = (
        _parse_restart(r, t["restart"], join_key(prefix, "restart"))
        if "restart" in t
        else RestartPolicy()
    )

    artifacts: list[str] = []
    if "artifacts" in t:
        raw_a = t["artifacts"]
        key = join_key(prefix, "artifacts")
        if not isinstance(raw_a, list) or not all(isinstance(a, str) for a in raw_a):
            r.problem(key, "expected a list of path strings")
        else:
            for a in raw_a:
                bad = not a or has_control(a) or a.startswith("/")
                if bad or ".." in Path(a).parts:
                    r.problem(
                        key,
                        f"{a!r}: artifacts are paths relative to artifact_root "
                        "(not empty, not absolute, no '..')",
                    )
                else:
                    artifacts.append(a)
    artifact_root = r.string(t, prefix, "artifact_root", "") or ""
    if artifact_root and (not artifact_root.startswith("/") or has_control(artifact_root)):
        r.problem(join_key(prefix, "artifact_root"), "must be an absolute path")
    artifact_root = artifact_root or working_directory
    if artifacts and not artifact_root:
        r.problem(
            join_key(prefix, "artifact_root"),
            "required with artifacts (or set working_directory): the directory they are in",
        )
    start_timeout = r.number(
        t, prefix, "start_timeout", DEFAULT_START_TIMEOUT, 0.0, 86400.0, lo_open=True
    )
    description = r.string(t, prefix, "description", "") or ""
    if has_control(description):
        r.problem(join_key(prefix, "description"), "cannot contain control characters")
    heartbeat = t.get("heartbeat", False)
    if not isinstance(heartbeat, bool):
        r.problem(
            join_key(prefix, "heartbeat"), f"expected true or false, got {typename(heartbeat)}"
        )
        heartbeat = False

    if len(r.problems) > n_before or name is None or layer is None or priority is None:
        return None
    return ComponentConfig(
        name=name,
        layer=layer,  # type: ignore[arg-type]
        priority=priority,
        unit=unit or unit_name_for(name),
        command=command,
        environment=tuple(environment),
        working_directory=working_directory,
        user=user,
        probe=probe,
        restart=restart,
        artifacts=tuple(artifacts),
        artifact_root=artifact_root,
        start_timeout=start_timeout,
        description=description,
        heartbeat=heartbeat,
    )


def parse_config(
    data: Mapping[str, Any], source: Path, env: Mapping[str, str] | None = None
) -> Config:
    """Turn a parsed TOML document into a `Config`, or raise `ConfigError` with every problem."""
    env = os.environ if env is None else env
    r = Reader(str(source))
    r.unknown(data, "", {"razard", "component", "chakra", "monitoring", "escalation", "fleet"})
    base = source.parent
    daemon = _parse_daemon(r, data.get("razard"), base, env)
    from agents.config import parse_chakra

    xdg = env.get("XDG_RUNTIME_DIR", "")
    runtime = Path(xdg) / "razard" if daemon.bus == "user" and xdg else Path("/run/razard")
    chakra = parse_chakra(r, data.get("chakra"), base, runtime)
    from agents.monitoring import parse_monitoring

    monitoring = parse_monitoring(
        r,
        data.get("monitoring"),
        metrics_address=daemon.metrics_address,
        metrics_port=daemon.metrics_port,
    )
    from razard.escalation.config import parse_escalation

    escalation = parse_escalation(r, data.get("escalation"), base)
    from razard.fleet.config import parse_fleet

    fleet = parse_fleet(r, data.get("fleet"), base)
    components: list[ComponentConfig] = []
    raw_components = data.get("component", [])
    if not isinstance(raw_components, list):
        r.problem("component", "expected an array of tables ([[component]])")
        raw_components = []
    seen_names: dict[str, int] = {}
    seen_units: dict[str, str] = {}
    for i, raw in enumerate(raw_components):
        c = _parse_component(r, raw, i)
        if c is None:
            continue
        if c.name in seen_names:
            r.problem(
                f"component[{i}].name",
                f"duplicate name {c.name!r} (also component[{seen_names[c.name]}])",
            )
            continue
        if c.unit in seen_units:
            r.problem(
                f"component[{i}] ({c.name}).unit",
                f"unit {c.unit} is already supervised by component {seen_units[c.unit]!r}",
            )
            continue
        seen_names[c.name] = i
        seen_units[c.unit] = c.name
        components.append(c)
    if r.problems:
        raise ConfigError(r.problems)
    return Config(
        source=source,
        daemon=daemon,
        components=tuple(components),
        chakra=chakra,
        monitoring=monitoring,
        escalation=escalation,
        fleet=fleet,
    )


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raises `ConfigError` naming the file on any problem."""
    source = Path(path)
    try:
        raw = source.read_bytes()
    except OSError as e:
        raise ConfigError([ConfigProblem(str(source), "(file)", e.strerror or str(e))]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(str(source), "(file)", f"not UTF-8: {e}")]) from None
    except ValueError as e:  # TOMLDecodeError, or an integer too long to convert
        raise ConfigError([ConfigProblem(str(source), "(syntax)", str(e))]) from None
    except RecursionError:
        raise ConfigError([ConfigProblem(str(source), "(syntax)", "nested too deeply")]) from None
    return parse_config(data, source.resolve(), env)

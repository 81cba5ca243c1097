"""razard's configuration: TOML in, frozen typed objects out.

Parsing never stops at the first mistake: every problem is collected with the
file, the dotted key and the reason, and raised together as one `ConfigError`.
Unknown keys are problems too, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from razard.chakra_config import ChakraConfig, parse_chakra
from razard.configreader import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    ENV_NAME_RE,
    METRICS_PORT_ENV,
    Reader,
    has_control,
    join_key,
    resolve_key,
    typename,
)
from razard.errors import ConfigError, ConfigProblem
from razard.escalation.config import EscalationConfig, parse_escalation
from razard.fleet.config import FleetConfig, parse_fleet
from razard.layers import LAYERS, Layer
from razard.layout import DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR
from razard.monitoring_config import MonitoringConfig, parse_monitoring

BusKind = Literal["system", "user"]
ProbeKind = Literal["exec", "http", "tcp"]

DEFAULT_START_TIMEOUT: Final = 30.0
DEFAULT_PROBE_INTERVAL: Final = 5.0
DEFAULT_PROBE_TIMEOUT: Final = 2.0
DEFAULT_PROBE_THRESHOLD: Final = 3
DEFAULT_RESTART_ATTEMPTS: Final = 5
DEFAULT_BACKOFF_BASE: Final = 1.0
DEFAULT_BACKOFF_CAP: Final = 60.0
DEFAULT_HEALTHY_WINDOW: Final = 300.0
DEFAULT_JITTER: Final = 0.2

NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
UNIT_RE: Final = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.(service|socket|target|mount|timer|scope)$")
USER_RE: Final = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Restart budget and exponential backoff; resets after a healthy window."""

    attempts: int = DEFAULT_RESTART_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    healthy_window: float = DEFAULT_HEALTHY_WINDOW
    jitter: float = DEFAULT_JITTER


#: The restart policy of a component without a ``[component.restart]`` table (immutable:
#: every such component shares it).
DEFAULT_RESTART: Final = RestartPolicy()


# slots: razard holds one of each per component (hundreds); no per-instance __dict__
@dataclass(frozen=True, slots=True)
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
    restart: RestartPolicy = DEFAULT_RESTART
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
    escalation: EscalationConfig = field(default_factory=EscalationConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def component(self, name: str) -> ComponentConfig | None:
        for c in self.components:
            if c.name == name:
                return c
        return None

    def with_retries(self, attempts: int) -> Config:
        """The same config with every component's restart budget set to ``attempts``."""
        # components with equal policies (shared: `Reader.shared`) share the replacement
        new = {p: replace(p, attempts=attempts) for p in {c.restart for c in self.components}}
        comps = tuple(replace(c, restart=new[c.restart]) for c in self.components)
        return replace(self, components=comps)


def _default_chakra() -> ChakraConfig:
    return parse_chakra(Reader(""), None, Path("."))


def _default_monitoring() -> MonitoringConfig:
    return parse_monitoring(Reader(""), None)


def unit_name_for(name: str) -> str:
    """The unit razard writes for a ``command`` component."""
    return f"razar-{name}.service"


# --------------------------------------------------------------------------- parsing


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
    state_path = resolve_key(r, base, state_dir, "razard.state_dir") or Path(DEFAULT_STATE_DIR)
    unit_path = resolve_key(r, base, unit_dir_raw, "razard.unit_dir") if unit_dir_raw else None
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
    return r.shared(
        ProbeConfig(
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
    )


def _parse_restart(r: Reader, raw: Any, prefix: str) -> RestartPolicy:
    t = r.table(raw, prefix)
    if t is None:
        return DEFAULT_RESTART
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
    return r.shared(
        RestartPolicy(
            attempts=attempts if attempts is not None else DEFAULT_RESTART_ATTEMPTS,
            backoff_base=base,
            backoff_cap=max(cap, base),
            healthy_window=window,
            jitter=jitter,
        )
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
                environment.append((r.shared(k), r.shared(v)))
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
        else DEFAULT_RESTART
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
                    artifacts.append(r.shared(a))
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
    xdg = env.get("XDG_RUNTIME_DIR", "")
    runtime = Path(xdg) / "razard" if daemon.bus == "user" and xdg else Path(DEFAULT_RUNTIME_DIR)
    chakra = parse_chakra(r, data.get("chakra"), base, runtime)
    monitoring = parse_monitoring(
        r,
        data.get("monitoring"),
        metrics_address=daemon.metrics_address,
        metrics_port=daemon.metrics_port,
    )
    escalation = parse_escalation(r, data.get("escalation"), base)
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

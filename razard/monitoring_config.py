"""The ``[monitoring]`` table of razard.toml: which Prometheus exporters the monitoring check
scrapes and what each must export (``agents/monitoring.py`` scrapes them).

    [monitoring]
    max_age = 60            # default for every endpoint (seconds)
    timeout = 5             # default for every endpoint (seconds)

    [[monitoring.endpoint]]
    name = "gpu"            # default: the kind (required for kind "custom")
    kind = "gpu_exporter"   # razard | node_exporter | gpu_exporter | cadvisor | custom
    url = "http://127.0.0.1:9400/metrics"   # default per kind; required for custom
    expect = ["DCGM_FI_DEV_GPU_UTIL"]       # default per kind (custom: none)
    optional = true         # default false
    max_age = 30
    timeout = 2

It lives beside razard/config.py, below the agents, so the whole-file config reads it
without importing the monitoring check (which loads the whole file back).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from razard.configreader import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    Reader,
    has_control,
    join_key,
    typename,
)

Kind = Literal["razard", "node_exporter", "gpu_exporter", "cadvisor", "custom"]
KINDS: Final[tuple[Kind, ...]] = ("razard", "node_exporter", "gpu_exporter", "cadvisor", "custom")

#: The families each kind is expected to export unless an endpoint lists its own.
DEFAULT_EXPECT: Final[Mapping[Kind, tuple[str, ...]]] = {
    "razard": (
        "razar_component_up",
        "razar_component_state",
        "razar_component_restarts_total",
        "chakra_pulse_hz",
        "chakra_alignment",
        "razar_heal_attempts_total",
    ),
    # collectors enabled by default in node_exporter 1.5 (Debian 12's
    # prometheus-node-exporter): cpu, meminfo, loadavg, netclass, filesystem,
    # time, uname. PSI (node_pressure_*) is left out: kernels may lack it.
    "node_exporter": (
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "node_network_up",
        "node_filesystem_avail_bytes",
        "node_time_seconds",
        "node_uname_info",
    ),
    "gpu_exporter": (
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_XID_ERRORS",
    ),
    "cadvisor": ("container_cpu_usage_seconds_total", "container_memory_working_set_bytes"),
    "custom": (),
}

#: Where each kind listens by default (razard's comes from its own config).
DEFAULT_URLS: Final[Mapping[Kind, str]] = {
    "node_exporter": "http://127.0.0.1:9100/metrics",
    "gpu_exporter": "http://127.0.0.1:9400/metrics",
    "cadvisor": "http://127.0.0.1:8080/metrics",
}
#: Kinds whose default endpoint may be absent: a node without GPUs, without containers.
DEFAULT_OPTIONAL: Final[frozenset[Kind]] = frozenset({"gpu_exporter", "cadvisor"})

DEFAULT_MAX_AGE: Final = 60.0
DEFAULT_TIMEOUT: Final = 5.0

ENDPOINT_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
METRIC_NAME_RE: Final = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

_MONITORING_KEYS: Final = frozenset({"endpoint", "max_age", "timeout"})
_ENDPOINT_KEYS: Final = frozenset(
    {"name", "url", "kind", "expect", "optional", "max_age", "timeout"}
)


@dataclass(frozen=True)
class Endpoint:
    """One exporter to scrape and what it must export."""

    name: str
    url: str
    kind: Kind = "custom"
    expect: tuple[str, ...] = ()
    optional: bool = False  # unreachable -> skipped, not a gap
    max_age: float = DEFAULT_MAX_AGE  # seconds; older readings are stale
    timeout: float = DEFAULT_TIMEOUT  # seconds for the whole scrape


@dataclass(frozen=True)
class MonitoringConfig:
    """The ``[monitoring]`` table: the endpoints to check.

    ``configured`` is False when the endpoints are the built-in defaults.
    """

    endpoints: tuple[Endpoint, ...]
    configured: bool = False
    max_age: float = DEFAULT_MAX_AGE
    timeout: float = DEFAULT_TIMEOUT


def razard_url(metrics_address: str, metrics_port: int) -> str:
    """The URL razard's own metrics are scraped at, given ``[razard]``'s address and port.

    A wildcard address (``0.0.0.0``, ``::``) is scraped on the loopback address.
    """
    host = metrics_address
    try:
        ip = ipaddress.ip_address(metrics_address)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    return f"http://{host}:{metrics_port}/metrics"


def default_endpoints(
    metrics_address: str = DEFAULT_METRICS_ADDRESS,
    metrics_port: int = DEFAULT_METRICS_PORT,
    max_age: float = DEFAULT_MAX_AGE,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Endpoint, ...]:
    """The endpoints checked when no ``[[monitoring.endpoint]]`` is configured."""
    out = [
        Endpoint(
            name="razard",
            url=razard_url(metrics_address, metrics_port),
            kind="razard",
            expect=DEFAULT_EXPECT["razard"],
            max_age=max_age,
            timeout=timeout,
        )
    ]
    for kind in ("node_exporter", "gpu_exporter", "cadvisor"):
        out.append(
            Endpoint(
                name=kind,
                url=DEFAULT_URLS[kind],
                kind=kind,
                expect=DEFAULT_EXPECT[kind],
                optional=kind in DEFAULT_OPTIONAL,
                max_age=max_age,
                timeout=timeout,
            )
        )
    return tuple(out)


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be scraped, or None: it must be http(s) with a host."""
    if not url or has_control(url) or any(ch.isspace() for ch in url):
        return f"expected an http:// or https:// URL without spaces, got {url!r}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError as e:
        return f"expected an http:// or https:// URL, got {url!r} ({e})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL, got {url!r}"
    import httpx  # only a config with [[monitoring.endpoint]] urls pays for it

    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as e:
        return f"expected an http:// or https:// URL, got {url!r} ({e})"
    return None


def display_url(url: str) -> str:
    """``url`` as reports show it: a password in it is replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _flag(r: Reader, t: Mapping[str, Any], prefix: str, key: str, default: bool) -> bool:
    if key not in t:
        return default
    value = t[key]
    if not isinstance(value, bool):
        r.problem(join_key(prefix, key), f"expected true or false, got {typename(value)}")
        return default
    return value


def _expect(
    r: Reader, t: Mapping[str, Any], prefix: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    if "expect" not in t:
        return default
    value = t["expect"]
    key = join_key(prefix, "expect")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.problem(key, "expected a list of metric family names")
        return default
    bad = [v for v in value if not METRIC_NAME_RE.fullmatch(v)]
    if bad:
        r.problem(key, f"not metric names: {', '.join(repr(b) for b in bad)}")
        return default
    return tuple(dict.fromkeys(value))  # keep order, drop repeats


def parse_endpoint(
    r: Reader,
    raw: Any,
    prefix: str,
    *,
    metrics_address: str = DEFAULT_METRICS_ADDRESS,
    metrics_port: int = DEFAULT_METRICS_PORT,
    max_age: float = DEFAULT_MAX_AGE,
    timeout: float = DEFAULT_TIMEOUT,
) -> Endpoint | None:
    """One ``[[monitoring.endpoint]]`` table, or None (with problems recorded in ``r``)."""
    t = r.table(raw, prefix)
    if t is None:
        return None
    n_before = len(r.problems)
    raw_kind = t.get("kind")
    # a known kind names its endpoint by default; custom ones need a name
    named_by_kind = isinstance(raw_kind, str) and raw_kind in KINDS and raw_kind != "custom"
    name = r.string(t, prefix, "name", raw_kind if named_by_kind else None)
    if name is not None:
        if not ENDPOINT_NAME_RE.fullmatch(name):
            r.problem(
                join_key(prefix, "name"),
                f"{name!r} is not a valid name: letters, digits, '_', '-' and '.', "
                "starting with a letter or digit, at most 63 characters",
            )
        elif "name" in t and prefix != name:
            prefix = f"{prefix} ({name})"
    r.unknown(t, prefix, _ENDPOINT_KEYS)
    kind_text = r.string(t, prefix, "kind", "custom")
    kind: Kind = "custom"
    if kind_text in KINDS:
        kind = kind_text
    else:
        r.problem(join_key(prefix, "kind"), f"must be one of {', '.join(KINDS)}; got {kind_text!r}")
    if kind == "razard":
        default_url: str | None = razard_url(metrics_address, metrics_port)
    else:
        default_url = DEFAULT_URLS.get(kind)
    url = r.string(t, prefix, "url", default_url)
    if url is not None and (reason := url_problem(url)) is not None:
        r.problem(join_key(prefix, "url"), reason)
    expect = _expect(r, t, prefix, DEFAULT_EXPECT[kind])
    optional = _flag(r, t, prefix, "optional", False)
    ep_max_age = r.number(t, prefix, "max_age", max_age, 0.0, 7 * 86400.0, lo_open=True)
    ep_timeout = r.number(t, prefix, "timeout", timeout, 0.0, 600.0, lo_open=True)
    if len(r.problems) > n_before or name is None or url is None:
        return None
    return Endpoint(
        name=name,
        url=url,
        kind=kind,
        expect=expect,
        optional=optional,
        max_age=ep_max_age,
        timeout=ep_timeout,
    )


def parse_monitoring(
    r: Reader,
    raw: Any,
    prefix: str = "monitoring",
    *,
    metrics_address: str = DEFAULT_METRICS_ADDRESS,
    metrics_port: int = DEFAULT_METRICS_PORT,
) -> MonitoringConfig:
    """The ``[monitoring]`` table (``raw``: its parsed TOML, or None when absent).

    Problems go to ``r`` (dotted keys such as ``monitoring.endpoint[1] (gpu).url``);
    the caller raises them. Without ``[[monitoring.endpoint]]`` entries the
    endpoints are `default_endpoints` for razard on ``metrics_address``:``metrics_port``.
    """
    if raw is None:
        return MonitoringConfig(default_endpoints(metrics_address, metrics_port))
    t = r.table(raw, prefix)
    if t is None:
        return MonitoringConfig(default_endpoints(metrics_address, metrics_port))
    r.unknown(t, prefix, _MONITORING_KEYS)
    max_age = r.number(t, prefix, "max_age", DEFAULT_MAX_AGE, 0.0, 7 * 86400.0, lo_open=True)
    timeout = r.number(t, prefix, "timeout", DEFAULT_TIMEOUT, 0.0, 600.0, lo_open=True)
    if "endpoint" not in t:
        eps = default_endpoints(metrics_address, metrics_port, max_age, timeout)
        return MonitoringConfig(eps, configured=False, max_age=max_age, timeout=timeout)
    raw_eps = t["endpoint"]
    key = join_key(prefix, "endpoint")
    endpoints: list[Endpoint] = []
    if not isinstance(raw_eps, list):
        r.problem(key, f"expected an array of tables ([[{key}]]), got {typename(raw_eps)}")
        raw_eps = []
    elif not raw_eps:
        r.problem(key, f"no endpoints listed; remove `{key}` to check the default exporters")
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_eps):
        ep = parse_endpoint(
            r,
            item,
            f"{key}[{i}]",
            metrics_address=metrics_address,
            metrics_port=metrics_port,
            max_age=max_age,
            timeout=timeout,
        )
        if ep is None:
            continue
        if ep.name in seen:
            r.problem(
                f"{key}[{i}].name", f"duplicate name {ep.name!r} (also {key}[{seen[ep.name]}])"
            )
            continue
        seen[ep.name] = i
        endpoints.append(ep)
    return MonitoringConfig(tuple(endpoints), configured=True, max_age=max_age, timeout=timeout)

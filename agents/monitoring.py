"""Is the node's monitoring complete? Scrape every exporter and say what is missing.

razar's monitoring check (``scripts/verify_chakra_monitoring.py``, ``razarctl
verify-monitoring``) scrapes the configured Prometheus exporters -- razard
itself, node_exporter, the GPU exporter (dcgm-exporter), cAdvisor, or custom
ones -- and reports, per endpoint:

- whether it answered (and the error when it did not), and how long the scrape took;
- which expected metric families are present, missing, or declared without samples;
- stale readings: samples whose exposition timestamp is older than ``max_age``,
  a node_exporter whose clock (``node_time_seconds``) is off by more than
  ``max_age``, a cAdvisor whose newest ``container_last_seen`` is older than
  ``max_age``, and razard layers whose ``chakra_pulse_hz`` is 0 or below
  ``1/max_age``.

Anything missing, empty or stale, or an endpoint that cannot be scraped, is a
*gap*; the check exits 1 on any gap. An unreachable endpoint marked
``optional`` (the GPU exporter on a node without GPUs) is *skipped*, not a gap;
a reachable optional endpoint is checked like any other.

The endpoints come from the ``[monitoring]`` table of razard.toml, parsed (and
documented, with its defaults) in `razard.monitoring_config`.

One module (~830 lines): the check (scrape, `analyse`), its report and the command line
that both `razarctl verify-monitoring` and the script run are one feature used only by
that command; nothing else imports a part of it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import click

from razard import __version__, clirun
from razard.config import load_config
from razard.configreader import (
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_METRICS_PORT,
    METRICS_PORT_ENV,
    Reader,
)
from razard.errors import ConfigError, ConfigProblem
from razard.layout import DEFAULT_CONFIG
from razard.monitoring_config import (
    DEFAULT_MAX_AGE,
    DEFAULT_TIMEOUT,
    KINDS,
    Endpoint,
    MonitoringConfig,
    default_endpoints,
    display_url,
    parse_endpoint,
)

if TYPE_CHECKING:
    # httpx, rich and the exposition parsers load only where a scrape or the table needs them
    import httpx
    from prometheus_client.metrics_core import Metric
    from rich.console import Console
    from rich.table import Table

MAX_BODY_BYTES: Final = 32 * 1024 * 1024
MAX_REDIRECTS: Final = 5
#: at most this many stale readings are listed per endpoint (``stale_total`` counts all)
MAX_STALE_LISTED: Final = 50
CONFIG_ENV: Final = "RAZAR_CONFIG"

EXIT_OK: Final = 0
EXIT_GAPS: Final = 1
EXIT_USAGE: Final = 2

ACCEPT: Final = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


# --------------------------------------------------------------------------- config
def _raw_metrics_address(data: Mapping[str, Any], env: Mapping[str, str]) -> tuple[str, int]:
    """``[razard]``'s metrics address and port read straight from the TOML (best effort)."""
    t = data.get("razard")
    address, port = DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT
    if isinstance(t, dict):
        a = t.get("metrics_address")
        if isinstance(a, str):
            try:
                ipaddress.ip_address(a)
                address = a
            except ValueError:
                pass
        p = t.get("metrics_port")
        if isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= 65535:
            port = p
    env_port = env.get(METRICS_PORT_ENV)
    if env_port is not None and re.fullmatch(r"[0-9]{1,5}", env_port) and int(env_port) <= 65535:
        port = int(env_port)
    return address, port


def endpoints_from_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> MonitoringConfig:
    """The endpoints a razard.toml configures (its ``[monitoring]`` table, checked with the
    rest of the file); raises `ConfigError` naming file and key."""
    return load_config(path, env).monitoring


# --------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class StaleReading:
    """One reading that is too old (or a clock that is off)."""

    metric: str
    labels: tuple[tuple[str, str], ...]
    reason: str

    def series(self) -> str:
        """``metric{a="b"}`` as Prometheus writes a series."""
        if not self.labels:
            return self.metric
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels)
        return f"{self.metric}{{{inner}}}"


@dataclass(frozen=True)
class Findings:
    """What a parsed scrape holds, measured against an endpoint's expectations."""

    families: int = 0
    samples: int = 0
    present: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()  # declared (HELP/TYPE) but without samples
    stale: tuple[StaleReading, ...] = ()
    stale_total: int = 0


def _norm(name: str) -> str:
    """A family name with ``_total`` stripped: prometheus_client's parser strips it from
    counter families, so both sides are compared in this form."""
    return name.removesuffix("_total")


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if hasattr(value, "sec") and hasattr(value, "nsec"):  # OpenMetrics Timestamp
        return float(value.sec) + float(value.nsec) / 1e9
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _fmt_age(seconds: float) -> str:
    return f"{seconds:.0f} s" if abs(seconds) >= 10 else f"{seconds:.1f} s"


def analyse(endpoint: Endpoint, families: Iterable[Metric], now: float) -> Findings:
    """Compare parsed ``families`` with what ``endpoint`` expects; find stale readings.

    ``now`` is the wall-clock time (``time.time()``) the scrape finished.
    """
    by_family: dict[str, list[Any]] = {}
    sample_names: set[str] = set()
    n_families = 0
    stale: list[StaleReading] = []
    pulse: list[tuple[tuple[tuple[str, str], ...], float]] = []
    node_time: float | None = None
    last_seen: float | None = None
    n_samples = 0
    for fam in families:
        n_families += 1
        by_family.setdefault(_norm(fam.name), []).extend(fam.samples)
        for s in fam.samples:
            n_samples += 1
            sample_names.add(_norm(s.name))
            ts = _timestamp(s.timestamp)
            if ts is not None and now - ts > endpoint.max_age:
                stale.append(
                    StaleReading(
                        s.name,
                        tuple(sorted(s.labels.items())),
                        f"timestamp {_fmt_age(now - ts)} old (max_age {endpoint.max_age:g} s)",
                    )
                )
            if endpoint.kind == "node_exporter" and s.name == "node_time_seconds":
                node_time = float(s.value)
            elif endpoint.kind == "cadvisor" and s.name == "container_last_seen":
                seen = float(s.value)
                last_seen = seen if last_seen is None else max(last_seen, seen)
            elif endpoint.kind == "razard" and s.name == "chakra_pulse_hz":
                pulse.append((tuple(sorted(s.labels.items())), float(s.value)))

    if node_time is not None:
        skew = now - node_time
        if not math.isfinite(skew) or abs(skew) > endpoint.max_age:
            stale.append(
                StaleReading(
                    "node_time_seconds",
                    (),
                    f"node clock off by {_fmt_age(skew)} (max_age {endpoint.max_age:g} s)",
                )
            )
    if last_seen is not None:
        age = now - last_seen
        if not math.isfinite(age) or age > endpoint.max_age:
            stale.append(
                StaleReading(
                    "container_last_seen",
                    (),
                    f"newest container seen {_fmt_age(age)} ago (max_age {endpoint.max_age:g} s)",
                )
            )
    floor = 1.0 / endpoint.max_age
    for labels, hz in pulse:
        if not (hz >= floor):  # also NaN
            layer = dict(labels).get("chakra", "?")
            stale.append(
                StaleReading(
                    "chakra_pulse_hz",
                    labels,
                    f"layer {layer} pulse {hz:g} Hz, below 1/max_age = {floor:.3g} Hz",
                )
            )

    present: list[str] = []
    missing: list[str] = []
    empty: list[str] = []
    for name in endpoint.expect:
        key = _norm(name)
        if key in by_family:
            (present if by_family[key] else empty).append(name)
        elif key in sample_names:  # e.g. a histogram's ``_count`` series
            present.append(name)
        else:
            missing.append(name)
    return Findings(
        families=n_families,
        samples=n_samples,
        present=tuple(present),
        missing=tuple(missing),
        empty=tuple(empty),
        stale=tuple(stale[:MAX_STALE_LISTED]),
        stale_total=len(stale),
    )


def parse_exposition(body: str, content_type: str = "text/plain") -> list[Metric]:
    """Parse a scrape body (Prometheus text format, or OpenMetrics when the type says so).

    Raises ValueError when the body is not in that format.
    """
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )
    from prometheus_client.parser import text_string_to_metric_families

    try:
        if content_type.lower().startswith("application/openmetrics-text"):
            parsed: list[Metric] = list(openmetrics_families(body))  # type: ignore[no-untyped-call]
            return parsed
        return list(text_string_to_metric_families(body))
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise ValueError(str(e) or type(e).__name__) from None


# --------------------------------------------------------------------------- scraping


ReportStatus = Literal["ok", "gap", "skipped"]


@dataclass(frozen=True)
class EndpointReport:
    """The outcome of checking one endpoint."""

    endpoint: Endpoint
    reachable: bool
    error: str | None = None
    http_status: int | None = None
    scrape_ms: float | None = None
    findings: Findings = field(default_factory=Findings)
    checked: bool = False  # the body was parsed and compared

    @property
    def skipped(self) -> bool:
        """An optional endpoint that did not answer: reported, but not a gap."""
        return self.endpoint.optional and not self.reachable

    @property
    def gap(self) -> bool:
        """True when this endpoint makes the check fail."""
        if self.skipped:
            return False
        f = self.findings
        return bool(self.error or f.missing or f.empty or f.stale_total)

    @property
    def status(self) -> ReportStatus:
        if self.skipped:
            return "skipped"
        return "gap" if self.gap else "ok"


class _ScrapeError(Exception):
    """A scrape failed after the server answered (bad status, redirect, size)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Progress:
    """How far a scrape got: the status of the last response seen (None: no answer)."""

    status: int | None = None


def _same_host(a: httpx.URL, b: httpx.URL) -> bool:
    return a.host.lower() == b.host.lower()


async def _fetch(
    client: httpx.AsyncClient, endpoint: Endpoint, max_body: int, progress: _Progress
) -> tuple[str, bytes]:
    """GET the endpoint: redirects followed on the same host only, the body bounded.

    Returns the content type and the body.
    """
    import httpx

    url = httpx.URL(endpoint.url)
    origin = url
    for _ in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", url, timeout=httpx.Timeout(endpoint.timeout)) as resp:
            code = progress.status = resp.status_code
            if resp.is_redirect:
                location = resp.headers.get("location", "")
                try:
                    target = url.join(location)
                except (httpx.InvalidURL, ValueError):
                    raise _ScrapeError(f"HTTP {code}: bad redirect {location!r}", code) from None
                if target.scheme not in ("http", "https"):
                    raise _ScrapeError(
                        f"HTTP {code}: redirect to a non-http URL refused "
                        f"({display_url(str(target))})",
                        code,
                    )
                if not _same_host(origin, target):
                    raise _ScrapeError(
                        f"HTTP {code}: redirect to another host refused "
                        f"({display_url(str(target))})",
                        code,
                    )
                url = target
                continue
            if not 200 <= code < 300:
                raise _ScrapeError(f"HTTP {code} {resp.reason_phrase}".strip(), code)
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_body:
                raise _ScrapeError(
                    f"body of {int(length)} bytes exceeds the {max_body} byte limit", code
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > max_body:
                    raise _ScrapeError(f"body exceeds the {max_body} byte limit", code)
                chunks.append(chunk)
            return resp.headers.get("content-type", ""), b"".join(chunks)
    raise _ScrapeError(f"more than {MAX_REDIRECTS} redirects", progress.status)


def _describe(e: BaseException) -> str:
    """The most specific reason in ``e``'s chain: ``Connection refused`` rather than
    httpx's ``All connection attempts failed``."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno:
            return os.strerror(x.errno) if x.errno > 0 else (x.strerror or str(x))
        x = x.__cause__ or x.__context__
    text = str(e).strip()
    return text or type(e).__name__


def _check_body(endpoint: Endpoint, body: bytes, content_type: str, now: float) -> Findings:
    """Parse and analyse a scrape body (CPU work: run in a thread). Raises ValueError."""
    families = parse_exposition(body.decode("utf-8", errors="replace"), content_type)
    return analyse(endpoint, families, now)


async def scrape(
    client: httpx.AsyncClient, endpoint: Endpoint, max_body: int = MAX_BODY_BYTES
) -> EndpointReport:
    """Scrape one endpoint and compare what it exports with what it should.

    The whole scrape (connect, redirects, body) has ``endpoint.timeout`` seconds.
    ``reachable`` is True once an HTTP response arrived; a timeout before that,
    or a failed connection, is unreachable.
    """
    import httpx

    started = time.monotonic()
    progress = _Progress()
    try:
        async with asyncio.timeout(endpoint.timeout):
            content_type, body = await _fetch(client, endpoint, max_body, progress)
    except _ScrapeError as e:
        return EndpointReport(endpoint, True, str(e), e.status, _ms(started))
    except (TimeoutError, httpx.TimeoutException):
        answered = progress.status is not None
        what = "reading the response" if answered else "waiting for a response"
        return EndpointReport(
            endpoint,
            answered,
            f"timed out after {endpoint.timeout:g} s {what}",
            progress.status,
            _ms(started),
        )
    except (httpx.ConnectError, OSError) as e:
        return EndpointReport(endpoint, False, f"cannot connect: {_describe(e)}")
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        answered = progress.status is not None
        return EndpointReport(
            endpoint, answered, f"{type(e).__name__}: {_describe(e)}", progress.status
        )
    elapsed = _ms(started)
    try:
        findings = await asyncio.to_thread(_check_body, endpoint, body, content_type, time.time())
    except ValueError as e:
        error = f"not Prometheus exposition format: {_describe(e)}"[:200]
        return EndpointReport(endpoint, True, error, progress.status, elapsed)
    return EndpointReport(endpoint, True, None, progress.status, elapsed, findings, checked=True)


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


async def verify(
    endpoints: Sequence[Endpoint], *, max_body: int = MAX_BODY_BYTES
) -> list[EndpointReport]:
    """Scrape every endpoint concurrently; one report per endpoint, in the given order."""
    import httpx

    headers = {"Accept": ACCEPT, "User-Agent": f"razar-verify-monitoring/{__version__}"}
    # trust_env=False: exporters are scraped directly, never through an HTTP(S)_PROXY
    async with httpx.AsyncClient(
        headers=headers, follow_redirects=False, trust_env=False, timeout=None
    ) as client:
        reports = await asyncio.gather(*(scrape(client, ep, max_body) for ep in endpoints))
    return list(reports)


# --------------------------------------------------------------------------- output

STATUS_STYLES: Final[Mapping[str, str]] = {"ok": "green", "gap": "red", "skipped": "yellow"}
_PIPE_WIDTH: Final = 200
_STALE_CELL_LINES: Final = 3


def report_json(report: EndpointReport) -> dict[str, Any]:
    """One endpoint's row in ``--json`` output."""
    ep, f = report.endpoint, report.findings
    return {
        "name": ep.name,
        "url": display_url(ep.url),
        "kind": ep.kind,
        "optional": ep.optional,
        "status": report.status,
        "reachable": report.reachable,
        "error": report.error,
        "http_status": report.http_status,
        "scrape_ms": None if report.scrape_ms is None else round(report.scrape_ms, 1),
        "checked": report.checked,
        "max_age": ep.max_age,
        "timeout": ep.timeout,
        "expected": list(ep.expect),
        "present": list(f.present),
        "missing": list(f.missing),
        "empty": list(f.empty),
        "stale": [
            {"metric": s.metric, "labels": dict(s.labels), "reason": s.reason} for s in f.stale
        ],
        "stale_total": f.stale_total,
        "families": f.families,
        "samples": f.samples,
    }


def reports_json(reports: Sequence[EndpointReport]) -> dict[str, Any]:
    """What ``--json`` prints: the verdict, counts, and one object per endpoint."""
    counts = {"ok": 0, "gap": 0, "skipped": 0}
    for r in reports:
        counts[r.status] += 1
    return {
        "ok": counts["gap"] == 0,
        "summary": {"endpoints": len(reports), **counts},
        "endpoints": [report_json(r) for r in reports],
    }


def _cell(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _missing_cell(report: EndpointReport) -> str:
    f = report.findings
    parts = list(f.missing) + [f"{name} (no samples)" for name in f.empty]
    return ", ".join(parts) if parts else "-"


def _stale_cell(report: EndpointReport) -> str:
    f = report.findings
    if not f.stale_total:
        return "-"
    lines = [f"{s.series()}: {s.reason}" for s in f.stale[:_STALE_CELL_LINES]]
    if f.stale_total > len(lines):
        lines.append(f"... and {f.stale_total - len(lines)} more")
    return "\n".join(lines)


def _error_cell(report: EndpointReport) -> str:
    if report.skipped:
        return f"unreachable (optional): {report.error or 'no answer'}"
    return _cell(report.error)


def reports_table(reports: Sequence[EndpointReport]) -> Table:
    """One row per endpoint: status coloured, what is missing or stale, the error."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("endpoint", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("url", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("reachable", no_wrap=True)
    table.add_column("scrape", justify="right", no_wrap=True)
    table.add_column("families", justify="right", no_wrap=True)
    table.add_column("missing", overflow="fold")
    table.add_column("stale", overflow="fold")
    table.add_column("error", overflow="fold")
    for r in reports:
        ep = r.endpoint
        reachable = Text("yes", style="green") if r.reachable else Text("no", style="red")
        families = f"{len(r.findings.present)}/{len(ep.expect)}" if r.checked else "-"
        table.add_row(
            ep.name,
            ep.kind,
            display_url(ep.url),
            Text(r.status, style=STATUS_STYLES[r.status]),
            reachable,
            "-" if r.scrape_ms is None else f"{r.scrape_ms:.0f} ms",
            families,
            _missing_cell(r),
            _stale_cell(r),
            _error_cell(r),
        )
    return table


def summary_line(reports: Sequence[EndpointReport]) -> str:
    """The verdict under the table."""
    data = reports_json(reports)["summary"]
    counts = f"{data['ok']} ok, {data['gap']} with gaps, {data['skipped']} skipped"
    verdict = "monitoring complete" if data["gap"] == 0 else "monitoring has gaps"
    n = data["endpoints"]
    return f"{verdict}: {n} endpoint{'' if n == 1 else 's'}, {counts}"


def render_table(reports: Sequence[EndpointReport], console: Console) -> None:
    """Print the table and the verdict line on ``console``."""
    from rich.text import Text

    console.print(reports_table(reports))
    gaps = any(r.gap for r in reports)
    console.print(Text(summary_line(reports), style="red" if gaps else "green"))


def exit_code(reports: Sequence[EndpointReport]) -> int:
    """0 when every endpoint is ok or skipped, 1 on any gap."""
    return EXIT_GAPS if any(r.gap for r in reports) else EXIT_OK


# --------------------------------------------------------------------------- command line


class UsageError(Exception):
    """A bad argument: the message names it."""


_OPTION_RE: Final = re.compile(r"^(kind|optional|expect)=")
_TRUE: Final = frozenset({"true", "yes", "1", "on"})
_FALSE: Final = frozenset({"false", "no", "0", "off"})


def endpoint_option(
    text: str,
    existing: Mapping[str, Endpoint],
    *,
    max_age: float = DEFAULT_MAX_AGE,
    timeout: float = DEFAULT_TIMEOUT,
) -> Endpoint:
    """Parse ``--endpoint NAME=URL[,kind=KIND][,optional=BOOL][,expect=A+B]``.

    A NAME that is already configured is overridden: it keeps its kind (unless
    given), its expectations (unless given or the kind changes), max_age and
    timeout; an empty URL keeps its URL. A new NAME that is a kind's name gets
    that kind, otherwise ``custom``. Endpoints named on the command line are
    required unless ``optional=true``. Raises `ConfigError` naming the argument.
    """
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise ConfigError(
            [ConfigProblem("--endpoint", text, "expected NAME=URL[,kind=KIND][,optional=BOOL]")]
        )
    parts = rest.split(",")
    options: list[str] = []
    while len(parts) > 1 and _OPTION_RE.match(parts[-1]):
        options.insert(0, parts.pop())
    url = ",".join(parts)
    raw: dict[str, Any] = {"name": name}
    problems: list[ConfigProblem] = []
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "kind":
            raw["kind"] = value
        elif key == "expect":
            raw["expect"] = [v for v in value.split("+") if v]
        elif value.lower() in _TRUE | _FALSE:
            raw["optional"] = value.lower() in _TRUE
        else:
            problems.append(
                ConfigProblem("--endpoint", f"{name}.optional", "expected true or false")
            )
    old = existing.get(name)
    if old is not None:
        raw.setdefault("kind", old.kind)
        if "expect" not in raw and raw["kind"] == old.kind:
            raw["expect"] = list(old.expect)
        raw["max_age"], raw["timeout"] = old.max_age, old.timeout
        raw["url"] = url or old.url
    else:
        if "kind" not in raw and name in KINDS:
            raw["kind"] = name
        if url:
            raw["url"] = url
    r = Reader("--endpoint")
    r.problems.extend(problems)
    ep = parse_endpoint(r, raw, name, max_age=max_age, timeout=timeout)
    if r.problems or ep is None:
        raise ConfigError(r.problems or [ConfigProblem("--endpoint", name, "invalid")])
    return ep


MAX_SECONDS: Final = 7 * 86400
SECONDS = click.FloatRange(min=0, min_open=True, max=MAX_SECONDS)
"""``--timeout`` and ``--max-age``: more than 0, at most a week."""


@dataclass(frozen=True)
class Options:
    """The command line, parsed: what `select_endpoints` reads."""

    config: str | None = None
    endpoints: tuple[str, ...] = ()
    only: tuple[str, ...] = ()
    json: bool = False
    timeout: float | None = None
    max_age: float | None = None


@dataclass(frozen=True)
class Environment:
    """The environment the check reads (``$RAZAR_CONFIG``, the metrics port); the process's
    own unless `main` is given another (tests)."""

    env: Mapping[str, str]


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Scrape the node's exporters (razard, node_exporter, the GPU exporter, cAdvisor, "
    "custom ones) and report unreachable endpoints, missing metric families and stale "
    "readings.",
    epilog="Exit status: 0 when complete, 1 on any gap, 2 on bad arguments or config.",
)
@click.option(
    "--config",
    metavar="PATH",
    help=f"razard.toml whose [monitoring] table lists the endpoints (default: ${CONFIG_ENV}, "
    f"else {DEFAULT_CONFIG} if it exists, else the built-in defaults).",
)
@click.option(
    "--endpoint",
    "endpoints",
    multiple=True,
    metavar="NAME=URL[,kind=KIND][,optional=BOOL][,expect=A+B]",
    help="Add an endpoint, or override the configured one of that NAME (repeatable); "
    f"KIND is one of {', '.join(KINDS)}.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Check only the endpoint(s) of this name (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--timeout",
    type=SECONDS,
    metavar="SECONDS",
    help="Per-endpoint scrape timeout (overrides the config).",
)
@click.option(
    "--max-age",
    type=SECONDS,
    metavar="SECONDS",
    help="Readings older than this are stale (overrides the config).",
)
@click.pass_context
def command(
    ctx: click.Context,
    config: str | None,
    endpoints: tuple[str, ...],
    only: tuple[str, ...],
    as_json: bool,
    timeout: float | None,
    max_age: float | None,
) -> None:
    """``verify_chakra_monitoring.py`` and ``razarctl verify-monitoring``: exits 0, 1 or 2."""
    given = ctx.find_object(Environment)
    options = Options(config, endpoints, only, as_json, timeout, max_age)
    ctx.exit(check(options, os.environ if given is None else given.env, ctx.command_path))


def config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """Which razard.toml to read: ``--config``, ``$RAZAR_CONFIG``, the default if it exists."""
    if explicit:
        return Path(explicit)
    from_env = env.get(CONFIG_ENV)
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def select_endpoints(args: Options, env: Mapping[str, str]) -> tuple[Endpoint, ...]:
    """The endpoints to check after config, ``--endpoint``, ``--only`` and the overrides.

    Raises `ConfigError` (config file or ``--endpoint``) or `UsageError`.
    """
    path = config_path(args.config, env)
    if path is not None:
        config = endpoints_from_config(path, env)
    else:
        address, port = _raw_metrics_address({}, env)
        config = MonitoringConfig(default_endpoints(address, port))
    merged: dict[str, Endpoint] = {ep.name: ep for ep in config.endpoints}
    for text in args.endpoints:
        ep = endpoint_option(text, merged, max_age=config.max_age, timeout=config.timeout)
        merged[ep.name] = ep
    if args.only:
        unknown = [n for n in args.only if n not in merged]
        if unknown:
            raise UsageError(
                f"--only: no endpoint named {', '.join(repr(n) for n in unknown)}; "
                f"known: {', '.join(merged) or 'none'}"
            )
        wanted = set(args.only)
        merged = {n: ep for n, ep in merged.items() if n in wanted}
    endpoints = list(merged.values())
    if args.timeout is not None:
        endpoints = [replace(ep, timeout=args.timeout) for ep in endpoints]
    if args.max_age is not None:
        endpoints = [replace(ep, max_age=args.max_age) for ep in endpoints]
    return tuple(endpoints)


def _stdout() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=_PIPE_WIDTH)
    return console


def check(options: Options, env: Mapping[str, str], prog: str) -> int:
    """Run the check; returns the exit code (0 complete, 1 gaps, 2 bad arguments/config)."""
    from rich.console import Console
    from rich.text import Text

    try:
        endpoints = select_endpoints(options, env)
    except (ConfigError, UsageError) as e:
        Console(stderr=True).print(Text(f"{prog}: {e}", style="red"), soft_wrap=True)
        return EXIT_USAGE
    reports = asyncio.run(verify(endpoints))
    if options.json:
        import json

        sys.stdout.write(json.dumps(reports_json(reports), indent=2) + "\n")
        sys.stdout.flush()
    else:
        render_table(reports, _stdout())
    return exit_code(reports)


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> int:
    """The command line as a function: the exit code (0 complete, 1 gaps, 2 bad
    arguments/config); ``env`` stands in for the process's environment."""
    return clirun.run(command, argv, prog_name=prog, obj=None if env is None else Environment(env))


if __name__ == "__main__":
    raise SystemExit(main())

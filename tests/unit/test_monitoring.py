"""Unit tests of agents.monitoring: config, family matching, staleness, scraping, output.

HTTP goes to real servers on 127.0.0.1 (a threading http.server serving
canned bodies); nothing else is faked.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from rich.console import Console

from agents import monitoring as m
from razard import monitoring_config as mc
from razard.configreader import Reader
from razard.errors import ConfigError

# --------------------------------------------------------------------------- helpers

Route = tuple[int, dict[str, str], bytes]


class Exporter:
    """A threading HTTP server on 127.0.0.1 answering each path with a canned response."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                status, headers, body = routes.get(self.path, (404, {}, b"not found\n"))
                self.send_response(status)
                headers = {"Content-Type": "text/plain; version=0.0.4", **headers}
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(
        self, path: str, body: str | bytes, status: int = 200, headers: dict[str, str] | None = None
    ) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.routes[path] = (status, dict(headers or {}), data)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = (status, {"Location": location}, b"")
        return self.url(path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.close()


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_family(text: str, name: str) -> str:
    """``text`` (Prometheus text format) without family ``name``: HELP, TYPE and samples."""
    out = []
    for line in text.splitlines(keepends=True):
        words = line.split()
        if line.startswith("#") and len(words) > 2 and words[1] in ("HELP", "TYPE"):
            if words[2] == name:
                continue
        elif line.split("{", 1)[0].split(" ", 1)[0] == name:
            continue
        out.append(line)
    return "".join(out)


def parse(section: Any, **kw: Any) -> tuple[mc.MonitoringConfig, list[str]]:
    r = Reader("razard.toml")
    cfg = mc.parse_monitoring(r, section, **kw)
    return cfg, [f"{p.key}: {p.reason}" for p in r.problems]


def ep(kind: mc.Kind = "custom", expect: tuple[str, ...] = (), **kw: Any) -> mc.Endpoint:
    return mc.Endpoint(name=kw.pop("name", kind), url="http://127.0.0.1:1/metrics", kind=kind,
                      expect=expect, **kw)  # fmt: skip


def findings(endpoint: mc.Endpoint, text: str, now: float | None = None) -> m.Findings:
    return m.analyse(endpoint, m.parse_exposition(text), time.time() if now is None else now)


NODE_TEXT = """\
# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.
# TYPE node_cpu_seconds_total counter
node_cpu_seconds_total{cpu="0",mode="idle"} 100.5
# HELP node_load1 1m load average.
# TYPE node_load1 gauge
node_load1 0.25
# HELP node_time_seconds System time in seconds since epoch (1970).
# TYPE node_time_seconds gauge
node_time_seconds NOW
"""


def node_text(now: float) -> str:
    """NODE_TEXT with node_time_seconds set to ``now``."""
    return NODE_TEXT.replace("NOW", repr(now))


# --------------------------------------------------------------------------- config


def test_parse_monitoring_reads_endpoints_with_per_kind_defaults() -> None:
    cfg, problems = parse(
        {
            "max_age": 30,
            "timeout": 2,
            "endpoint": [
                {"kind": "node_exporter"},
                {
                    "name": "gpu0",
                    "kind": "gpu_exporter",
                    "url": "https://10.0.0.7:9400/metrics",
                    "optional": True,
                    "max_age": 15,
                    "timeout": 0.5,
                },
                {"name": "app", "url": "http://127.0.0.1:8000/metrics", "expect": ["app_up"]},
                {"kind": "razard"},
            ],
        },
        metrics_address="0.0.0.0",
        metrics_port=9555,
    )
    assert problems == []
    assert cfg.configured
    node, gpu, app, razard = cfg.endpoints
    assert node == mc.Endpoint(
        "node_exporter",
        "http://127.0.0.1:9100/metrics",
        "node_exporter",
        mc.DEFAULT_EXPECT["node_exporter"],
        optional=False,
        max_age=30.0,
        timeout=2.0,
    )
    assert (gpu.name, gpu.url, gpu.optional, gpu.max_age, gpu.timeout) == (
        "gpu0",
        "https://10.0.0.7:9400/metrics",
        True,
        15.0,
        0.5,
    )
    assert "DCGM_FI_DEV_XID_ERRORS" in gpu.expect
    assert (app.kind, app.expect, app.optional) == ("custom", ("app_up",), False)
    # a wildcard metrics address is scraped on loopback
    assert razard.url == "http://127.0.0.1:9555/metrics"
    assert "razar_component_restarts_total" in razard.expect


def test_without_monitoring_table_the_defaults_are_checked() -> None:
    cfg, problems = parse(None, metrics_address="::", metrics_port=9360)
    assert problems == [] and not cfg.configured
    by_name = {e.name: e for e in cfg.endpoints}
    assert list(by_name) == ["razard", "node_exporter", "gpu_exporter", "cadvisor"]
    assert by_name["razard"].url == "http://[::1]:9360/metrics"
    assert by_name["node_exporter"].url == "http://127.0.0.1:9100/metrics"
    assert not by_name["razard"].optional and not by_name["node_exporter"].optional
    assert by_name["gpu_exporter"].optional and by_name["cadvisor"].optional
    assert by_name["gpu_exporter"].url == "http://127.0.0.1:9400/metrics"
    assert by_name["cadvisor"].url == "http://127.0.0.1:8080/metrics"


def test_table_without_endpoints_keeps_defaults_with_its_settings() -> None:
    cfg, problems = parse({"max_age": 10}, metrics_port=9400)
    assert problems == []
    assert {e.max_age for e in cfg.endpoints} == {10.0}
    assert cfg.endpoints[0].url == "http://127.0.0.1:9400/metrics"


def test_unknown_keys_are_problems_named_by_dotted_key() -> None:
    _, problems = parse(
        {"intervall": 5, "endpoint": [{"name": "app", "url": "http://a/m", "expct": ["x"]}]}
    )
    assert any(p.startswith("monitoring.intervall: unknown key") for p in problems)
    assert any(p.startswith("monitoring.endpoint[0] (app).expct: unknown key") for p in problems)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/metrics",
        "file:///etc/passwd",
        "127.0.0.1:9100/metrics",
        "http:///metrics",
        "http://127.0.0.1:99999/metrics",
        "http://127.0.0.1/me trics",
        "",
    ],
)
def test_bad_url_is_named_by_dotted_key(url: str) -> None:
    cfg, problems = parse({"endpoint": [{"kind": "node_exporter"}, {"name": "app", "url": url}]})
    assert len(problems) == 1, problems
    assert problems[0].startswith("monitoring.endpoint[1] (app).url: expected an http")
    assert [e.name for e in cfg.endpoints] == ["node_exporter"]


def test_other_config_mistakes() -> None:
    _, problems = parse(
        {
            "endpoint": [
                {"url": "http://a/m"},  # custom needs a name
                {"name": "x", "kind": "prometheus", "url": "http://a/m"},
                {"name": "y", "url": "http://a/m", "expect": "node_load1"},
                {"name": "z", "url": "http://a/m", "expect": ["ok", "not-a-metric"]},
                {"name": "w", "url": "http://a/m", "optional": "yes", "timeout": 0},
                {"kind": "node_exporter"},
                {"kind": "node_exporter"},
            ]
        }
    )
    assert problems == [
        "monitoring.endpoint[0].name: required key is missing",
        "monitoring.endpoint[1] (x).kind: must be one of razard, node_exporter, gpu_exporter, "
        "cadvisor, custom; got 'prometheus'",
        "monitoring.endpoint[2] (y).expect: expected a list of metric family names",
        "monitoring.endpoint[3] (z).expect: not metric names: 'not-a-metric'",
        "monitoring.endpoint[4] (w).optional: expected true or false, got a string",
        "monitoring.endpoint[4] (w).timeout: must be > 0 and <= 600, got 0",
        "monitoring.endpoint[6].name: duplicate name 'node_exporter' (also monitoring.endpoint[5])",
    ]
    _, problems = parse({"endpoint": []})
    assert problems and problems[0].startswith("monitoring.endpoint: no endpoints listed")
    _, problems = parse({"endpoint": {"kind": "razard"}})
    assert problems[0].startswith("monitoring.endpoint: expected an array of tables")
    _, problems = parse("yes")
    assert problems == ["monitoring: expected a table, got a string"]


def test_endpoints_from_config_reads_the_razard_toml(tmp_path: Path) -> None:
    path = tmp_path / "razard.toml"
    path.write_text(
        '[razard]\nmetrics_address = "127.0.0.2"\nmetrics_port = 9444\n'
        '[monitoring]\n[[monitoring.endpoint]]\nkind = "razard"\n'
        '[[monitoring.endpoint]]\nname = "app"\nurl = "http://127.0.0.1:8000/metrics"\n'
    )
    cfg = m.endpoints_from_config(path, env={})
    assert [(e.name, e.url) for e in cfg.endpoints] == [
        ("razard", "http://127.0.0.2:9444/metrics"),
        ("app", "http://127.0.0.1:8000/metrics"),
    ]
    # razard's own override of the port applies to the scrape URL too
    cfg = m.endpoints_from_config(path, env={"RAZAR_METRICS_PORT": "9555"})
    assert cfg.endpoints[0].url == "http://127.0.0.2:9555/metrics"


def test_endpoints_from_config_errors_name_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "razard.toml"
    path.write_text('[[monitoring.endpoint]]\nname = "app"\nurl = "gopher://x"\n')
    with pytest.raises(ConfigError) as err:
        m.endpoints_from_config(path, env={})
    assert f"{path}: monitoring.endpoint[0] (app).url: expected an http" in str(err.value)
    path.write_text("[monitoring\n")
    with pytest.raises(ConfigError, match=r"\(syntax\)"):
        m.endpoints_from_config(path, env={})
    with pytest.raises(ConfigError, match="No such file"):
        m.endpoints_from_config(tmp_path / "absent.toml", env={})


def test_endpoint_option_adds_and_overrides() -> None:
    base = {e.name: e for e in mc.default_endpoints()}
    node = m.endpoint_option("node_exporter=http://10.1.2.3:9100/metrics", base)
    assert (node.kind, node.expect, node.url) == (
        "node_exporter",
        base["node_exporter"].expect,
        "http://10.1.2.3:9100/metrics",
    )
    gpu = m.endpoint_option("gpu_exporter=", base)  # same URL, now required
    assert (gpu.url, gpu.optional) == (base["gpu_exporter"].url, False)
    new = m.endpoint_option("cadvisor=http://h:8081/metrics", {})
    assert (new.kind, new.expect) == ("cadvisor", mc.DEFAULT_EXPECT["cadvisor"])
    app = m.endpoint_option(
        "app=http://h/m?a=1,2,kind=custom,optional=true,expect=app_up+app_requests_total", {}
    )
    assert (app.url, app.kind, app.optional, app.expect) == (
        "http://h/m?a=1,2",
        "custom",
        True,
        ("app_up", "app_requests_total"),
    )
    changed = m.endpoint_option("node_exporter=,kind=custom", base)
    assert (changed.kind, changed.expect) == ("custom", ())
    for bad, needle in [
        ("novalue", "expected NAME=URL"),
        ("x=ftp://h/", "x.url: expected an http"),
        ("x=http://h/,optional=maybe", "x.optional: expected true or false"),
        ("x=http://h/,kind=snmp", "x.kind: must be one of"),
        ("x=", "x.url: required key is missing"),
    ]:
        with pytest.raises(ConfigError) as err:
            m.endpoint_option(bad, base)
        assert str(err.value).startswith("--endpoint: ") and needle in str(err.value), bad


def test_display_url_hides_a_password() -> None:
    assert mc.display_url("http://u:secret@h:1/m") == "http://u:***@h:1/m"
    assert mc.display_url("http://h:1/m") == "http://h:1/m"


# --------------------------------------------------------------------------- families


def test_counter_families_match_with_and_without_total() -> None:
    """prometheus_client's parser strips ``_total`` from counter families; both forms match."""
    reg = CollectorRegistry()
    Counter("razar_component_restarts_total", "r", ["component"], registry=reg).labels("a").inc()
    Counter("plain_events", "counter declared without _total", registry=reg).inc()
    Gauge("razar_component_up", "u", ["component"], registry=reg).labels("a").set(1)
    Histogram("probe_seconds", "h", registry=reg).observe(0.1)
    text = generate_latest(reg).decode()
    text += "# TYPE legacy_total counter\nlegacy_total 4\nuntyped_thing_total 2\n"
    expect = (
        "razar_component_restarts_total",
        "razar_component_restarts",
        "plain_events_total",
        "razar_component_up",
        "probe_seconds",
        "probe_seconds_count",
        "legacy_total",
        "untyped_thing_total",
        "not_there_total",
        "razar_component_up_total_missing",
    )
    f = findings(ep(expect=expect), text)
    assert f.present == expect[:8]
    assert f.missing == ("not_there_total", "razar_component_up_total_missing")
    assert f.empty == () and f.stale_total == 0
    assert f.samples > 0 and f.families >= 6


def test_family_declared_without_samples_is_reported_apart() -> None:
    text = (
        "# HELP razar_component_up 1 when active\n# TYPE razar_component_up gauge\n"
        "# HELP razar_component_restarts_total restarts\n"
        "# TYPE razar_component_restarts_total counter\n"
        "razar_component_restarts_total{component=\"a\"} 1\n"
    )  # fmt: skip
    f = findings(ep(expect=("razar_component_up", "razar_component_restarts_total")), text)
    assert f.empty == ("razar_component_up",)
    assert f.present == ("razar_component_restarts_total",) and f.missing == ()
    report = m.EndpointReport(ep(), True, http_status=200, findings=f, checked=True)
    assert report.gap and report.status == "gap"


# --------------------------------------------------------------------------- staleness


def test_explicit_timestamps_older_than_max_age_are_stale() -> None:
    now = time.time()
    old_ms, fresh_ms = int((now - 3600) * 1000), int((now - 5) * 1000)
    text = (
        "# TYPE job_last_success gauge\n"
        f'job_last_success{{job="backup"}} 1 {old_ms}\n'
        f'job_last_success{{job="scrub"}} 1 {fresh_ms}\n'
        "no_timestamp 3\n"
    )
    f = findings(ep(expect=("job_last_success",), max_age=60), text, now)
    assert [(s.metric, dict(s.labels)) for s in f.stale] == [
        ("job_last_success", {"job": "backup"})
    ]
    assert "timestamp 3600 s old (max_age 60 s)" == f.stale[0].reason
    assert f.stale[0].series() == 'job_last_success{job="backup"}'
    # the same readings are fresh under a longer max_age
    assert findings(ep(max_age=7200), text, now).stale_total == 0


def test_openmetrics_bodies_are_parsed_with_their_timestamps() -> None:
    now = time.time()
    text = f"# TYPE t gauge\nt 1 {now - 600:.3f}\n# EOF\n"
    families = m.parse_exposition(text, "application/openmetrics-text; version=1.0.0")
    f = m.analyse(ep(expect=("t",)), families, now)
    assert f.present == ("t",) and f.stale_total == 1


def test_node_exporter_clock_is_a_freshness_clock() -> None:
    now = time.time()
    ok = findings(ep("node_exporter", max_age=60), node_text(now - 2), now)
    assert ok.stale_total == 0
    skewed = findings(ep("node_exporter", max_age=60), node_text(now - 600), now)
    assert [s.metric for s in skewed.stale] == ["node_time_seconds"]
    assert "node clock off by 600 s" in skewed.stale[0].reason
    ahead = findings(ep("node_exporter", max_age=60), node_text(now + 600), now)
    assert ahead.stale_total == 1
    # for a custom endpoint node_time_seconds is just a gauge
    assert findings(ep("custom"), node_text(now - 600), now).stale_total == 0


def test_razard_layers_with_a_slow_or_stopped_pulse_are_stale() -> None:
    text = (
        "# HELP chakra_pulse_hz heartbeat rate per layer\n# TYPE chakra_pulse_hz gauge\n"
        'chakra_pulse_hz{chakra="root"} 0.0\n'
        'chakra_pulse_hz{chakra="sacral"} 0.5\n'
        'chakra_pulse_hz{chakra="heart"} 0.01\n'
        'chakra_pulse_hz{chakra="crown"} NaN\n'
    )
    f = findings(ep("razard", expect=("chakra_pulse_hz",), max_age=60), text)
    assert [dict(s.labels)["chakra"] for s in f.stale] == ["root", "heart", "crown"]
    assert f.stale[0].reason.startswith("layer root pulse 0 Hz, below 1/max_age")
    assert findings(ep("razard", max_age=1000), text).stale_total == 2  # 0.01 Hz is enough


def test_cadvisor_newest_container_seen_is_a_freshness_clock() -> None:
    now = time.time()
    text = (
        "# TYPE container_last_seen gauge\n"
        f'container_last_seen{{id="/a"}} {now - 900}\ncontainer_last_seen{{id="/b"}} {now - 800}\n'
    )
    f = findings(ep("cadvisor", max_age=60), text, now)
    assert [s.metric for s in f.stale] == ["container_last_seen"]
    text += f'container_last_seen{{id="/"}} {now - 1}\n'
    assert findings(ep("cadvisor", max_age=60), text, now).stale_total == 0


# --------------------------------------------------------------------------- scraping


def _endpoint(name: str, url: str, **kw: Any) -> mc.Endpoint:
    return mc.Endpoint(name=name, url=url, **kw)


async def test_verify_reports_each_endpoint(exporter: Exporter) -> None:
    now = time.time()
    good = exporter.serve("/good", node_text(now))
    partial = exporter.serve("/partial", drop_family(node_text(now), "node_load1"))
    html = exporter.serve(
        "/html", "<html><body>hello</body></html>", headers={"Content-Type": "text/html"}
    )
    err500 = exporter.serve("/boom", "oops", status=500)
    same = exporter.redirect("/moved", "/good")
    other = exporter.redirect("/away", f"http://localhost:{exporter.port}/good")
    scheme = exporter.redirect("/ftp", "ftp://127.0.0.1/metrics")
    gone = f"http://127.0.0.1:{closed_port()}/metrics"
    expect = ("node_cpu_seconds_total", "node_load1", "node_time_seconds")
    endpoints = [
        _endpoint("good", good, kind="node_exporter", expect=expect),
        _endpoint("partial", partial, kind="node_exporter", expect=expect),
        _endpoint("html", html, expect=("x",)),
        _endpoint("err500", err500),
        _endpoint("moved", same, expect=expect),
        _endpoint("away", other),
        _endpoint("ftp", scheme),
        _endpoint("gone", gone),
        _endpoint("gone-optional", gone, optional=True),
        _endpoint("partial-optional", partial, expect=expect, optional=True),
    ]
    reports = {r.endpoint.name: r for r in await m.verify(endpoints)}
    assert list(reports) == [e.name for e in endpoints]
    status = {n: r.status for n, r in reports.items()}
    assert status == {
        "good": "ok",
        "partial": "gap",
        "html": "gap",
        "err500": "gap",
        "moved": "ok",
        "away": "gap",
        "ftp": "gap",
        "gone": "gap",
        "gone-optional": "skipped",
        "partial-optional": "gap",  # reachable optional endpoints are checked
    }
    assert reports["good"].findings.present == expect
    assert reports["good"].scrape_ms is not None and reports["good"].http_status == 200
    assert reports["partial"].findings.missing == ("node_load1",)
    assert reports["html"].error is not None
    assert reports["html"].error.startswith("not Prometheus exposition format")
    assert reports["err500"].error == "HTTP 500 Internal Server Error"
    assert "redirect to another host refused" in str(reports["away"].error)
    assert "redirect to a non-http URL refused" in str(reports["ftp"].error)
    assert reports["gone"].error == "cannot connect: Connection refused"
    assert not reports["gone"].reachable and reports["gone"].scrape_ms is None
    assert m.exit_code(list(reports.values())) == 1
    assert m.exit_code([reports["good"], reports["gone-optional"]]) == 0


async def test_body_size_is_bounded(exporter: Exporter) -> None:
    url = exporter.serve("/big", "a 1\n" * 1000)
    [report] = await m.verify([_endpoint("big", url)], max_body=1000)
    assert report.reachable and report.gap
    assert report.error is not None and "byte limit" in report.error


async def test_an_endpoint_that_never_answers_times_out() -> None:
    with socket.socket() as s:  # accepts connections (kernel backlog), never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/metrics"
        required, optional = await m.verify(
            [
                _endpoint("mute", url, timeout=0.3),
                _endpoint("mute-opt", url, timeout=0.3, optional=True),
            ]
        )
    assert required.gap and not required.reachable
    assert required.error == "timed out after 0.3 s waiting for a response"
    assert optional.status == "skipped"


async def test_an_endpoint_that_stalls_mid_body_is_reachable_and_a_gap() -> None:
    """Headers arrive, the body never ends: reachable, so a gap even when optional."""
    done = threading.Event()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)

        def serve() -> None:
            conns = []
            srv.settimeout(5)
            try:
                for _ in range(2):
                    conn, _ = srv.accept()
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nup 1\n")
                    conns.append(conn)
            except OSError:
                pass
            done.wait(10)
            for c in conns:
                c.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        url = f"http://127.0.0.1:{srv.getsockname()[1]}/metrics"
        reports = await m.verify(
            [
                _endpoint("slow", url, timeout=0.5),
                _endpoint("slow-opt", url, timeout=0.5, optional=True),
            ]
        )
        done.set()
        t.join(5)
    for r in reports:
        assert r.reachable and r.status == "gap" and r.http_status == 200
        assert r.error == "timed out after 0.5 s reading the response"


async def test_report_json_shape(exporter: Exporter) -> None:
    now = time.time()
    url = exporter.serve("/m", node_text(now - 3600))
    gone = f"http://u:pw@127.0.0.1:{closed_port()}/metrics"
    reports = await m.verify(
        [
            _endpoint("node", url, kind="node_exporter", expect=("node_load1", "node_absent")),
            _endpoint("gpu", gone, kind="gpu_exporter", optional=True),
        ]
    )
    data = json.loads(json.dumps(m.reports_json(reports)))
    assert data["ok"] is False
    assert data["summary"] == {"endpoints": 2, "ok": 0, "gap": 1, "skipped": 1}
    node, gpu = data["endpoints"]
    assert set(node) == {
        "name", "url", "kind", "optional", "status", "reachable", "error", "http_status",
        "scrape_ms", "checked", "max_age", "timeout", "expected", "present", "missing",
        "empty", "stale", "stale_total", "families", "samples",
    }  # fmt: skip
    assert node["status"] == "gap" and node["reachable"] is True and node["checked"] is True
    assert node["present"] == ["node_load1"] and node["missing"] == ["node_absent"]
    assert node["stale"] == [
        {"metric": "node_time_seconds", "labels": {}, "reason": node["stale"][0]["reason"]}
    ]
    assert node["stale_total"] == 1 and node["families"] == 3 and node["samples"] == 3
    assert isinstance(node["scrape_ms"], float)
    assert gpu["status"] == "skipped" and gpu["reachable"] is False
    assert gpu["url"].startswith("http://u:***@127.0.0.1:")
    assert gpu["error"] == "cannot connect: Connection refused"
    assert gpu["scrape_ms"] is None and gpu["checked"] is False


async def test_render_table(exporter: Exporter) -> None:
    url = exporter.serve("/m", node_text(time.time()))
    gone = f"http://127.0.0.1:{closed_port()}/metrics"
    reports = await m.verify(
        [
            _endpoint("node", url, kind="node_exporter", expect=("node_load1", "node_absent")),
            _endpoint("gpu", gone, kind="gpu_exporter", optional=True),
        ]
    )
    console = Console(record=True, width=250, color_system=None)
    m.render_table(reports, console)
    out = console.export_text()
    lines = out.splitlines()
    assert lines[0].split() == [
        "endpoint", "kind", "url", "status", "reachable", "scrape", "families", "missing",
        "stale", "error",
    ]  # fmt: skip
    node_row = next(line for line in lines if line.startswith("node "))
    assert " gap " in node_row and "1/2" in node_row and "node_absent" in node_row
    gpu_row = next(line for line in lines if line.startswith("gpu "))
    assert " skipped " in gpu_row and "unreachable (optional): cannot connect" in gpu_row
    assert lines[-1] == "monitoring has gaps: 2 endpoints, 0 ok, 1 with gaps, 1 skipped"


# --------------------------------------------------------------------------- main()


def test_main_json_and_exit_codes(
    exporter: Exporter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = exporter.serve("/m", node_text(time.time()))
    cfg = tmp_path / "razard.toml"
    cfg.write_text(
        f'[[monitoring.endpoint]]\nname = "node"\nkind = "node_exporter"\nurl = "{url}"\n'
        'expect = ["node_load1", "node_cpu_seconds_total"]\n'
    )
    assert m.main(["--config", str(cfg), "--json"], env={}) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and [e["name"] for e in data["endpoints"]] == ["node"]

    # the config named by $RAZAR_CONFIG, plus an extra endpoint nobody serves
    gone = f"extra=http://127.0.0.1:{closed_port()}/metrics"
    assert m.main(["--endpoint", gone, "--json"], env={"RAZAR_CONFIG": str(cfg)}) == 1
    data = json.loads(capsys.readouterr().out)
    assert [(e["name"], e["status"]) for e in data["endpoints"]] == [
        ("node", "ok"),
        ("extra", "gap"),
    ]
    assert m.main(["--endpoint", gone + ",optional=true", "--only", "extra"], env={}) == 0
    assert "skipped" in capsys.readouterr().out

    # --max-age overrides the config: the node clock is then off by more than allowed
    cfg.write_text(cfg.read_text().replace(url, exporter.serve("/old", node_text(1))))
    assert m.main(["--config", str(cfg), "--max-age", "5"], env={}) == 1
    assert "node clock off by" in capsys.readouterr().out


def test_main_bad_arguments_and_config_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "razard.toml"
    cfg.write_text('[monitoring]\n[[monitoring.endpoint]]\nname = "a"\nurl = "ftp://x/"\n')
    assert m.main(["--config", str(cfg)], env={}) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "monitoring.endpoint[0] (a).url" in err
    assert m.main(["--config", str(tmp_path / "nope.toml")], env={}) == 2
    assert "nope.toml" in capsys.readouterr().err
    assert m.main([], env={"RAZAR_CONFIG": str(tmp_path / "gone.toml")}) == 2
    assert "gone.toml" in capsys.readouterr().err
    assert m.main(["--endpoint", "a=ftp://x/"], env={}) == 2
    assert "--endpoint: a.url: expected an http" in capsys.readouterr().err
    assert m.main(["--only", "nobody"], env={}) == 2
    assert "--only: no endpoint named 'nobody'" in capsys.readouterr().err
    assert m.main(["--timeout", "0"], env={}) == 2
    assert "--timeout" in capsys.readouterr().err
    assert m.main(["--bogus"], env={}) == 2
    assert m.main(["--help"], env={}, prog="razarctl verify-monitoring") == 0
    assert "Usage: razarctl verify-monitoring" in capsys.readouterr().out


def test_razarctl_verify_monitoring_declares_and_checks_its_options(tmp_path: Path) -> None:
    """`razarctl verify-monitoring` is the check's own command: its options in --help,
    a bad value refused naming the option (exit 2), a gap exits 1 with the JSON report."""
    from click.testing import CliRunner

    from razard.ctl import main as razarctl

    runner = CliRunner()
    shown = runner.invoke(razarctl, ["verify-monitoring", "--help"])
    assert shown.exit_code == 0, shown.output
    for option in ("--config", "--endpoint", "--only", "--json", "--timeout", "--max-age"):
        assert option in shown.output
    bad = runner.invoke(razarctl, ["verify-monitoring", "--max-age", "-1"])
    assert bad.exit_code == 2 and "--max-age" in bad.output
    cfg = tmp_path / "razard.toml"
    cfg.write_text("")
    gone = f"gone=http://127.0.0.1:{closed_port()}/metrics"
    args = ["verify-monitoring", "--config", str(cfg), "--endpoint", gone, "--only", "gone"]
    result = runner.invoke(razarctl, [*args, "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(e["name"], e["status"]) for e in report["endpoints"]] == [("gone", "gap")]
    unknown = runner.invoke(
        razarctl, ["verify-monitoring", "--config", str(cfg), "--only", "x"], prog_name="razarctl"
    )
    assert unknown.exit_code == 2
    assert "razarctl verify-monitoring: --only: no endpoint named 'x'" in unknown.output

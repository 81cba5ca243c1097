"""A real Prometheus scrapes a real razard and evaluates the shipped rules on a crash loop.

Prometheus (Debian's /usr/bin/prometheus) runs on a free loopback port with a 1 s
scrape and evaluation interval. It loads config/prometheus/razar_rules.yml with
only the `for:` durations shortened: the expressions are the shipped ones.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard, free_port, wait_for
from tests.unit.test_prometheus_rules import (
    RULES,
    dashboard,
    dashboard_queries,
    with_grafana_vars,
)

pytestmark = pytest.mark.e2e

PROMETHEUS = Path("/usr/bin/prometheus")
#: every `for:` of the shipped rules becomes this, so alerts fire within the test
SHORT_FOR = "3s"
LOOP = "e2e-prom-loop"


def shortened_rules(text: str) -> str:
    """The shipped rules with every ``for:`` set to SHORT_FOR and nothing else changed."""
    out = re.sub(r"^(\s+)for: \S+[ \t]*$", rf"\g<1>for: {SHORT_FOR}", text, flags=re.M)
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert changed and all(a.strip().startswith("for:") for a, _ in changed)
    return out


class Prometheus:
    """One Prometheus process scraping razard, with its own config and TSDB under ``base``."""

    def __init__(self, base: Path, razard_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = f"127.0.0.1:{razard_port}"
        base.mkdir()
        (base / "razar_rules.yml").write_text(shortened_rules(RULES.read_text()))
        self.config = base / "prometheus.yml"
        self.config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files: [razar_rules.yml]\n"
            "scrape_configs:\n"
            "  - job_name: razard\n"
            f"    static_configs: [{{targets: ['{self.target}']}}]\n"
        )
        self.log = (base / "prometheus.log").open("wb")
        self.log_path = base / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={base / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
            start_new_session=True,
        )
        wait_for(self._ready, 30, "Prometheus to be ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"prometheus exited {self.proc.returncode}:\n{self.log_path.read_text()}"
            )
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def api(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=5)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {r.status_code} {body}"
        return body["data"]

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """The pending and firing alerts named ``name``."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]

    def firing(self, name: str, **labels: str) -> dict[str, Any] | None:
        for a in self.alerts(name):
            if a["state"] == "firing" and all(a["labels"].get(k) == v for k, v in labels.items()):
                return a
        return None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def razard(user_manager: UserManager, journald: object, tmp_path: Path) -> Iterator[Razard]:
    """razard supervising one component that exits at once, every time it starts."""
    r = Razard(
        user_manager,
        tmp_path,
        f"""
        [[component]]
        name = "{LOOP}"
        layer = "crown"
        priority = 10
        command = ["/bin/sh", "-c", "echo 'fatal: model shard missing' >&2; exit 3"]
        restart = {{ attempts = 1000, backoff_base = 0.2, backoff_cap = 0.5, jitter = 0.0 }}
        """,
    )
    yield r
    r.stop()
    r.cleanup_units([f"razar-{LOOP}.service"])


@pytest.fixture
def prometheus_bin() -> Path:
    if not PROMETHEUS.exists():
        pytest.skip(f"needs {PROMETHEUS} (Debian package: prometheus)")
    return PROMETHEUS


def test_prometheus_fires_the_shipped_rules_on_a_crash_loop_then_on_razard_down(
    prometheus_bin: Path, razard: Razard, tmp_path: Path
) -> None:
    """Prometheus alerts on a crash loop while razard runs, and RazardDown once razard stops."""
    razard.start(wait_ready=False)
    prom = Prometheus(tmp_path / "prometheus", razard.metrics_port)
    try:
        loop = wait_for(
            lambda: prom.firing("RazarComponentRestartingTooOften", component=LOOP),
            45,
            f"RazarComponentRestartingTooOften firing for {LOOP}",
        )
        assert loop["labels"]["layer"] == "crown"
        assert loop["labels"]["severity"] == "warning"
        assert loop["labels"]["job"] == "razard"
        assert loop["annotations"]["summary"].startswith(f"{LOOP} restarted ")
        assert float(loop["value"]) > 3
        # razard is up and scraped: its own alert is neither pending nor firing
        assert prom.api("query", query='up{job="razard"}')["result"][0]["value"][1] == "1"
        assert prom.alerts("RazardDown") == []
        assert prom.alerts("RazarComponentQuarantined") == []

        # the dashboard's queries run on this Prometheus and show the loop
        for _title, query in dashboard_queries(dashboard()):
            prom.api("query", query=with_grafana_vars(query))  # fails on an error
        restarts = [q for t, q in dashboard_queries(dashboard()) if t == "Restarts"]
        shown = prom.api("query", query=with_grafana_vars(restarts[0]))["result"]
        assert LOOP in {s["metric"].get("component") for s in shown}

        razard.stop()
        down = wait_for(
            lambda: prom.firing("RazardDown", instance=prom.target),
            30,
            "RazardDown firing after razard stopped",
        )
        assert down["labels"]["severity"] == "critical"
        assert down["annotations"]["summary"] == f"razard is down on {prom.target}"

        # another process answers on razard's port (it took it while razard was down):
        # the scrape succeeds, but it is not razard's page, and the alert stays
        impostor = _serve_text(razard.metrics_port, "# TYPE hello gauge\nhello 1\n")
        try:
            wait_for(
                lambda: prom.api("query", query='up{job="razard"}')["result"][0]["value"][1] == "1",
                30,
                "the impostor scraped",
            )
            time.sleep(3)  # several evaluations with the impostor's page
            assert prom.firing("RazardDown") is not None, prom.alerts("RazardDown")
        finally:
            impostor.shutdown()
            impostor.server_close()
    finally:
        prom.stop()


def _serve_text(port: int, text: str) -> ThreadingHTTPServer:
    """A plain HTTP server on 127.0.0.1:``port`` answering every GET with ``text``."""
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

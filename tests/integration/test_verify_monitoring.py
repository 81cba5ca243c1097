"""The monitoring check against real exporters: Debian's prometheus-node-exporter and a
real razard on the test's private systemd user manager, plus a loopback HTTP server
serving edited copies of node_exporter's output (a family dropped, a stale clock).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents import monitoring as m
from razard import monitoring_config as mc
from razard.usermanager import UserManager
from tests.integration.harness import Razard, free_port, wait_for
from tests.unit.test_monitoring import Exporter, drop_family

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

NODE_EXPORTER = Path("/usr/bin/prometheus-node-exporter")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "verify_chakra_monitoring.py"
#: families razard exports today, with samples on a quiet node. Not (yet) in here, though
#: in the razard kind's defaults: chakra_pulse_hz, chakra_alignment and
#: razar_heal_attempts_total (not exported yet), razar_component_restarts_total (declared,
#: but without samples until a component is restarted: "present, no samples").
RAZARD_EXPECT = (
    "razar_component_up",
    "razar_component_state",
    "razar_build_info",
    "razar_ready",
)


def _serving(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def node_exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's prometheus-node-exporter on a free loopback port; its /metrics URL."""
    if not NODE_EXPORTER.exists():
        pytest.skip(f"needs {NODE_EXPORTER} (Debian package prometheus-node-exporter)")
    base = tmp_path_factory.mktemp("node_exporter")
    url = ""
    log = (base / "node_exporter.log").open("wb")
    proc: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(3):  # the port is free when chosen; retry if someone takes it meanwhile
            port = free_port()
            url = f"http://127.0.0.1:{port}/metrics"
            proc = subprocess.Popen(
                [
                    str(NODE_EXPORTER),
                    f"--web.listen-address=127.0.0.1:{port}",
                    # no system bus here; the textfile directory is the test's own
                    "--no-collector.systemd",
                    f"--collector.textfile.directory={base}",
                ],
                stdout=log,
                stderr=log,
            )
            wait_for(
                lambda p=proc, u=url: p.poll() is not None or _serving(u),  # type: ignore[misc]
                30,
                "node_exporter to serve /metrics",
            )
            if proc.poll() is None:
                break
        assert proc is not None and proc.poll() is None, (base / "node_exporter.log").read_text()
        yield url
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def razard(
    user_manager: UserManager, journald: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Razard]:
    """A real razard supervising one sleeper component, serving its metrics."""
    name = f"mon-{secrets.token_hex(3)}"
    r = Razard(
        user_manager,
        tmp_path_factory.mktemp("razard"),
        f"""
        [[component]]
        name = "{name}"
        layer = "crown"
        priority = 10
        command = ["/bin/sleep", "100000"]
        """,
    )
    try:
        r.start()
        r.wait_state(name, "healthy")
        yield r
    finally:
        r.stop()
        r.cleanup_units([f"razar-{name}.service"])


@pytest.fixture
def copies() -> Iterator[Exporter]:
    e = Exporter()
    yield e
    e.close()


def check_config(tmp_path: Path, razard: Razard, node_url: str, extra: str = "") -> Path:
    """razard's own config plus a [monitoring] table: razard (URL from its [razard]
    table) and the real node_exporter with the stock default expectations."""
    path = tmp_path / "check.toml"
    expect = ", ".join(f'"{f}"' for f in RAZARD_EXPECT)
    path.write_text(
        razard.config.read_text()
        + f"""
[monitoring]
max_age = 60

[[monitoring.endpoint]]
kind = "razard"
expect = [{expect}]

[[monitoring.endpoint]]
kind = "node_exporter"
url = "{node_url}"
"""
        + extra
    )
    return path


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAZAR_CONFIG", "RAZAR_METRICS_PORT")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = m.main([*args, "--json"], env={})
    return code, json.loads(capsys.readouterr().out)


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in data["endpoints"]}


def test_complete_monitoring_exits_0_through_the_script(
    razard: Razard, node_exporter: str, tmp_path: Path
) -> None:
    """razard and a stock node_exporter export everything expected: exit 0, table and JSON."""
    config = check_config(tmp_path, razard, node_exporter)
    p = run_script("--config", str(config), "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads(p.stdout)
    assert data["ok"] is True
    assert data["summary"] == {"endpoints": 2, "ok": 2, "gap": 0, "skipped": 0}
    eps = by_name(data)
    assert eps["razard"]["url"] == f"http://127.0.0.1:{razard.metrics_port}/metrics"
    assert eps["razard"]["present"] == list(RAZARD_EXPECT)
    node = eps["node_exporter"]
    assert node["present"] == list(mc.DEFAULT_EXPECT["node_exporter"])
    assert node["missing"] == [] and node["empty"] == [] and node["stale"] == []
    assert node["reachable"] is True and node["http_status"] == 200
    assert node["families"] > 50 and isinstance(node["scrape_ms"], float)

    p = run_script("--config", str(config))
    assert p.returncode == 0, p.stdout + p.stderr
    rows = {line.split()[0]: line for line in p.stdout.splitlines() if line.strip()}
    assert re.search(r"\bok\b", rows["razard"]) and f"{len(RAZARD_EXPECT)}/" in rows["razard"]
    assert re.search(r"\bok\b", rows["node_exporter"])
    assert p.stdout.strip().splitlines()[-1].startswith("monitoring complete: 2 endpoints")


def test_a_dropped_family_is_reported_missing(
    razard: Razard,
    node_exporter: str,
    copies: Exporter,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A copy of node_exporter's output without node_load1: that family missing, exit 1."""
    real = httpx.get(node_exporter, timeout=5).text
    assert "\nnode_load1 " in real
    copy = copies.serve("/metrics", drop_family(real, "node_load1"))
    config = check_config(tmp_path, razard, node_exporter)
    code, data = run_main(
        capsys, "--config", str(config), "--endpoint", f"copy={copy},kind=node_exporter"
    )
    assert code == 1
    assert data["ok"] is False and data["summary"]["gap"] == 1
    eps = by_name(data)
    assert eps["copy"]["status"] == "gap" and eps["copy"]["missing"] == ["node_load1"]
    assert eps["copy"]["reachable"] is True and eps["copy"]["error"] is None
    assert eps["node_exporter"]["status"] == "ok" and eps["razard"]["status"] == "ok"

    # a family left declared (HELP/TYPE) but without samples is a gap of its own
    no_samples = "".join(
        line for line in real.splitlines(keepends=True) if not line.startswith("node_load1 ")
    )
    copy = copies.serve("/metrics", no_samples)
    code, data = run_main(capsys, "--endpoint", f"copy={copy},kind=node_exporter", "--only", "copy")
    assert code == 1
    assert by_name(data)["copy"]["empty"] == ["node_load1"]
    assert by_name(data)["copy"]["missing"] == []


def test_a_node_clock_far_off_is_stale(
    node_exporter: str, copies: Exporter, capsys: pytest.CaptureFixture[str]
) -> None:
    """node_time_seconds an hour behind in a copy of node_exporter's output: stale, exit 1."""
    real = httpx.get(node_exporter, timeout=5).text
    old = f"node_time_seconds {time.time() - 3600:.3f}"
    copy = copies.serve("/metrics", re.sub(r"(?m)^node_time_seconds .*$", old, real))
    code, data = run_main(
        capsys,
        "--endpoint",
        f"node_exporter={node_exporter}",
        "--endpoint",
        f"behind={copy},kind=node_exporter",
        "--only",
        "node_exporter",
        "--only",
        "behind",
    )
    assert code == 1
    eps = by_name(data)
    assert eps["node_exporter"]["status"] == "ok"
    behind = eps["behind"]
    assert behind["status"] == "gap" and behind["missing"] == []
    assert [s["metric"] for s in behind["stale"]] == ["node_time_seconds"]
    assert "node clock off by" in behind["stale"][0]["reason"]


def test_an_unreachable_endpoint_is_a_gap_unless_optional(
    node_exporter: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody listens on the port: a gap (exit 1); marked optional it is skipped (exit 0)."""
    gone = f"http://127.0.0.1:{free_port()}/metrics"
    node = f"node_exporter={node_exporter}"
    only = ("--only", "node_exporter", "--only", "dcgm")
    code, data = run_main(capsys, "--endpoint", node, "--endpoint", f"dcgm={gone}", *only)
    assert code == 1
    dcgm = by_name(data)["dcgm"]
    assert dcgm["status"] == "gap" and dcgm["reachable"] is False
    assert dcgm["error"] == "cannot connect: Connection refused"

    optional = f"dcgm={gone},kind=gpu_exporter,optional=true"
    code, data = run_main(capsys, "--endpoint", node, "--endpoint", optional, *only)
    assert code == 0
    assert data["summary"] == {"endpoints": 2, "ok": 1, "gap": 0, "skipped": 1}
    assert by_name(data)["dcgm"]["status"] == "skipped"


def test_bad_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "razard.toml"
    config.write_text('[[monitoring.endpoint]]\nname = "gpu"\nurl = "tcp://127.0.0.1:9400"\n')
    p = run_script("--config", str(config))
    assert p.returncode == 2 and p.stdout == ""
    assert str(config) in p.stderr and "monitoring.endpoint[0] (gpu).url" in p.stderr

"""The shipped Prometheus rules and Grafana dashboard: promtool accepts them, every name is real.

The metric names razard exports are read from its own collectors (not from a list
kept by hand), so a renamed metric fails here until the rules and dashboard follow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from agents.chakra import ChakraCollector
from agents.gpu import GpuUnavailable
from agents.gpu_metrics import GpuCollector
from agents.healer import HealerMetrics
from razard.fleet.config import FleetConfig
from razard.fleet.core import Fleet
from razard.fleet.metrics import FleetCollector
from razard.layers import LAYERS
from razard.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "config" / "prometheus"
RULES = PROM_DIR / "razar_rules.yml"
RULES_TEST = PROM_DIR / "razar_rules_test.yml"
EXAMPLE_CONFIG = PROM_DIR / "prometheus.example.yml"
DASHBOARD = ROOT / "config" / "grafana" / "razar-dashboard.json"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package: prometheus)"
)

# Exported by the escalation notifier (issue 5), written alongside these rules and not in
# razard's registry yet; delete each name here once razard exports it.
NOTIFIER_METRICS = frozenset(
    {
        "razar_alerts_total",
        "razar_alert_outbox_size",
        "razar_alert_last_delivery_timestamp_seconds",
        "razar_notifier_last_run_timestamp_seconds",
    }
)
# Series Prometheus itself makes: the scrape's `up` and the rule engine's alert states.
PROMETHEUS_SERIES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})

# Grafana's variables, replaced by something PromQL accepts wherever a query is parsed.
GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
    "$component": ".*",
}

_PROMQL_WORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)


# ---------------------------------------------------------------- what razard exports


class _OneLayerChakra:
    """Just enough of `agents.chakra.Chakra` for `ChakraCollector` to yield every family."""

    def __init__(self) -> None:
        settings = SimpleNamespace(window=15.0)
        self.layers = {n: SimpleNamespace(outages=0, settings=settings) for n in LAYERS}

    def clock(self) -> float:
        return 100.0

    def pulse(self, name: str, now: float) -> tuple[float, bool]:
        return 1.0, False


def _no_gpu() -> Any:
    raise GpuUnavailable("no GPU in this test")


def _sample_names(family: Metric) -> Iterator[str]:
    """The series names a family is exposed as (text format), whether it has samples or not."""
    name, kind = family.name, family.type
    if kind == "counter":
        yield from (f"{name}_total", f"{name}_created")
    elif kind == "histogram":
        yield from (f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created")
    elif kind == "summary":
        yield from (name, f"{name}_sum", f"{name}_count", f"{name}_created")
    elif kind == "info":
        yield f"{name}_info"
    else:
        yield name


def exported_names() -> frozenset[str]:
    """Every series name razard's /metrics can carry, from the collectors razard registers."""
    metrics = Metrics("test")
    HealerMetrics(metrics.registry)
    families: list[Metric] = list(metrics.registry.collect())
    families += GpuCollector(_no_gpu).describe()
    chakra = CollectorRegistry()
    chakra.register(ChakraCollector(lambda: _OneLayerChakra()))  # type: ignore[arg-type,return-value]
    families += chakra.collect()
    fleet = CollectorRegistry()  # never started: the collector reads it without I/O
    fleet.register(FleetCollector(Fleet(FleetConfig(enabled=True, endpoints=("http://x:1",)))))
    families += fleet.collect()
    return frozenset(n for f in families for n in _sample_names(f))


def allowed_names() -> frozenset[str]:
    return exported_names() | NOTIFIER_METRICS | PROMETHEUS_SERIES | set(recorded_names())


# ---------------------------------------------------------------- reading the files


def rule_exprs(text: str) -> dict[str, str]:
    """``{alert or record name: expr}`` from a rules file laid out like razar_rules.yml.

    A small reader for this file's own layout (plain or block-scalar ``expr:``), so
    the test needs no YAML library; `test_rules_file_is_read_whole` checks it missed none.
    """
    out: dict[str, str] = {}
    lines = text.splitlines()
    name = ""
    i = 0
    while i < len(lines):
        if m := re.match(r"\s*- (?:alert|record): (\S+)", lines[i]):
            name = m.group(1)
        if m := re.match(r"(\s*)expr: ?(.*)$", lines[i]):
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", "|-", ">", ">-"):
                block: list[str] = []
                i += 1
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
                ):
                    block.append(lines[i].strip())
                    i += 1
                out[name] = " ".join(block).strip()
                continue
            out[name] = value
        i += 1
    return out


def rule_names(text: str, kind: str) -> list[str]:
    return re.findall(rf"^\s*- {kind}: (\S+)\s*$", text, re.M)


def recorded_names() -> list[str]:
    return rule_names(RULES.read_text(), "record")


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels", []))  # panels inside collapsed rows


def dashboard_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every panel target of the dashboard."""
    return [
        (p.get("title", ""), t["expr"])
        for p in _panels(dash["panels"])
        for t in p.get("targets", [])
        if t.get("expr")
    ]


def variable_metrics(dash: dict[str, Any]) -> list[str]:
    """The metric each ``label_values(metric{...}, label)`` template variable reads."""
    out = []
    for v in dash["templating"]["list"]:
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        if m := re.match(r"label_values\(\s*([A-Za-z_:][\w:]*)", q):
            out.append(m.group(1))
    return out


def with_grafana_vars(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\{?\w+\}?", " ", s)
    s = re.sub(r"\b\d[\w.]*", " ", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", s):
        if re.match(r"\s*\(", s[m.end() :]) or m.group() in _PROMQL_WORDS:
            continue  # a function or aggregation, or an operator
        names.add(m.group())
    return names


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


# ---------------------------------------------------------------- the rules


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    """`promtool check rules` accepts razar_rules.yml."""
    p = _promtool("check", "rules", RULES.name, cwd=PROM_DIR)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    """`promtool test rules razar_rules_test.yml` passes: each alert fires when it should."""
    p = _promtool("test", "rules", RULES_TEST.name, cwd=PROM_DIR)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_rules_file_is_read_whole() -> None:
    """The rules reader finds an expression for every alert and recording rule."""
    text = RULES.read_text()
    names = rule_names(text, "alert") + rule_names(text, "record")
    exprs = rule_exprs(text)
    assert sorted(exprs) == sorted(names)
    assert all(exprs.values())


def test_the_issue_s_alerts_are_shipped() -> None:
    """The rules cover razard down, retries, repair rate, stalled escalation, quarantine, chakra."""
    exprs = rule_exprs(RULES.read_text())
    uses = {name: metric_names(e) for name, e in exprs.items()}

    def alert_on(metric: str) -> list[str]:
        return [n for n, m in uses.items() if metric in m and n in alerts]

    alerts = set(rule_names(RULES.read_text(), "alert"))
    for metric in (
        "up",
        "razar_component_restarts_total",
        "component:razar_ai_invocation_success:increase1h",
        "razar_component_state",
        "razar_alert_outbox_size",
        "razar_notifier_last_run_timestamp_seconds",
        "razar_component_quarantined",
        "chakra_alignment",
        "razar_chakra_up",
    ):
        assert alert_on(metric), f"no alert on {metric}"
    assert 'up{job="razard"} == 0' in exprs["RazardDown"]
    assert 'absent(up{job="razard"})' in exprs["RazardDown"]
    assert 'unless on (job, instance) razar_build_info{job="razard"}' in exprs["RazardDown"]


def test_the_fleet_s_alerts_are_shipped() -> None:
    """The fleet has alerts on its breaker (one for the fleet, not per node), an unreachable
    etcd, a slot held long, actions waiting for a slot and actions denied."""
    exprs = rule_exprs(RULES.read_text())
    uses = {name: metric_names(e) for name, e in exprs.items()}
    for metric in (
        "razar_fleet_breaker_tripped",
        "razar_fleet_etcd_reachable",
        "razar_fleet_slots_held",
        "razar_fleet_slots_waiting",
        "razar_fleet_slot_requests_total",
    ):
        assert any(metric in m for m in uses.values()), f"no alert on {metric}"
    assert "instance" not in exprs["RazarFleetBreakerTripped"]
    assert exprs["RazarFleetBreakerTripped"].startswith("max by (job)")


def test_every_alert_has_severity_annotations_and_a_runbook() -> None:
    """Each alert has a severity label and summary, description and runbook annotations."""
    text = RULES.read_text()
    blocks = re.split(r"^\s*- (?=alert:|record:)", text, flags=re.M)[1:]
    alerts = [b for b in blocks if b.startswith("alert:")]
    assert len(alerts) == len(rule_names(text, "alert")) >= 6
    for block in alerts:
        name = block.split()[1]
        assert re.search(r"^\s+severity: (?:warning|critical)$", block, re.M), name
        for key in ("summary", "description", "runbook"):
            assert re.search(rf"^\s+{key}: \S", block, re.M), f"{name}: no {key}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """The rule unit tests have, for each alert, a case where it fires and one where it is quiet."""
    cases = re.findall(
        r"alertname: (\w+)\s*\n\s*exp_alerts:(.*)$", RULES_TEST.read_text(), flags=re.M
    )
    fires = {name for name, rest in cases if rest.strip() != "[]"}
    quiet = {name for name, rest in cases if rest.strip() == "[]"}
    alerts = set(rule_names(RULES.read_text(), "alert"))
    assert alerts - fires == set(), "alerts without a test where they fire"
    assert alerts - quiet == set(), "alerts without a test where they stay quiet"


def test_rules_name_only_metrics_razard_exports() -> None:
    """Every metric a rule reads is one razard exports (a renamed metric fails here)."""
    allowed = allowed_names()
    unknown = {
        name: sorted(metric_names(expr) - allowed)
        for name, expr in rule_exprs(RULES.read_text()).items()
        if metric_names(expr) - allowed
    }
    assert unknown == {}


def test_the_name_check_catches_a_renamed_metric() -> None:
    """The name check sees through functions, labels and ranges to the metric names."""
    expr = (
        'sum by (component) (increase(razar_component_restartz_total{job=~"$job"}[$__range]))'
        " / on (component) group_left (layer) razar_component_up > 0.5 and time() - up < 5m"
    )
    assert metric_names(expr) == {"razar_component_restartz_total", "razar_component_up", "up"}
    assert metric_names(expr) - allowed_names() == {"razar_component_restartz_total"}


def test_exported_names_come_from_razard_s_collectors() -> None:
    """The list of exported names holds razard's, the healers', the chakra and the GPU metrics."""
    names = exported_names()
    for n in (
        "razar_component_restarts_total",
        "razar_ai_invocation_success_total",
        "razar_heal_attempts_total",
        "chakra_pulse_hz",
        "chakra_alignment",
        "razar_chakra_up",
        "razar_gpu_utilization_ratio",
        "razar_gpu_xid_errors_total",
        "razar_build_info",
        "process_resident_memory_bytes",
    ):
        assert n in names


@needs_promtool
def test_example_prometheus_config_is_valid(tmp_path: Path) -> None:
    """prometheus.example.yml passes `promtool check config` with the shipped rules beside it."""
    text = EXAMPLE_CONFIG.read_text()
    assert "job_name: razard" in text and "127.0.0.1:9360" in text
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/razar_rules.yml", str(RULES))
    )
    p = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


# ---------------------------------------------------------------- the dashboard


def test_dashboard_imports_anywhere() -> None:
    """The dashboard is Grafana JSON with a ${DS_PROMETHEUS} input that every query uses."""
    dash = dashboard()
    assert dash["schemaVersion"] >= 36
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    panels = list(_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for p in panels:
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has no query"
        for ds in [p["datasource"], *(t["datasource"] for t in p["targets"])]:
            assert ds == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, p["title"]
    for v in dash["templating"]["list"]:
        assert v["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    """Panels read component states, restarts, rungs, repair outcomes, chakra, GPU and alerts."""
    used = set().union(*(metric_names(q) for _, q in dashboard_queries(dashboard())))
    for n in (
        "razar_component_state",
        "razar_component_restarts_total",
        "razar_ladder_rung_total",
        "razar_ai_invocation_success_total",
        "razar_ai_invocation_failure_total",
        "chakra_pulse_hz",
        "chakra_alignment",
        "razar_gpu_utilization_ratio",
        "razar_gpu_memory_used_bytes",
        "razar_gpu_temperature_celsius",
        "razar_gpu_xid_errors_total",
        "razar_alert_outbox_size",
        "razar_fleet_breaker_tripped",
        "razar_fleet_etcd_reachable",
        "razar_fleet_slots_held",
        "razar_fleet_slots_waiting",
        "razar_fleet_slot_requests_total",
        "razar_fleet_shared_fixes_total",
    ):
        assert n in used, f"no panel reads {n}"


def test_dashboard_names_only_metrics_razard_exports() -> None:
    """Every metric a panel or template variable reads is one razard exports."""
    dash = dashboard()
    allowed = allowed_names()
    unknown = {
        title: sorted(metric_names(q) - allowed)
        for title, q in dashboard_queries(dash)
        if metric_names(q) - allowed
    }
    assert unknown == {}
    assert set(variable_metrics(dash)) - allowed == set()
    assert variable_metrics(dash), "the template variables read no metric"


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Every panel query, with Grafana's variables filled in, parses (checked by promtool)."""
    queries = dashboard_queries(dashboard())
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": with_grafana_vars(q)}
                    for i, (_, q) in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(json.dumps(rules))  # JSON is YAML
    p = _promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(queries)} rules found" in p.stdout

"""Prometheus metrics razard exports (``razar_`` prefix, base units, ``_total`` counters).

One registry per razard, served on ``[razard].metrics_address``:``metrics_port``
(127.0.0.1:9360 by default). It carries razard's own process metrics too.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

STATES: Final = (
    "pending",
    "starting",
    "healthy",
    "unhealthy",
    "restarting",
    "escalating",
    "quarantined",
    "stopped",
    "failed",
)


class Metrics:
    """Every metric razard exports, on one registry."""

    def __init__(self, version: str) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        Info("razar_build", "razard build information", registry=r).info({"version": version})
        lbl = ["component", "layer"]
        self.up = Gauge(
            "razar_component_up", "1 when the component's unit is active", lbl, registry=r
        )
        self.healthy = Gauge(
            "razar_component_healthy", "1 when the component passes its probe", lbl, registry=r
        )
        self.quarantined = Gauge(
            "razar_component_quarantined", "1 when quarantined", lbl, registry=r
        )
        self.state = Gauge(
            "razar_component_state",
            "1 for the component's current state",
            ["component", "state"],
            registry=r,
        )
        self.restarts = Counter(
            "razar_component_restarts_total", "Restarts razard performed", lbl, registry=r
        )
        self.failures = Counter(
            "razar_component_failures_total",
            "Failures razard detected",
            ["component", "layer", "kind"],
            registry=r,
        )
        self.rungs = Counter(
            "razar_ladder_rung_total", "Ladder rungs taken", ["component", "rung"], registry=r
        )
        self.probe_duration = Histogram(
            "razar_probe_duration_seconds",
            "Health probe duration",
            ["component", "probe"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.probes = Counter(
            "razar_probes_total",
            "Health probes run, by result",
            ["component", "probe", "result"],
            registry=r,
        )
        self.probe_failures = Counter(
            "razar_probe_failures_total", "Failed health probes", ["component", "probe"], registry=r
        )
        # repair rung; the three razar_ai_* names are kept from the original runbooks
        self.ai_success = Counter(
            "razar_ai_invocation_success",
            "Repair agent invocations that healed the component",
            ["component"],
            registry=r,
        )
        self.ai_failure = Counter(
            "razar_ai_invocation_failure",
            "Repair agent invocations that did not heal (failed, refused, reverted)",
            ["component"],
            registry=r,
        )
        self.ai_retries = Counter(
            "razar_ai_invocation_retries",
            "HTTP retries of repair agent calls (429/5xx)",
            ["component"],
            registry=r,
        )
        self.agent_duration = Histogram(
            "razar_ai_agent_duration_seconds",
            "Repair agent call duration",
            ["agent"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.patches = Counter(
            "razar_patches_total",
            "Patches by what happened to them",
            ["component", "action"],
            registry=r,
        )
        self.escalations = Counter(
            "razar_escalations_total", "Repair rungs tried", ["component"], registry=r
        )
        self.escalation_warnings = Counter(
            "razar_escalation_warnings_total",
            "Times RAZAR_ESCALATION_WARNING_THRESHOLD was reached",
            ["component"],
            registry=r,
        )
        self.ready = Gauge("razar_ready", "1 once the first boot wave has settled", registry=r)
        self.bus_resyncs = Counter(
            "razar_bus_resyncs_total",
            "Re-reads of every unit's state after a bus reconnect or a systemd reload/re-exec",
            registry=r,
        )

    def set_state(self, component: str, layer: str, state: str) -> None:
        self.restarts.labels(component, layer)  # 0 from the start, not absent until the first
        for s in STATES:
            self.state.labels(component, s).set(1 if s == state else 0)
        self.quarantined.labels(component, layer).set(1 if state == "quarantined" else 0)
        if state != "healthy":
            self.healthy.labels(component, layer).set(0)

    def forget(self, component: str, layer: str) -> None:
        """Drop a removed component's series so dashboards do not show it forever."""
        for metric in (self.up, self.healthy, self.quarantined, self.restarts):
            _remove(metric, component, layer)
        for s in STATES:
            _remove(self.state, component, s)
        for kind in ("exit", "probe", "start"):
            _remove(self.failures, component, layer, kind)
        for rung in ("restart", "escalate", "quarantine"):
            _remove(self.rungs, component, rung)
        for probe in ("exec", "http", "tcp"):
            _remove(self.probe_duration, component, probe)
            _remove(self.probe_failures, component, probe)
            for result in ("ok", "failed"):
                _remove(self.probes, component, probe, result)

    def serve(self, address: str, port: int) -> int:
        """Serve /metrics; returns the bound port (useful when ``port`` is 0)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_address[1])


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    try:
        metric.remove(*labels)
    except KeyError:
        pass

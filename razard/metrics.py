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
        self.probe_failures = Counter(
            "razar_probe_failures_total", "Failed health probes", ["component", "probe"], registry=r
        )
        self.ready = Gauge("razar_ready", "1 once the first boot wave has settled", registry=r)
        self.bus_reconnects = Counter(
            "razar_bus_reconnects_total", "Reconnects/resyncs with systemd over D-Bus", registry=r
        )

    def set_state(self, component: str, layer: str, state: str) -> None:
        for s in STATES:
            self.state.labels(component, s).set(1 if s == state else 0)
        self.quarantined.labels(component, layer).set(1 if state == "quarantined" else 0)
        if state != "healthy":
            self.healthy.labels(component, layer).set(0)

    def forget(self, component: str, layer: str) -> None:
        """Drop a removed component's series so dashboards do not show it forever."""
        for g in (self.up, self.healthy, self.quarantined):
            try:
                g.remove(component, layer)
            except KeyError:
                pass
        for s in STATES:
            try:
                self.state.remove(component, s)
            except KeyError:
                pass

    def serve(self, address: str, port: int) -> int:
        """Serve /metrics; returns the bound port (useful when ``port`` is 0)."""
        server, _thread = start_http_server(port, addr=address, registry=self.registry)
        return int(server.server_address[1])

"""``razar_fleet_*``: what this node's fleet core knows, read at scrape time without I/O.

Register on razard's registry once the fleet is wired in::

    registry.register(FleetCollector(fleet))
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from razard.fleet.core import Fleet


class FleetCollector(Collector):
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        f = self.fleet
        c = f.counters
        yield GaugeMetricFamily(
            "razar_fleet_etcd_reachable",
            "1 while the fleet's etcd answers (gated actions are denied while it does not)",
            value=1.0 if f.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "razar_fleet_slots_held", "Remediation budget slots this node holds", value=f.held
        )
        yield GaugeMetricFamily(
            "razar_fleet_slots_waiting",
            "Disruptive actions on this node waiting for a budget slot",
            value=c.waiting,
        )
        yield GaugeMetricFamily(
            "razar_fleet_breaker_tripped",
            "1 while the fleet's circuit breaker is tripped (as last read from etcd)",
            value=1.0 if f.breaker_tripped else 0.0,
        )
        grants = CounterMetricFamily(
            "razar_fleet_slot_requests",
            "Requests for a budget slot, by outcome",
            labels=["result"],
        )
        grants.add_metric(["granted"], c.granted)
        grants.add_metric(["denied"], c.denied)
        yield grants
        fixes = CounterMetricFamily(
            "razar_fleet_shared_fixes",
            "Fixes from the fleet tried on this node, by outcome",
            labels=["result"],
        )
        fixes.add_metric(["kept"], c.fixes_kept)
        fixes.add_metric(["failed"], c.fixes_failed)
        yield fixes

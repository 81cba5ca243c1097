"""razar_fleet_* as Prometheus scrapes them (a fleet core not started: no etcd needed)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from razard.fleet.config import FleetConfig
from razard.fleet.core import Fleet
from razard.fleet.metrics import FleetCollector


def test_fleet_metrics_follow_the_core() -> None:
    fleet = Fleet(FleetConfig(enabled=True, endpoints=("http://127.0.0.1:1",), node="n"))
    registry = CollectorRegistry()
    registry.register(FleetCollector(fleet))
    text = generate_latest(registry).decode()
    assert "razar_fleet_etcd_reachable 0.0" in text
    assert "razar_fleet_breaker_tripped 0.0" in text
    fleet.reachable = True
    fleet.breaker_tripped = True
    fleet.counters.waiting = 2
    fleet.counters.denied = 3
    fleet.counters.fixes_kept = 1
    text = generate_latest(registry).decode()
    assert "razar_fleet_etcd_reachable 1.0" in text
    assert "razar_fleet_breaker_tripped 1.0" in text
    assert "razar_fleet_slots_waiting 2.0" in text
    assert 'razar_fleet_slot_requests_total{result="denied"} 3.0' in text
    assert 'razar_fleet_shared_fixes_total{result="kept"} 1.0' in text

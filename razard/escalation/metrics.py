"""The notifier's Prometheus metrics, on razard's registry (or a private one).

``razar_alerts_total{target,result}`` (result: ``delivered``, ``failed`` per
failed attempt, ``dropped`` when an alert is given up: outbox full or refused
for good), ``razar_alert_outbox_size``,
``razar_alert_last_delivery_timestamp_seconds`` and
``razar_notifier_last_run_timestamp_seconds`` (set on every pass, so an alert
rule can tell a stalled notifier).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge

RESULTS: Final = ("delivered", "failed", "dropped")


class NotifierMetrics:
    """The four notifier metrics on ``registry``."""

    def __init__(self, registry: CollectorRegistry, targets: Iterable[str] = ()) -> None:
        self.alerts = Counter(
            "razar_alerts",
            "Alert deliveries to a target, by result (failed: an attempt; dropped: given up)",
            ["target", "result"],
            registry=registry,
        )
        self.outbox_size = Gauge(
            "razar_alert_outbox_size", "Alert deliveries waiting in the outbox", registry=registry
        )
        self.last_delivery = Gauge(
            "razar_alert_last_delivery_timestamp_seconds",
            "When an alert was last delivered to any target",
            registry=registry,
        )
        self.last_run = Gauge(
            "razar_notifier_last_run_timestamp_seconds",
            "When the escalation notifier last finished a pass",
            registry=registry,
        )
        for target in targets:  # 0 from the start, not absent until the first alert
            for result in RESULTS:
                self.alerts.labels(target, result)

"""Where alerts go: Alertmanager, the operator console, a generic webhook.

Each target turns an alert (the escalation record's fields) into one HTTP
request (`build_request`, pure) and sends it with a shared
``httpx.AsyncClient`` whose timeout bounds every call. A token is read when a
request is sent, from the environment variable or file the config names, and
goes out only in the ``Authorization: Bearer`` header: never in a record, a
log line or an error message.

    DeliveryError            the request did not get through
    └── (permanent=True)     the target refused it (4xx): retrying cannot help

- **Alertmanager**: ``POST <url>/api/v2/alerts`` with one alert; labels
  ``alertname``, ``component``, ``layer``, ``severity``, ``host``,
  ``signature``; annotations ``summary``, ``description``. A firing alert's
  ``endsAt`` is two repeat intervals ahead (a repeat moves it on), a resolved
  one's is now.
- **Operator console**: ``POST <url>/operator/command`` with
  ``{"operator", "agent", "command"}`` (``command`` is ``escalate`` or
  ``resolve``) and a ``context`` object holding the alert.
- **Webhook**: ``POST <url>`` with ``{"version": 1, "status", "alert"}``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from razard.errors import RazarError
from razard.escalation.config import TargetConfig
from razard.escalation.history import iso
from razard.journal import redact

if TYPE_CHECKING:  # loaded with the first delivery, not by whoever imports the targets
    import httpx

Status = Literal["firing", "resolved"]

ALERTNAMES: Final = {
    "recurring": "RazarRecurringFailure",
    "quarantine": "RazarComponentQuarantined",
    "warning_threshold": "RazarEscalationWarning",
    "layer_down": "RazarLayerDown",
    "fleet_breaker": "RazarFleetBreakerTripped",
}
SEVERITY: Final = {"quarantine": "critical", "layer_down": "critical", "fleet_breaker": "critical"}
#: a firing alert with no update for this long is ended by Alertmanager itself
MIN_ENDS_AFTER: Final = 600.0
_BODY_SHOWN: Final = 200


class DeliveryError(RazarError):
    """An alert did not reach a target; ``permanent`` when retrying cannot help."""

    def __init__(self, target: str, message: str, *, permanent: bool = False) -> None:
        self.target = target
        self.permanent = permanent
        super().__init__(f"{target}: {message}")


@dataclass(frozen=True)
class Request:
    url: str
    body: Any


class Target:
    """One configured target; ``name`` is its kind (``alertmanager``, ...)."""

    def __init__(self, cfg: TargetConfig, repeat_interval: float) -> None:
        self.cfg = cfg
        self.name: str = cfg.kind
        self.repeat_interval = repeat_interval

    def build_request(self, alert: Mapping[str, Any], status: Status, now: float) -> Request:
        """The URL and JSON body that deliver ``alert`` with ``status`` (pure)."""
        base = self.cfg.url.rstrip("/")
        if self.cfg.kind == "alertmanager":
            return Request(f"{base}/api/v2/alerts", [self._am_alert(alert, status, now)])
        if self.cfg.kind == "operator":
            url = base if base.endswith("/operator/command") else f"{base}/operator/command"
            body = {
                "operator": self.cfg.operator,
                "agent": self.cfg.agent,
                "command": "escalate" if status == "firing" else "resolve",
                "context": {**alert, "status": status},
            }
            return Request(url, body)
        return Request(self.cfg.url, {"version": 1, "status": status, "alert": dict(alert)})

    def _am_alert(self, alert: Mapping[str, Any], status: Status, now: float) -> dict[str, Any]:
        reason = str(alert.get("reason", ""))
        labels = {
            "alertname": ALERTNAMES.get(reason, "RazarEscalation"),
            "component": str(alert.get("component", "")),
            "layer": str(alert.get("layer", "")),
            "severity": SEVERITY.get(reason, "warning"),
            "host": str(alert.get("host", "")),
            "signature": str(alert.get("signature", "")),
        }
        ends = now if status == "resolved" else now + max(2 * self.repeat_interval, MIN_ENDS_AFTER)
        return {
            "labels": {k: v for k, v in labels.items() if v},
            "annotations": {
                "summary": str(alert.get("summary", "")),
                "description": description(alert),
            },
            "startsAt": iso(float(alert.get("ts") or now)),
            "endsAt": iso(ends),
        }

    def token(self) -> str | None:
        """The bearer token from ``token_env``/``token_file``; None when none is configured.

        Raises:
            DeliveryError: the variable is unset or the file unreadable (the
                message names them, never a value).
        """
        if self.cfg.token_env:
            value = os.environ.get(self.cfg.token_env, "").strip()
            if not value:
                raise DeliveryError(self.name, f"token: ${self.cfg.token_env} is not set")
            return value
        if self.cfg.token_file is not None:
            try:
                value = self.cfg.token_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise DeliveryError(
                    self.name, f"token: cannot read {self.cfg.token_file}: {e}"
                ) from None
            if not value:
                raise DeliveryError(self.name, f"token: {self.cfg.token_file} is empty")
            return value
        return None

    async def send(
        self, client: httpx.AsyncClient, alert: Mapping[str, Any], status: Status, now: float
    ) -> None:
        """Deliver one alert; returns when the target accepted it (2xx).

        Raises:
            DeliveryError: not delivered; ``permanent`` for a 4xx other than 408/429.
        """
        import httpx

        req = self.build_request(alert, status, now)
        token = self.token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            resp = await client.post(req.url, json=req.body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(self.name, f"{_where(req.url)}: timed out") from None
        except httpx.HTTPError as e:
            raise DeliveryError(self.name, f"{_where(req.url)}: {type(e).__name__}") from None
        if 200 <= resp.status_code < 300:
            return
        text = redact(resp.text[:_BODY_SHOWN]).replace("\n", " ")
        if token:
            text = text.replace(token, "***")
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 429)
        raise DeliveryError(
            self.name, f"{_where(req.url)}: HTTP {resp.status_code}: {text}", permanent=permanent
        )


def description(alert: Mapping[str, Any]) -> str:
    """The text a person reads under the summary."""
    parts = [
        f"{alert.get('component')} on {alert.get('host')}"
        + (f" (layer {alert['layer']})" if alert.get("layer") else "")
        + f": {alert.get('reason')}, seen {alert.get('count', 1)} time(s)",
        f"signature: {alert.get('signature')}",
    ]
    if alert.get("sample"):
        parts.append(f"sample: {alert['sample']}")
    parts.append(f"escalation {alert.get('id')}; see `razarctl escalations`")
    return "\n".join(parts)


def _where(url: str) -> str:
    # scheme://host/path only: a query string may carry a secret
    return redact(url.split("?", 1)[0])

"""What each target is sent (pure request building), and where its token comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from razard.escalation.config import TargetConfig
from razard.escalation.targets import DeliveryError, Target

ALERT: dict[str, Any] = {
    "id": "e1",
    "ts": 1700000000.0,
    "host": "gpu-1",
    "component": "vllm",
    "layer": "sacral",
    "reason": "recurring",
    "signature": "CUDA error: out of memory",
    "sample": "CUDA error: out of memory (tried 2 GiB)",
    "count": 5,
    "summary": "vllm on gpu-1: recurring failure: CUDA error: out of memory",
}


def target(kind: str, url: str = "http://127.0.0.1:9093/", **kw: Any) -> Target:
    return Target(TargetConfig(kind, url, **kw), repeat_interval=3600.0)  # type: ignore[arg-type]


def test_alertmanager_gets_labels_annotations_and_an_end() -> None:
    """POST /api/v2/alerts: labels for routing and dedup; a resolve ends it now."""
    req = target("alertmanager").build_request(ALERT, "firing", 1700000100.0)
    assert req.url == "http://127.0.0.1:9093/api/v2/alerts"
    (a,) = req.body
    assert a["labels"] == {
        "alertname": "RazarRecurringFailure",
        "component": "vllm",
        "layer": "sacral",
        "severity": "warning",
        "host": "gpu-1",
        "signature": "CUDA error: out of memory",
    }
    assert a["annotations"]["summary"] == ALERT["summary"]
    assert "tried 2 GiB" in a["annotations"]["description"]
    assert a["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert a["endsAt"] == "2023-11-15T00:15:00.000Z"  # two repeat intervals on
    (r,) = target("alertmanager").build_request(ALERT, "resolved", 1700000100.0).body
    assert r["labels"] == a["labels"] and r["endsAt"] == "2023-11-14T22:15:00.000Z"


def test_operator_console_gets_a_command_with_the_context() -> None:
    """POST /operator/command: {"operator", "agent", "command"} plus the alert as context."""
    t = target("operator", "http://127.0.0.1:8080", operator="razar", agent="overseer")
    req = t.build_request(ALERT, "firing", 0.0)
    assert req.url == "http://127.0.0.1:8080/operator/command"
    assert {k: req.body[k] for k in ("operator", "agent", "command")} == {
        "operator": "razar",
        "agent": "overseer",
        "command": "escalate",
    }
    assert req.body["context"]["signature"] == ALERT["signature"]
    assert t.build_request(ALERT, "resolved", 0.0).body["command"] == "resolve"


def test_webhook_gets_the_alert_as_is() -> None:
    """POST <url>: a versioned envelope with the status and the alert."""
    req = target("webhook", "https://hooks.example/razar?x=1").build_request(ALERT, "firing", 0)
    assert req.url == "https://hooks.example/razar?x=1"
    assert req.body == {"version": 1, "status": "firing", "alert": ALERT}


def test_token_from_env_or_file_and_errors_never_show_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token is read when sending; a missing one is named by variable or file, not value."""
    monkeypatch.setenv("T_TOKEN", " s3cr3t \n")
    assert target("webhook", token_env="T_TOKEN").token() == "s3cr3t"
    f = tmp_path / "tok"
    f.write_text("filetok\n")
    assert target("webhook", token_file=f).token() == "filetok"
    assert target("webhook").token() is None
    monkeypatch.delenv("T_TOKEN")
    with pytest.raises(DeliveryError, match=r"\$T_TOKEN is not set"):
        target("webhook", token_env="T_TOKEN").token()
    with pytest.raises(DeliveryError, match="cannot read") as e:
        target("webhook", token_file=tmp_path / "missing").token()
    assert not e.value.permanent

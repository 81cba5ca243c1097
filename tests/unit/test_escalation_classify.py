"""Journal entries and repair records become the observations the notifier acts on."""

from __future__ import annotations

from typing import Any

from razard.escalation.classify import Observation, from_journal, from_record

UNITS = {"razar-vllm.service": "vllm", "nginx.service": "gateway"}
LAYERS = {"vllm": "sacral", "gateway": "throat"}


def entry(**fields: Any) -> dict[str, Any]:
    base = {
        "__REALTIME_TIMESTAMP": "1700000000000000",
        "_HOSTNAME": "gpu-1",
        "PRIORITY": "6",
        "_UID": "0",  # razard (root) sent it; see the forged ones below
    }
    return {**base, **fields}


def obs(e: dict[str, Any]) -> Observation | None:
    return from_journal(e, units=UNITS, layers=LAYERS, host="fallback", now=0.0)


def test_operator_alert_about_a_component_is_a_quarantine() -> None:
    """razard's operator_alert for a component (quarantined, gave up) raises a quarantine."""
    o = obs(
        entry(
            SYSLOG_IDENTIFIER="razard",
            RAZAR_EVENT="operator_alert",
            RAZAR_COMPONENT="vllm",
            RAZAR_LAYER="sacral",
            PRIORITY="1",
            MESSAGE="vllm quarantined: restart budget spent",
        )
    )
    assert o is not None and (o.kind, o.component, o.layer, o.host) == (
        "quarantine",
        "vllm",
        "sacral",
        "gpu-1",
    )
    assert o.ts == 1700000000.0 and o.signature == "quarantined"


def test_ladder_warning_threshold_is_its_own_reason() -> None:
    """escalation_warning (RAZAR_ESCALATION_WARNING_THRESHOLD reached) raises a warning."""
    o = obs(entry(RAZAR_EVENT="escalation_warning", RAZAR_COMPONENT="vllm", PRIORITY="4"))
    assert o is not None and o.kind == "warning_threshold"


def test_a_tripped_fleet_breaker_is_one_alert_for_the_fleet() -> None:
    """fleet_breaker_tripped (from the node whose action tripped it, with or without the
    component it acted on) is filed under fleet:breaker, never under that component."""
    for comp in ({}, {"RAZAR_COMPONENT": "vllm"}):
        o = obs(entry(RAZAR_EVENT="fleet_breaker_tripped", PRIORITY="1", **comp))
        assert o is not None and (o.kind, o.component, o.signature) == (
            "fleet_breaker",
            "fleet:breaker",
            "fleet_breaker",
        )
    forged = entry(RAZAR_EVENT="fleet_breaker_tripped", PRIORITY="1", _UID="1000")
    assert obs(forged) is None  # another user's entry is not razard's
    o = obs(entry(RAZAR_EVENT="fleet_breaker_reset", PRIORITY="5"))  # an operator reset it
    assert o is not None and (o.kind, o.component) == ("recovered", "fleet:breaker")
    assert obs(entry(RAZAR_EVENT="fleet_breaker_reset", PRIORITY="5", _UID="1000")) is None


def test_layer_down_beyond_its_healer_is_filed_under_the_layer() -> None:
    """chakra_escalated and a layer-only operator_alert are a layer_down of that layer."""
    for event in ("chakra_escalated", "operator_alert"):
        o = obs(entry(RAZAR_EVENT=event, RAZAR_LAYER="sacral", PRIORITY="1"))
        assert o is not None and (o.kind, o.component, o.layer) == (
            "layer_down",
            "layer:sacral",
            "sacral",
        )


def test_recovery_and_root_outage() -> None:
    """state_healthy and chakra_up recover; chakra_down of root is the root outage."""
    o = obs(entry(RAZAR_EVENT="state_healthy", RAZAR_COMPONENT="vllm"))
    assert o is not None and (o.kind, o.component) == ("recovered", "vllm")
    o = obs(entry(RAZAR_EVENT="chakra_up", RAZAR_LAYER="root"))
    assert o is not None and (o.kind, o.component) == ("recovered", "layer:root")
    o = obs(entry(RAZAR_EVENT="chakra_down", RAZAR_LAYER="root", PRIORITY="3"))
    assert o is not None and o.kind == "root_down"
    assert obs(entry(RAZAR_EVENT="chakra_down", RAZAR_LAYER="heart", PRIORITY="3")) is None


def test_component_output_that_reads_like_an_error_is_a_failure() -> None:
    """Output of a component's unit is a failure when it is an error, not when it chats."""
    o = obs(entry(_SYSTEMD_UNIT="razar-vllm.service", MESSAGE="CUDA error: out of memory"))
    assert o is not None and (o.kind, o.component, o.layer) == ("failure", "vllm", "sacral")
    o = obs(
        entry(
            _SYSTEMD_USER_UNIT="nginx.service",
            _SYSTEMD_OWNER_UID="0",
            MESSAGE="worker 12 crashed",
            PRIORITY="3",
        )
    )
    assert o is not None and o.component == "gateway"
    o = obs(
        entry(
            _SYSTEMD_CGROUP="/razar-sandbox-1/app.slice/razar-vllm.service",
            MESSAGE="CUDA error: out of memory",
        )
    )
    assert o is not None and o.component == "vllm"
    assert obs(entry(_SYSTEMD_UNIT="razar-vllm.service", MESSAGE="loaded 32 layers")) is None
    assert obs(entry(SYSLOG_IDENTIFIER="sshd", MESSAGE="fatal: bad login")) is None


def test_what_another_user_sends_under_razards_or_a_units_name_is_ignored() -> None:
    """RAZAR_* fields from a sender that is not root, and output that only names a unit
    (SYSLOG_IDENTIFIER) or comes from a unit in a user's own manager, mean nothing."""
    forged = entry(
        SYSLOG_IDENTIFIER="razard",
        RAZAR_EVENT="operator_alert",
        RAZAR_COMPONENT="vllm",
        PRIORITY="1",
        MESSAGE="vllm quarantined",
        _UID="4242",
    )
    assert obs(forged) is None
    assert obs({**forged, "RAZAR_EVENT": "chakra_down", "RAZAR_LAYER": "root"}) is None
    assert obs(entry(SYSLOG_IDENTIFIER="razar-vllm", MESSAGE="CUDA error", _UID="4242")) is None
    assert (
        obs(
            entry(
                _SYSTEMD_UNIT="user@4242.service",
                _SYSTEMD_USER_UNIT="razar-vllm.service",
                _SYSTEMD_OWNER_UID="4242",
                MESSAGE="CUDA error: out of memory",
            )
        )
        is None
    )
    assert (
        obs(
            entry(
                _SYSTEMD_CGROUP="/user.slice/user-4242.slice/user@4242.service/app.slice/"
                "razar-vllm.service",
                MESSAGE="CUDA error: out of memory",
            )
        )
        is None
    )


def test_razard_failure_events_count_and_notices_do_not() -> None:
    """component_failed/probe_failed are failures; restarts noticed and skipped agents are not."""
    o = obs(
        entry(
            RAZAR_EVENT="probe_failed",
            RAZAR_COMPONENT="vllm",
            PRIORITY="4",
            MESSAGE="probe failed (2/3): connection refused",
        )
    )
    assert o is not None and o.kind == "failure"
    assert o.signature == "probe_failed: probe failed (<n>/<n>): connection refused"
    assert obs(entry(RAZAR_EVENT="state_restarting", RAZAR_COMPONENT="vllm", PRIORITY="5")) is None
    assert obs(entry(RAZAR_EVENT="agent_skipped", RAZAR_COMPONENT="vllm", PRIORITY="4")) is None


def test_failed_repair_records_are_failures() -> None:
    """A failed or refused repair attempt from the JSON-lines logs is a failure; healed is not."""
    rec = {"component": "vllm", "agent": "kimi", "status": "refused", "reason": "too big"}
    o = from_record("patch", {**rec, "unix": 5.0}, layers=LAYERS, host="h", now=9.0)
    assert o is not None and (o.kind, o.ts, o.layer) == ("failure", 5.0, "sacral")
    assert o.signature == "patch: kimi refused: too big"
    assert from_record("patch", {**rec, "status": "healed"}, layers=LAYERS, host="h", now=0) is None

"""Triage: the journalctl queries behind razarctl logs, times, and the incident timeline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from razard.escalation.trust import uid_matches
from razard.triage import LogQuery, TriageError, kind_of, markdown, parse_time, summary, timeline

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


#: root (and this uid) only: journald's _UID / _SYSTEMD_OWNER_UID, which no sender chooses
OWN = uid_matches()
OWNER = uid_matches("_SYSTEMD_OWNER_UID")


def test_component_query_matches_its_records_or_its_unit() -> None:
    """A component alone: razard's records about it OR its unit's output."""
    argv = LogQuery(component="vllm", unit="razar-vllm.service").argv()
    assert argv[4:] == [
        "RAZAR_COMPONENT=vllm",
        *OWN,
        "+",
        "_SYSTEMD_UNIT=razar-vllm.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-vllm.service",
        *OWNER,
        "+",
        "SYSLOG_IDENTIFIER=razar-vllm",
        *OWN,
    ]


def test_event_and_layer_filters_and_with_the_component_and_drop_unit_output() -> None:
    """--event/--layer narrow razard's records; the unit's own lines carry neither field."""
    argv = LogQuery(
        component="vllm",
        unit="razar-vllm.service",
        layers=("sacral",),
        events=("probe_failed", "state_restarting"),
    ).argv()
    assert argv[4:] == [
        "RAZAR_COMPONENT=vllm",
        "RAZAR_LAYER=sacral",
        "RAZAR_EVENT=probe_failed",
        "RAZAR_EVENT=state_restarting",
        *OWN,
    ]
    assert "+" not in argv


def test_no_component_means_every_razard_record_or_the_filters_alone() -> None:
    """Without a component: all of razard's records, or just the layer/event matches."""
    assert LogQuery().argv()[4:] == ["SYSLOG_IDENTIFIER=razard", *OWN]
    assert LogQuery(layers=("root",)).argv()[4:] == ["RAZAR_LAYER=root", *OWN]


def test_time_priority_and_output_options_come_first() -> None:
    """--since/--until/-p/-n/-f/-o go to journalctl ahead of the matches."""
    argv = LogQuery(
        component="api",
        since="1h ago",
        until="10 min ago",
        priority="warning",
        output="json",
        lines=20,
        follow=True,
        now=NOW,
    ).argv()
    assert argv == [
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "--since",
        f"@{int(NOW.timestamp()) - 3600}",
        "--until",
        f"@{int(NOW.timestamp()) - 600}",
        "-p",
        "warning",
        "-n",
        "20",
        "-f",
        "RAZAR_COMPONENT=api",
        *OWN,
    ]


def test_unknown_priority_or_output_is_refused() -> None:
    """A priority or output journalctl would not take is refused with the choices."""
    with pytest.raises(ValueError, match="unknown priority 'loud'"):
        LogQuery(priority="loud").argv()
    with pytest.raises(ValueError, match="unknown output 'verbose'"):
        LogQuery(output="verbose").argv()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h ago", NOW.timestamp() - 7200),
        ("-30m", NOW.timestamp() - 1800),
        ("90 sec ago", NOW.timestamp() - 90),
        ("now", NOW.timestamp()),
        ("@1700000000", 1700000000.0),
        ("2026-11-29 08:00", datetime(2026, 11, 29, 8, tzinfo=UTC).timestamp()),
        ("2026-11-29T08:00:00+01:00", datetime(2026, 11, 29, 7, tzinfo=UTC).timestamp()),
    ],
)
def test_times_as_operators_type_them(text: str, expected: float) -> None:
    """Relative, absolute (UTC unless it says) and @unix times are read."""
    assert parse_time(text, NOW) == pytest.approx(expected)


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC+14 (fixed), where local and UTC days differ."""
    monkeypatch.setenv("TZ", "RZR-14")  # POSIX form: needs no tzdata
    time.tzset()
    assert time.localtime(NOW.timestamp()).tm_gmtoff == 14 * 3600  # the zone really applies
    yield
    monkeypatch.undo()
    time.tzset()


def test_today_and_iso_are_utc_whatever_the_local_zone(far_from_utc: None) -> None:
    """ "today"/"yesterday" start at UTC midnight and ISO without an offset is UTC, even
    where the local day is another (12:00 UTC is 02:00 the next day in UTC+14)."""
    midnight = datetime(2026, 11, 29, tzinfo=UTC).timestamp()
    assert parse_time("today", NOW) == midnight
    assert parse_time("yesterday", NOW) == midnight - 86400
    assert parse_time("2026-11-29 08:00", NOW) == midnight + 8 * 3600


def test_logs_hands_journalctl_unix_times_never_local_text(far_from_utc: None) -> None:
    """`razarctl logs --since/--until` mean what `incident`'s do: journalctl gets @<unix>,
    so its own local-time reading of "today" or ISO text never applies."""
    midnight = int(datetime(2026, 11, 29, tzinfo=UTC).timestamp())
    argv = LogQuery(since="today", until="2026-11-29 08:00:30.5", now=NOW).argv()
    assert argv[4:8] == ["--since", f"@{midnight}", "--until", f"@{midnight + 8 * 3600 + 30}.5"]
    assert float(argv[5][1:]) == parse_time("today", NOW)  # incident's window, to the second
    assert float(argv[7][1:]) == parse_time("2026-11-29 08:00:30.5", NOW)


def test_logs_refuses_a_time_it_cannot_read() -> None:
    """An unreadable --since is an error quoting it, not text for journalctl to guess at."""
    with pytest.raises(TriageError, match="'last tuesday'"):
        LogQuery(since="last tuesday").argv()


def test_an_unreadable_time_names_the_text() -> None:
    """A time razarctl cannot read is an error quoting it, with the accepted forms."""
    with pytest.raises(TriageError, match="'last tuesday'.*2h ago"):
        parse_time("last tuesday", NOW)


def ev(
    unix: float, event: str, component: str | None = "api", layer: str = "throat", **kw: object
) -> dict[str, object]:
    return {"unix": unix, "event": event, "component": component, "layer": layer, **kw}


def test_timeline_merges_sources_oldest_first_without_duplicates() -> None:
    """Journal events, patch history and escalations make one timeline; the journal's mirror
    of a patch is dropped, other components' events are not shown, the layer's are."""
    events = [
        ev(10, "probe_failed", message="GET /health: 500"),
        ev(11, "state_restarting", message="restart 1 in 0.10s"),
        ev(12, "chakra_down", component=None, message="throat layer down"),
        ev(13, "chakra_down", component=None, layer="root", message="other layer"),
        ev(14, "probe_failed", component="other", message="not ours"),
        ev(20, "patch_applied", message="journal mirror of the patch"),
        ev(30, "state_quarantined", level="crit", message="quarantined: budget spent"),
    ]
    patches = [
        {"unix": 19.5, "component": "api", "patch_id": "p1", "status": "applied", "agent": "k2"},
        {"unix": 25, "component": "api", "patch_id": "p1", "status": "reverted", "by": "razard"},
        {"unix": 26, "component": "other", "patch_id": "p9", "status": "applied"},
    ]
    alerts = [
        {
            "ts": 31,
            "component": "api",
            "reason": "quarantine",
            "count": 3,
            "signature": "fatal: shard corrupt",
            "targets": {"alertmanager": "delivered", "operator": "queued"},
            "delivered": False,
        }
    ]
    entries = timeline("api", "throat", events, patches, alerts)
    assert [(e.unix, e.kind, e.event) for e in entries] == [
        (10, "probe", "probe_failed"),
        (11, "restart", "state_restarting"),
        (12, "chakra", "chakra_down"),
        (19.5, "patch", "patch_applied"),
        (25, "patch", "patch_reverted"),
        (30, "quarantine", "state_quarantined"),
        (31, "alert", "alert_quarantine"),
    ]
    assert "p1 from k2 applied" in entries[3].message
    assert "alertmanager delivered, operator queued" in entries[-1].message
    assert entries[-1].message.startswith("alert (quarantine x3)")
    info = summary(entries)
    assert info["counts"] == {
        "probe": 1,
        "restart": 1,
        "chakra": 1,
        "patch": 2,
        "quarantine": 1,
        "alert": 1,
    }
    assert info["last_state_event"] == "state_quarantined"


def test_timeline_window_keeps_only_entries_between_since_and_until() -> None:
    """--since/--until cut every source alike."""
    events = [ev(t, "probe_failed") for t in (5, 15, 25)]
    patches = [{"unix": 16, "component": "api", "patch_id": "p", "status": "kept"}]
    entries = timeline("api", "throat", events, patches, since=10, until=20)
    assert [e.unix for e in entries] == [15, 16]


def test_the_journal_mirror_of_a_patch_stays_when_there_is_no_patch_history() -> None:
    """Without patch_history.jsonl the journal's patch lines are the only record and stay."""
    entries = timeline("api", "throat", [ev(1, "patch_rolled_back", message="rolled back")])
    assert [e.event for e in entries] == ["patch_rolled_back"]
    assert entries[0].kind == "patch"


def test_kinds_of_events() -> None:
    """Every state change is a state entry, except restarts and quarantine which have their own."""
    assert kind_of("state_healthy") == "state"
    assert kind_of("state_restarting") == "restart"
    assert kind_of("state_quarantined") == "quarantine"
    assert kind_of("heal_result") == "healer"
    assert kind_of("agent_invoked") == "agent"
    assert kind_of("something_new") == "other"


def test_markdown_is_a_ticket_section_with_a_table() -> None:
    """The Markdown has a heading, the window, counts and one escaped row per entry."""
    entries = timeline("api", "throat", [ev(0, "probe_failed", message="a | b")])
    text = markdown("api", entries, generated=NOW)
    assert text.startswith("## Incident timeline: api\n")
    assert "- entries: probe 1" in text
    assert "| 1970-01-01T00:00:00.000Z | probe | probe_failed | a \\| b |" in text


def test_alerts_come_from_the_escalations_file_and_include_the_layers() -> None:
    """With operator_escalations.jsonl the journal's escalation lines are not repeated, and
    an alert for the component's whole layer belongs to its incident."""
    events = [
        ev(5, "escalation_raised", message="journal mirror"),
        ev(6, "operator_alert", level="alert", message="quarantined"),
    ]
    alerts = [
        {"ts": 5, "component": "api", "reason": "recurring", "signature": "x", "targets": {}},
        {"ts": 7, "component": "layer:throat", "reason": "layer_down", "signature": "y"},
        {"ts": 8, "component": "layer:root", "reason": "layer_down", "signature": "z"},
    ]
    entries = timeline("api", "throat", events, (), alerts)
    assert [(e.unix, e.event) for e in entries] == [
        (5, "alert_recurring"),
        (6, "operator_alert"),
        (7, "alert_layer_down"),
    ]
    only_journal = timeline("api", "throat", events)
    assert [e.event for e in only_journal] == ["escalation_raised", "operator_alert"]

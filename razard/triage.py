"""Triage: the journal queries behind ``razarctl logs`` and the incident timeline.

Every record razard writes carries ``RAZAR_*`` journal fields (see
`razard.journal`), so a filter in ``razarctl logs`` is a journalctl match and
the same query works with ``journalctl`` itself (``razarctl logs --print-command``
prints it). journalctl ANDs matches on different fields, ORs matches on the
same field, and ORs whole groups separated by ``+``.

``razarctl incident`` merges, for one component, razard's events (from the
journal, or from ``razar.log`` where the journal has none), the patch
lifecycle from ``patch_history.jsonl`` and the alerts from
``operator_escalations.jsonl`` into one timeline. Each source is the record of
truth for its kind: the journal's own mirror lines of patches are dropped so
nothing appears twice.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from razard.errors import RazarError
from razard.escalation import trust
from razard.escalation.source import (
    ExportParser,
    SourceError,
    journal_argv,
    journal_time,
    read_journal,
)
from razard.layout import HISTORY_FILE, LOG_FILE
from razard.storage import read_jsonl

OUTPUTS: Final = {"short": "short-iso", "json": "json", "cat": "cat"}
PRIORITIES: Final = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
IDENTIFIER: Final = "razard"
JOURNAL_TIMEOUT: Final = 30.0

#: the timeline's kinds, by the event names razard journals
KINDS: Final[dict[str, tuple[str, ...]]] = {
    "state": (
        "component_failed",
        "component_adopted",
        "component_added",
        "component_removed",
        "component_changed",
        "unit_unavailable",
        "backoff_reset",
        "boot_wave_started",
        "boot_wave_settled",
    ),
    "probe": ("probe_failed", "probe_recovered"),
    "restart": ("state_restarting", "operator_restart"),
    "healer": ("heal_started", "heal_result", "chakra_escalated"),
    "chakra": ("chakra_down", "chakra_up", "chakra_error"),
    "agent": (
        "agent_invoked",
        "agent_skipped",
        "agent_waiting",
        "long_task_round",
        "repair_healed",
        "repair_failed",
        "escalation_result",
        "escalation_error",
        "escalation_interrupted",
        "escalation_warning",
    ),
    "patch": ("patch_applied", "patch_kept", "patch_reverted", "patch_rolled_back"),
    "quarantine": ("state_quarantined", "quarantine_released", "quarantine_stop_failed"),
    "alert": ("operator_alert", "escalation_raised", "escalation_resolved", "alert_dropped"),
    "operator": ("operator_start", "operator_stop"),
}
_KIND_OF: Final = {event: kind for kind, events in KINDS.items() for event in events}
#: journal lines that only mirror a patch_history.jsonl record
_PATCH_MIRRORS: Final = frozenset(KINDS["patch"])
#: journal lines that only mirror an operator_escalations.jsonl record
_ALERT_MIRRORS: Final = frozenset({"escalation_raised", "escalation_resolved"})


class TriageError(RazarError):
    """A triage query could not be run or its input is not usable."""


# --- journal queries --------------------------------------------------------------


@dataclass(frozen=True)
class LogQuery:
    """A ``razarctl logs`` query; `argv` is the journalctl command line it runs."""

    component: str | None = None
    unit: str | None = None  # the component's unit: its own output is shown too
    layers: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    priority: str | None = None
    since: str | None = None  # any form `parse_time` reads
    until: str | None = None
    follow: bool = False
    output: str = "short"
    lines: int | None = None
    now: datetime | None = None  # what relative times count from; None: when argv() runs

    def argv(self) -> list[str]:
        """journalctl's options first, then the matches.

        - a component: razard's records about it (``RAZAR_COMPONENT``), OR its
          unit's output (system or user manager) when no layer or event filter
          is given (the unit's own lines carry neither);
        - ``--layer``/``--event``: ANDed with the component, ORed among themselves;
        - nothing: every record razard wrote (``SYSLOG_IDENTIFIER=razard``).

        razard's records count only when root sent them (``_UID``, set by journald):
        anyone can send ``RAZAR_*`` fields and razard's identifier.
        """
        if self.output not in OUTPUTS:
            raise ValueError(
                f"unknown output {self.output!r}: expected one of {', '.join(OUTPUTS)}"
            )
        if self.priority is not None and self.priority not in PRIORITIES:
            raise ValueError(
                f"unknown priority {self.priority!r}: expected one of {', '.join(PRIORITIES)}"
            )
        argv = ["journalctl", "--no-pager", "-o", OUTPUTS[self.output]]
        # as @<unix time>: journalctl would read ISO text and "today" as local time
        if self.since:
            argv += ["--since", journal_time(parse_time(self.since, self.now))]
        if self.until:
            argv += ["--until", journal_time(parse_time(self.until, self.now))]
        if self.priority:
            argv += ["-p", self.priority]
        if self.lines is not None:
            argv += ["-n", str(self.lines)]
        if self.follow:
            argv.append("-f")
        group = [f"RAZAR_LAYER={layer}" for layer in self.layers]
        group += [f"RAZAR_EVENT={event}" for event in self.events]
        own = trust.uid_matches()
        if self.component:
            argv.append(f"RAZAR_COMPONENT={self.component}")
            argv += group + own
            if self.unit and not group:
                argv += unit_matches(self.unit)
        elif group:
            argv += group + own
        else:
            argv += [f"SYSLOG_IDENTIFIER={IDENTIFIER}", *own]
        return argv


def unit_matches(unit: str) -> list[str]:
    """Match groups for a unit's own output, under the system or a user manager."""
    out = ["+", f"_SYSTEMD_UNIT={unit}", "+", f"_SYSTEMD_USER_UNIT={unit}"]
    out += trust.uid_matches("_SYSTEMD_OWNER_UID")  # not a unit of some user's own manager
    if unit.startswith("razar-") and unit.endswith(".service"):
        # units razard writes log under this identifier, even where journald
        # cannot tell which unit a stream belongs to (containers, sandboxes); the
        # name anyone can choose, so only from root
        out += ["+", f"SYSLOG_IDENTIFIER={unit.removesuffix('.service')}", *trust.uid_matches()]
    return out


# --- times ------------------------------------------------------------------------

_AGO: Final = re.compile(
    r"^\s*-?\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hour|d|day|w|week)s?(\s+ago)?\s*$"
)
_UNITS: Final = {
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}


def parse_time(text: str, now: datetime | None = None) -> float:
    """A unix time from what an operator types: ``2h ago``, ``-30m``, ``today``,
    ``yesterday``, ``now``, ``@1700000000``, or an ISO date/time (UTC unless it says).

    The one time grammar of every ``--since``/``--until`` (``razarctl logs``,
    ``incident``, ``escalations``), and it is UTC throughout: an ISO time without
    an offset is UTC, ``today``/``yesterday`` start at UTC midnight, whatever the
    machine's time zone (the times razarctl prints are UTC too).

    Raises:
        TriageError: the text is none of these (the message quotes it).
    """
    now = now or datetime.now(UTC)
    t = text.strip()
    if t.startswith("@"):
        try:
            return float(t[1:])
        except ValueError:
            pass
    elif t == "now":
        return now.timestamp()
    elif t in ("today", "yesterday"):
        day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return (day - timedelta(days=1 if t == "yesterday" else 0)).timestamp()
    elif m := _AGO.match(t):
        return now.timestamp() - float(m.group(1)) * _UNITS[m.group(2)]
    else:
        try:
            when = datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    raise TriageError(
        f"cannot read the time {text!r}: use e.g. '2h ago', '-30m', 'today', "
        "'2026-11-29 08:00' (UTC) or '@<unix time>'"
    )


# --- the incident timeline ----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One line of an incident timeline."""

    unix: float
    kind: str
    event: str
    message: str
    source: str  # journal | razar.log | patch_history | escalations
    priority: str = "info"
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> str:
        ts = datetime.fromtimestamp(self.unix, UTC).isoformat(timespec="milliseconds")
        return ts.replace("+00:00", "Z")

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "unix": self.unix,
            "kind": self.kind,
            "event": self.event,
            "priority": self.priority,
            "message": self.message,
            "source": self.source,
            "fields": dict(self.fields),
        }


def kind_of(event: str) -> str:
    """The timeline kind of a journal event name (``other`` when razard has no kind for it)."""
    if event in _KIND_OF:
        return _KIND_OF[event]
    for prefix, kind in (("probe_", "probe"), ("patch_", "patch"), ("heal_", "healer")):
        if event.startswith(prefix):
            return kind
    if event.startswith("quarantine"):
        return "quarantine"
    if event.startswith("state_"):  # state_<new state>, one per state change
        return "state"
    return "other"


def journal_entries(
    component: str,
    layer: str | None,
    since: float | None,
    until: float | None,
    journal_args: Sequence[str] = (),
) -> list[dict[str, Any]] | None:
    """razard's records about ``component`` (and its layer's chakra events) as razar.log-
    shaped dicts; None when journalctl cannot be run or the journal holds none."""
    options = list(journal_args)
    if since is not None:
        options.append(f"--since={journal_time(since)}")
    if until is not None:
        options.append(f"--until={journal_time(until)}")
    matches = [f"RAZAR_COMPONENT={component}"]
    if layer:
        matches += ["+", f"RAZAR_LAYER={layer}"]
    try:
        read = asyncio.run(_read_bounded(journal_argv(options, matches)))
    except (SourceError, TimeoutError):
        return None
    # razard's records only: RAZAR_* from anyone but root is a forgery
    out = [_from_journal(e) for e in read.entries if "RAZAR_EVENT" in e and trust.from_razar(e)]
    return out or None


async def _read_bounded(argv: Sequence[str]) -> ExportParser:
    async with asyncio.timeout(JOURNAL_TIMEOUT):
        return await read_journal(argv)


def _from_journal(raw: Mapping[str, Any]) -> dict[str, Any]:
    try:
        unix = int(raw.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        unix = 0.0
    try:
        level = PRIORITIES[int(raw.get("PRIORITY", 6))]
    except (TypeError, ValueError, IndexError):
        level = "info"
    rec: dict[str, Any] = {
        "unix": unix,
        "level": level,
        "event": raw.get("RAZAR_EVENT"),
        "component": raw.get("RAZAR_COMPONENT"),
        "layer": raw.get("RAZAR_LAYER"),
        "message": raw.get("MESSAGE") if isinstance(raw.get("MESSAGE"), str) else "",
    }
    for key, value in raw.items():
        if key.startswith("RAZAR_") and key not in (
            "RAZAR_EVENT",
            "RAZAR_COMPONENT",
            "RAZAR_LAYER",
        ):
            rec[key.removeprefix("RAZAR_").lower()] = value
    return rec


def _in_window(unix: float, since: float | None, until: float | None) -> bool:
    return (since is None or unix >= since) and (until is None or unix <= until)


def _unix(rec: Mapping[str, Any]) -> float | None:
    value = rec.get("unix", rec.get("ts"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def timeline(
    component: str,
    layer: str | None,
    events: Iterable[Mapping[str, Any]],
    patches: Iterable[Mapping[str, Any]] = (),
    escalations: Iterable[Mapping[str, Any]] = (),
    *,
    since: float | None = None,
    until: float | None = None,
    events_source: str = "journal",
) -> list[Entry]:
    """One component's incident, oldest first.

    ``events`` are razar.log-shaped records (from the journal or razar.log): the
    component's own, plus its layer's chakra events (those carry no component).
    ``patches`` are patch_history.jsonl records and ``escalations`` the merged
    operator_escalations.jsonl records; both are filtered to ``component`` (an
    escalation for its whole layer, ``layer:<layer>``, counts too).
    """
    have_patches = have_alerts = False
    out: list[Entry] = []
    alert_owners = {component, f"layer:{layer}"} if layer else {component}
    escalations = [
        rec
        for rec in escalations
        if rec.get("component") in alert_owners
        and (unix := _unix(rec)) is not None
        and _in_window(unix, since, until)
    ]
    have_alerts = bool(escalations)
    for rec in patches:
        unix = _unix(rec)
        if rec.get("component") != component or unix is None:
            continue
        if not _in_window(unix, since, until):
            continue
        have_patches = True
        status = str(rec.get("status", "?"))
        files = rec.get("files")
        names = ", ".join(str(f) for f in files) if isinstance(files, list) else ""
        by = f" by {rec['by']}" if rec.get("by") else ""
        agent = f" from {rec['agent']}" if rec.get("agent") else ""
        reason = f": {rec['reason']}" if rec.get("reason") else ""
        out.append(
            Entry(
                unix,
                "patch",
                f"patch_{status}",
                f"patch {rec.get('patch_id', '?')}{agent} {status}{by}"
                + (f" ({names})" if names else "")
                + reason,
                "patch_history",
                "notice" if status in ("reverted", "aborted") else "info",
                {k: v for k, v in rec.items() if k not in ("unix", "time", "ts")},
            )
        )
    for rec in events:
        unix = _unix(rec)
        event = rec.get("event")
        if unix is None or not isinstance(event, str) or not _in_window(unix, since, until):
            continue
        owner = rec.get("component")
        if owner != component and not (owner is None and layer and rec.get("layer") == layer):
            continue
        if (have_patches and event in _PATCH_MIRRORS) or (have_alerts and event in _ALERT_MIRRORS):
            continue
        extra = {
            k: v
            for k, v in rec.items()
            if k not in ("unix", "ts", "level", "event", "component", "layer", "message")
        }
        out.append(
            Entry(
                unix,
                kind_of(event),
                event,
                str(rec.get("message", "")),
                events_source,
                str(rec.get("level", "info")),
                extra,
            )
        )
    for rec in escalations:
        unix = _unix(rec)
        assert unix is not None  # filtered above
        raw = rec.get("targets")
        targets: dict[str, Any] = raw if isinstance(raw, dict) else {}
        delivery = ", ".join(f"{k} {v}" for k, v in sorted(targets.items())) or "no targets"
        reason = str(rec.get("reason", "alert"))
        count = rec.get("count")
        seen = f" x{count}" if isinstance(count, int) and count > 1 else ""
        out.append(
            Entry(
                unix,
                "alert",
                f"alert_{reason}",
                f"alert ({reason}{seen}): {rec.get('sample') or rec.get('signature', '')}"
                f" [{delivery}]",
                "escalations",
                "notice" if reason == "resolved" else "warning",
                {
                    k: rec.get(k)
                    for k in ("id", "signature", "count", "dedup_key", "targets", "delivered")
                },
            )
        )
    out.sort(key=lambda e: e.unix)
    return out


def summary(entries: Sequence[Entry]) -> dict[str, Any]:
    """Counts per kind, first and last entry, and whether the component ended healthy."""
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.kind] = counts.get(e.kind, 0) + 1
    last_state = next((e.event for e in reversed(entries) if e.event.startswith("state_")), None)
    return {
        "entries": len(entries),
        "first": entries[0].time if entries else None,
        "last": entries[-1].time if entries else None,
        "counts": counts,
        "last_state_event": last_state,
    }


def markdown(component: str, entries: Sequence[Entry], *, generated: datetime | None = None) -> str:
    """The timeline as a Markdown section to paste into an incident ticket."""
    info = summary(entries)
    generated = generated or datetime.now(UTC)
    lines = [
        f"## Incident timeline: {component}",
        "",
        f"- generated: {generated.isoformat(timespec='seconds').replace('+00:00', 'Z')}",
        f"- window: {info['first'] or '-'} .. {info['last'] or '-'}",
        "- entries: "
        + (", ".join(f"{k} {v}" for k, v in sorted(info["counts"].items())) or "none"),
        "",
        "| time (UTC) | kind | event | detail |",
        "| --- | --- | --- | --- |",
    ]
    for e in entries:
        detail = e.message.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {e.time} | {e.kind} | {e.event} | {detail} |")
    return "\n".join(lines) + "\n"


def load_incident(
    component: str,
    layer: str | None,
    state_dir: Path,
    log_file: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    journal_args: Sequence[str] = (),
    use_journal: bool = True,
) -> list[Entry]:
    """Gather the sources for ``component`` and build its timeline."""
    from razard.escalation.history import read_escalations  # the notifier's own reader

    events = journal_entries(component, layer, since, until, journal_args) if use_journal else None
    source = "journal"
    if events is None:
        events, source = read_jsonl(log_file), LOG_FILE
    patches = read_jsonl(state_dir / HISTORY_FILE)
    escalations = read_escalations(state_dir, since=since)
    return timeline(
        component,
        layer,
        events,
        patches,
        escalations,
        since=since,
        until=until,
        events_source=source,
    )

"""Where a recovery's milliseconds go: one timeline per SIGKILL trial.

Each recovery trial is stamped by the harness (the SIGKILL, on CLOCK_MONOTONIC) and
by the component (its new ``ready``, on the same clock). Between the two, this module
places what the supervisors wrote down, each converted to the same clock:

- the user manager's journal entries for the unit (``Main process exited``,
  ``Scheduled restart job`` for systemd's own restart, ``Started``), timed by the
  kernel when the manager sent them (``_SOURCE_REALTIME_TIMESTAMP``, which journald
  takes from the datagram, so a busy journald does not shift them);
- razard's events from its JSON-lines log (``razar.log``, the same events it sends
  to the journal, stamped with ``time.time()`` at the moment razard emits them):
  ``component_failed``, ``state_restarting`` and ``state_starting``, which a restart
  without backoff writes down together right after its ``StartUnit`` is on the wire
  (with ``ResetFailedUnit`` ahead of it for a unit razard did not write): the first of
  them marks the call sent; and ``state_healthy`` (razard's healthy rule passed).
  razard's decision itself is not written down apart from the call: between the two
  there is only the save of the restart counted.

Where the journal has no entry (journald drops what a busy sender sends when its
queue is full), the unit's own transition times fill in: ``ActiveExit`` (death seen),
``InactiveExit`` (start job ran) and ``ActiveEnter`` (exec'd), which the manager keeps
on CLOCK_MONOTONIC and the harness reads with ``systemctl show`` after each trial.

Wall-clock stamps are moved onto the monotonic clock with the offset between the
two that the harness reads; both clocks belong to the one kernel, so the error is
that offset's read (microseconds) and NTP slewing during the run (nothing here).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.stats import summary

#: The marks of a recovery, in the order they happen; each is ms after the SIGKILL.
MARKS = (
    ("exited", "systemd sees the main process die (SIGCHLD)"),
    ("decided", "systemd's restart scheduled (razard writes its decision after the call)"),
    ("start_sent", "razard has sent StartUnit (its component_failed, written right after)"),
    ("starting", "systemd runs the start job (its Starting)"),
    ("started", "the unit's new process is exec'd (systemd's Started)"),
    ("ready", "the component's ready note (its own clock)"),
    ("healthy", "razard counts it healthy (up 0.1 s, its startsecs)"),
)

#: Steps between consecutive marks that a system has, for the medians table.
STEPS = (
    ("kill", "exited"),
    ("exited", "decided"),
    ("exited", "start_sent"),
    ("start_sent", "starting"),
    ("decided", "starting"),
    ("starting", "started"),
    ("started", "ready"),
    ("kill", "ready"),
    ("ready", "healthy"),
)


@dataclass(frozen=True)
class Trial:
    """One SIGKILL and the ready that answered it (both on CLOCK_MONOTONIC)."""

    system: str
    name: str
    unit: str
    old_pid: int
    new_pid: int
    kill: float
    ready: float
    #: the unit's transition times (monotonic s) read from its manager after the trial
    unit_times: dict[str, float] = field(default_factory=dict)


def wall_offset() -> float:
    """``time.time() - time.monotonic()``: the read with the tightest bracket of five."""
    best = (math.inf, 0.0)
    for _ in range(5):
        a = time.monotonic()
        w = time.time()
        b = time.monotonic()
        best = min(best, (b - a, w - (a + b) / 2))
    return best[1]


def manager_entries(pid: int, since_wall: float) -> list[tuple[float, str, str]]:
    """(wall time, unit, message) of every journal entry the manager ``pid`` logged
    since ``since_wall``; [] when there is no journal to read."""
    argv = [
        "journalctl",
        "--no-pager",
        "-q",
        "-o",
        "json",
        f"--since=@{since_wall - 1:.0f}",
        f"_PID={pid}",
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    entries = []
    for line in out.splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        msg, unit = e.get("MESSAGE"), e.get("USER_UNIT") or e.get("UNIT")
        stamp = e.get("_SOURCE_REALTIME_TIMESTAMP") or e.get("__REALTIME_TIMESTAMP")
        if not isinstance(msg, str) or not isinstance(unit, str) or not stamp:
            continue
        entries.append((int(stamp) / 1e6, unit, msg))
    return entries


def razard_events(log: Path, since_wall: float) -> list[tuple[float, str, str]]:
    """(wall time, component, event) from razard's ``razar.log`` since ``since_wall``."""
    out = []
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        t, comp, ev = r.get("unix"), r.get("component"), r.get("event")
        if isinstance(t, float) and isinstance(comp, str) and isinstance(ev, str):
            if t >= since_wall - 1:
                out.append((t, comp, ev))
    return out


_MANAGER_MARKS = (
    ("exited", "Main process exited"),
    ("decided", "Scheduled restart job"),
    ("starting", "Starting "),
    ("started", "Started "),
)
#: Marks from the unit's properties (``systemctl show``): when it left "active" (the
#: manager saw the death; a ResetFailedUnit clears it, which razard sends only for units
#: it did not write), left "inactive"/"failed" (its start job ran) and
#: entered "active" (exec'd).
_UNIT_MARKS = (
    ("exited", "ActiveExitTimestampMonotonic"),
    ("starting", "InactiveExitTimestampMonotonic"),
    ("started", "ActiveEnterTimestampMonotonic"),
)
#: razard's marks: each the first of its events after the kill
_RAZARD_MARKS = (
    ("start_sent", ("component_failed", "state_restarting", "state_starting")),
    ("healthy", ("state_healthy",)),
)


def build(
    trials: Iterable[Trial],
    offset: float,
    manager: list[tuple[float, str, str]],
    razard: list[tuple[float, str, str]] | None = None,
) -> list[dict[str, Any]]:
    """One timeline per trial: each mark in ms after the SIGKILL (None: not seen).

    A mark is the first matching entry after the kill and before the next kill of the
    same component; ``healthy`` may come after the ready (razard's startsecs)."""
    trials = sorted(trials, key=lambda t: t.kill)
    out = []
    for i, t in enumerate(trials):
        nxt = next((u.kill for u in trials[i + 1 :] if u.name == t.name), math.inf)
        lo, hi = t.kill + offset, nxt + offset
        marks: dict[str, float | None] = {m: None for m, _ in MARKS}
        marks["ready"] = 1000 * (t.ready - t.kill)
        for key, text in _MANAGER_MARKS:
            for w, unit, msg in manager:
                if unit == t.unit and lo <= w < hi and text in msg:
                    marks[key] = 1000 * (w - lo)
                    break
        # the manager's own clock for what it keeps per unit, where the journal had nothing
        # (journald drops a busy sender's entries): these need no journal at all
        for key, prop in _UNIT_MARKS:
            at = t.unit_times.get(prop)
            if marks[key] is None and at is not None and t.kill <= at <= t.ready + 1.0:
                marks[key] = 1000 * (at - t.kill)
        for key, evs in _RAZARD_MARKS:
            for w, comp, e in razard or ():
                if comp == t.name and lo <= w < hi and e in evs:
                    marks[key] = 1000 * (w - lo)
                    break
        out.append({**asdict(t), "marks": marks})
    return out


def medians(timelines: list[dict[str, Any]]) -> dict[str, Any]:
    """Per mark and per step (ms): the summary over trials where both ends were seen."""
    res: dict[str, Any] = {"marks": {}, "steps": {}}
    for m, _ in MARKS:
        vals = [tl["marks"][m] for tl in timelines if tl["marks"][m] is not None]
        if vals:
            res["marks"][m] = summary(vals)
    for a, b in STEPS:
        vals = []
        for tl in timelines:
            ma = 0.0 if a == "kill" else tl["marks"][a]
            mb = tl["marks"][b]
            if ma is not None and mb is not None:
                vals.append(mb - ma)
        if vals:
            res["steps"][f"{a}->{b}"] = summary(vals)
    return res


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def markdown(per_system: dict[str, dict[str, Any]], command: str) -> str:
    """The per-trial timelines and their medians, for each system, as markdown."""
    lines = [
        f"Recovery timelines (`{command}`): ms after the SIGKILL; systemd marks from the "
        "user manager's journal entries (kernel send time), razard's from its razar.log.",
        "",
    ]
    for m, what in MARKS:
        lines.append(f"- `{m}`: {what}")
    for system, block in per_system.items():
        tls, med = block["trials"], block["medians"]
        lines += [
            "",
            f"### {system}: {len(tls)} trials",
            "",
            "| trial | component | " + " | ".join(m for m, _ in MARKS) + " |",
            "|---|---|" + "---|" * len(MARKS),
        ]
        for i, tl in enumerate(tls, 1):
            cells = " | ".join(_ms(tl["marks"][m]) for m, _ in MARKS)
            lines.append(f"| {i} | {tl['name']} | {cells} |")
        lines += ["", "| step | median ms | p90 | min | max | n |", "|---|---|---|---|---|---|"]
        for step, s in med["steps"].items():
            lines.append(
                f"| {step} | **{s['median']:.1f}** | {s['p90']:.1f} | {s['min']:.1f} "
                f"| {s['max']:.1f} | {s['n']} |"
            )
    return "\n".join(lines) + "\n"


def boot_waves(log: Path) -> dict[str, Any]:
    """Where razard's last boot spent its time, wave by wave, from its ``razar.log``: in ms
    after ``razard_starting`` (the daemon's first event, after its imports), each wave's
    start, its first and last ``state_starting`` (the calls queued), its first and last
    ``state_healthy`` (job done and up for the startsecs) and its settling; the waves
    after the last one the harness waited for may be missing (it stops razard once every
    component is ready)."""
    events: list[tuple[str, float]] = []
    try:
        for line in log.read_text().splitlines():
            with_time = json.loads(line)
            events.append((str(with_time.get("event")), float(with_time["unix"])))
    except (OSError, ValueError, KeyError):
        return {}
    start = next((t for e, t in events if e == "razard_starting"), None)
    if start is None:
        return {}
    waves: list[dict[str, Any]] = []
    marks: dict[str, list[float]] = {}
    for event, t in events:
        if event == "boot_wave_started":
            marks = {"started": [t], "starting": [], "healthy": []}
        elif event == "state_starting" and marks:
            marks["starting"].append(t)
        elif event == "state_healthy" and marks:
            marks["healthy"].append(t)
        elif event == "boot_wave_settled" and marks:
            row = {"wave": len(waves) + 1, "units": len(marks["starting"])}
            for key in ("started", "starting", "healthy"):
                if marks[key]:
                    row[f"{key}_first"] = round((min(marks[key]) - start) * 1000)
                    row[f"{key}_last"] = round((max(marks[key]) - start) * 1000)
            row["settled"] = round((t - start) * 1000)
            waves.append(row)
            marks = {}
    ready = next((t for e, t in events if e == "razard_ready"), None)
    return {
        "waves": waves,
        "ready": None if ready is None else round((ready - start) * 1000),
    }


def boot_markdown(waves: dict[str, Any]) -> str:
    """`boot_waves` as a table."""
    lines = [
        "| wave | units | started | calls queued (first–last) | healthy (first–last) "
        "| settled | wave took |",
        "|---|---|---|---|---|---|---|",
    ]
    for w in waves.get("waves", []):
        lines.append(
            f"| {w['wave']} | {w['units']} | {w.get('started_first', '–')} "
            f"| {w.get('starting_first', '–')}–{w.get('starting_last', '–')} "
            f"| {w.get('healthy_first', '–')}–{w.get('healthy_last', '–')} "
            f"| {w['settled']} | {w['settled'] - w.get('started_first', w['settled'])} |"
        )
    if waves.get("ready") is not None:
        lines.append(f"\nREADY (first wave settled, every unit watched) at {waves['ready']} ms.")
    return "\n".join(lines)

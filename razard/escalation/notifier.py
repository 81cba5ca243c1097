"""The escalation notifier: journal and repair logs in, deduplicated alerts out.

One pass (`EscalationNotifier.run_once`):

1. read new journal entries (`JournalSource`), razard's events journald refused
   (`razard.escalation.spool`, merged with the journal's in time order) and new
   records of ``razar_ai_invocations.json`` / ``razar_ai_patches.json`` (`JsonlTail`);
2. turn each into an observation (`classify`) and decide (`book`, `grouping`):
   raise, repeat, suppress, resolve, or hold back while root is down;
3. queue every delivery in the outbox and save the alert book, then commit
   the read positions: a crash before this point re-reads the batch, and the
   saved book recognises what was already raised;
4. try every due outbox item (retries with exponential backoff), append the
   outcome to ``operator_escalations.jsonl`` and update the metrics.

Inside razard it runs in the root task group (`run`); the ``--once`` timer
and ``--follow`` service run it as a separate process. Only one runs at a
time per state directory: each holds ``escalation/notifier.lock`` (flock).
Nothing here blocks the event loop: journalctl is a subprocess, HTTP goes
through ``httpx.AsyncClient`` with a timeout, file work runs in a thread.

One module (~620 lines): nearly all of it is `EscalationNotifier`, whose pass (read,
decide, queue, deliver, commit) is one sequence over one alert book; the parts it
composes are already their own modules (source, book, grouping, outbox, targets).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from razard import storage
from razard.config import ComponentConfig
from razard.errors import RazarError, StateError
from razard.escalation import classify, spool, trust
from razard.escalation.book import (
    RECURRING,
    AlertBook,
    Firing,
    decide,
    due_repeats,
    inhibited,
    stale,
)
from razard.escalation.classify import Observation
from razard.escalation.config import EscalationConfig
from razard.escalation.grouping import Grouper
from razard.escalation.history import all_delivered, append_escalation, iso
from razard.escalation.metrics import NotifierMetrics
from razard.escalation.outbox import Outbox, backoff
from razard.escalation.source import JournalSource
from razard.escalation.tail import JsonlTail
from razard.escalation.targets import DeliveryError, Status, Target
from razard.journal import EventLog, Priority, redact
from razard.layout import (
    ESCALATION_DIR,
    FIRING_FILE,
    INVOCATIONS_FILE,
    JOURNAL_CURSOR,
    JOURNAL_SINCE,
    NOTIFIER_LOCK,
    OUTBOX_DIR,
    PATCHES_FILE,
    UNJOURNALED_FILE,
    UNJOURNALED_POS,
)
from razard.storage import read_json, write_json_atomic

if TYPE_CHECKING:  # loaded when the loop makes its client, not by whoever imports this
    import httpx

log = logging.getLogger(__name__)

BATCH: Final = 10_000  # journal entries per read; a full batch is followed by another at once
SAMPLE_CHARS: Final = 500
LOGS: Final = ((INVOCATIONS_FILE, "repair_attempt"), (PATCHES_FILE, "patch"))
REASON_TEXT: Final = {
    "recurring": "recurring failure",
    "quarantine": "quarantined (razard gave up healing it)",
    "warning_threshold": "escalation warning threshold reached",
    "layer_down": "layer down beyond its healer",
    "fleet_breaker": "fleet breaker tripped (no disruptive action on any node until reset)",
}


class NotifierBusy(RazarError):
    """Another notifier (razard's own, or a --follow service) holds the lock."""


@dataclass
class PassResult:
    """What one pass did (for the CLI and tests)."""

    entries: int = 0
    records: int = 0
    raised: list[str] = field(default_factory=list)  # escalation ids
    resolved: list[str] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    outbox: int = 0

    @property
    def full(self) -> bool:
        return self.entries >= BATCH


@dataclass
class _Send:
    """A delivery decided in this pass: its record, not yet written."""

    record: dict[str, Any]
    status: Status
    targets: list[str]


class OwnEntries:
    """Which journal entries the notifier reads: razard's events (its SYSLOG_IDENTIFIER,
    sent by root: journald's ``_UID``) and every component's output (by journald's
    trusted unit and cgroup fields, never by an identifier a sender chooses; see
    `razard.escalation.trust`). A filter in Python, not journalctl matches: one match
    per component and field (150 for 50 components) made journalctl ten times slower
    than reading all."""

    def __init__(
        self, components: Iterable[ComponentConfig], identifier: str = classify.RAZARD_IDENTIFIER
    ) -> None:
        comps = list(components)
        self.identifiers = frozenset([identifier])
        self.units = frozenset(c.unit for c in comps)

    def __call__(self, entry: Mapping[str, str]) -> bool:
        if entry.get("SYSLOG_IDENTIFIER") in self.identifiers and trust.from_razar(entry):
            return True
        return trust.unit_of(entry) in self.units

    def matches(self) -> list[str]:
        """Nearly the same selection as journalctl matches (``journalctl -o json <these>``;
        the cgroup fallback of `trust.unit_of` cannot be written as a match)."""
        uids = sorted(trust.UIDS)
        out = [f"SYSLOG_IDENTIFIER={i}" for i in sorted(self.identifiers)]
        out += [f"_UID={u}" for u in uids]
        if self.units:
            out += ["+", *(f"_SYSTEMD_UNIT={u}" for u in sorted(self.units))]
            out += ["+", *(f"_SYSTEMD_USER_UNIT={u}" for u in sorted(self.units))]
            out += [f"_SYSTEMD_OWNER_UID={u}" for u in uids]
        return out


class EscalationNotifier:
    """Reads, decides and delivers; see the module docstring."""

    def __init__(
        self,
        cfg: EscalationConfig,
        state_dir: Path,
        components: Callable[[], Sequence[ComponentConfig]],
        events: EventLog,
        metrics: NotifierMetrics | None = None,
        *,
        since: float | None = None,
        clock: Callable[[], float] = time.time,
        journalctl: str = "journalctl",
        identifier: str = classify.RAZARD_IDENTIFIER,
    ) -> None:
        """``components`` returns the current config's components (it follows reloads);
        ``since``: where the journal is first read from when no cursor is saved yet
        (default: one window back from now); ``identifier``: razard's SYSLOG_IDENTIFIER."""
        self.cfg = cfg
        self.state_dir = state_dir
        self.dir = state_dir / ESCALATION_DIR
        self.components = components
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self.host = cfg.hostname
        self.identifier = identifier
        self.targets: dict[str, Target] = {
            t.kind: Target(t, cfg.repeat_interval) for t in cfg.targets
        }
        self._since = since if since is not None else clock() - cfg.window
        self._journalctl = journalctl
        self.grouper = Grouper(cfg.threshold, cfg.window)
        self._lock_fd: int | None = None
        self._said: set[str] = set()
        self._spool_warned = False
        self._load()

    def _load(self) -> None:
        """(Re)read the saved positions, alert book and outbox: at start, and each time the
        lock is taken anew, since another notifier may have moved them on meanwhile."""
        self.journal = JournalSource(
            self.dir / JOURNAL_CURSOR,
            journal_args=self.cfg.journal_args,
            journalctl=self._journalctl,
            fields=classify.JOURNAL_FIELDS,
        )
        self.journal.since = self._first_read_from(self.journal.cursor, self._since)
        self.tails = [
            (JsonlTail(self.state_dir / name, self.dir / f"{name}.pos"), source)
            for name, source in LOGS
        ]
        self.spool = JsonlTail(self.dir / UNJOURNALED_FILE, self.dir / UNJOURNALED_POS)
        self.book = AlertBook(self.dir / FIRING_FILE)
        self.outbox = Outbox(self.dir / OUTBOX_DIR, self.cfg.outbox_max)

    def _first_read_from(self, cursor: str | None, start: float) -> float:
        """Until a cursor is saved, the journal is read from the first start's ``since``,
        kept on disk: a razard killed before its first commit must not skip what happened
        before its next start (a quarantine, say)."""
        if cursor is not None:
            return start
        path = self.dir / JOURNAL_SINCE
        try:
            saved = read_json(path)
        except StateError:
            saved = None
        if isinstance(saved, int | float) and not isinstance(saved, bool):
            return float(saved)
        with contextlib.suppress(StateError, OSError):
            write_json_atomic(path, start)
        return start

    # ------------------------------------------------------------ the lock

    def lock(self) -> None:
        """Hold ``escalation/notifier.lock`` until `unlock` (or the process ends).

        Raises:
            NotifierBusy: another notifier holds it.
            StateError-like RazarError: the state directory cannot be used.
        """
        if self._lock_fd is not None:
            return
        try:
            storage.make_dirs(self.dir)
            fd = storage.take_lock(self.dir / NOTIFIER_LOCK, wait=0)  # 0600: ours alone
        except BlockingIOError:
            raise NotifierBusy(
                f"{self.dir / NOTIFIER_LOCK}: another escalation notifier (razard's own, or "
                "the razar-notifier service) is active on this state directory"
            ) from None
        except OSError as e:
            raise RazarError(f"{self.dir / NOTIFIER_LOCK}: cannot open: {e.strerror or e}") from e
        self._lock_fd = fd
        try:
            self._load()  # what the previous holder left, not what was there at our start
        except BaseException:
            self.unlock()
            raise

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------ the loop

    async def run(self, client: httpx.AsyncClient | None = None) -> None:
        """Pass after pass until cancelled; errors are journaled, never raised."""
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(self.client())
            try:
                while True:
                    result: PassResult | None = None
                    try:
                        self.lock()
                        result = await self.run_once(client)
                    except NotifierBusy as e:
                        self._say_once("busy", str(e), Priority.WARNING)
                    except RazarError as e:
                        self._say_once(f"error:{e}", f"escalation notifier: {e}", Priority.ERR)
                    except Exception as e:  # a bug here must not take razard down
                        log.exception("escalation notifier pass failed")
                        self._say_once(
                            f"bug:{type(e).__name__}",
                            f"escalation notifier: internal error: {type(e).__name__}: {e}",
                            Priority.ERR,
                        )
                    if result is None or not result.full:
                        await asyncio.sleep(self.cfg.poll_interval)
            finally:
                self.unlock()

    def client(self) -> httpx.AsyncClient:
        """An HTTP client whose timeout bounds every request to a target. It ignores
        HTTP(S)_PROXY and netrc (trust_env=False): a proxy set in the environment would
        receive the targets' bearer tokens."""
        import httpx

        return httpx.AsyncClient(timeout=self.cfg.timeout, follow_redirects=False, trust_env=False)

    async def run_once(self, client: httpx.AsyncClient) -> PassResult:
        """One pass: read, decide, queue, commit, deliver. Call `lock` first.

        Raises:
            SourceError: journalctl failed (nothing was committed).
            StateError: the state directory cannot be written.
        """
        result = PassResult()
        now = self.clock()
        comps = list(self.components())
        units = {c.unit: c.name for c in comps}
        layers = {c.name: c.layer for c in comps}
        entries = await self.journal.read_new(
            BATCH, commit=False, keep=OwnEntries(comps, self.identifier)
        )
        result.entries = self.journal.last_read
        spooled = await asyncio.to_thread(self.spool.read_new, commit=False)
        if spooled:  # razard's events journald refused, in time order with what it took
            result.records += len(spooled)
            entries = sorted([*entries, *spool.entries(spooled)], key=_entry_us)
        observations: list[Observation] = []
        for entry in entries:
            o = classify.from_journal(
                entry,
                units=units,
                layers=layers,
                host=self.host,
                now=now,
                fixed_host=self.cfg.host,
            )
            if o is not None:
                observations.append(o)
        for tail, source in self.tails:
            records = await asyncio.to_thread(tail.read_new, commit=False)
            result.records += len(records)
            for rec in records:
                o = classify.from_record(source, rec, layers=layers, host=self.host, now=now)
                if o is not None:
                    observations.append(o)

        sends: list[_Send] = []
        for o in observations:
            if o.component in layers or o.component.startswith(("layer:", "fleet:")):
                sends.extend(self._observe(o, now))
        sends.extend(self._repeats(now, layers))
        dropped = await asyncio.to_thread(self._queue_and_commit, sends, now)
        outcomes = await self._deliver(client, now, result)
        outcomes.update((key, "failed") for key in dropped)
        await asyncio.to_thread(self._record, sends, outcomes, now, result)
        result.outbox = len(self.outbox)
        if self.metrics is not None:
            self.metrics.outbox_size.set(result.outbox)
            self.metrics.last_run.set(self.clock())
        return result

    # ------------------------------------------------------------ decisions

    def _observe(self, o: Observation, now: float) -> list[_Send]:
        if o.kind == "root_down":
            self.book.set_root_down(True)
            return []
        if o.kind == "recovered":
            if o.component == classify.layer_component(classify.ROOT_LAYER):
                self.book.set_root_down(False)
            return self._resolve(o, now)
        if o.kind == "failure":
            firing = self.book.get((o.host, o.component, o.signature))
            if firing is not None:  # still recurring: counted, and due for its repeat
                # pass time, not the line's: a line read with the one that raised the alert
                # is part of that burst, one read in a later pass means it goes on
                firing.last_seen, firing.count = max(firing.last_seen, now), firing.count + 1
                self.book.dirty = True
            if not self.grouper.observe((o.component, o.signature), o.ts):
                return []
            return self._trigger(RECURRING, o, now, self.cfg.threshold)
        return self._trigger(o.kind, o, now, 1)

    def _trigger(self, reason: str, o: Observation, now: float, count: int) -> list[_Send]:
        sig = o.signature
        existing = self.book.get((o.host, o.component, sig))
        decision = decide(existing, now, self.cfg.repeat_interval)
        if existing is not None:
            if reason != RECURRING:  # a recurring failure's lines were counted one by one
                existing.last_seen = max(existing.last_seen, now)
                existing.count += count
                self.book.dirty = True
            if decision == "suppress":
                return []
            return [self._send(existing, now, repeat=True)]
        sample = redact(o.message)[:SAMPLE_CHARS]
        what = REASON_TEXT.get(reason, reason)
        firing = Firing(
            id=uuid.uuid4().hex,
            host=o.host,
            component=o.component,
            layer=o.layer,
            signature=sig,
            reason=reason,
            summary=f"{o.component} on {o.host}: {what}"
            + (f": {sig}" if reason == RECURRING else ""),
            sample=sample,
            first_ts=now,
            last_sent=now,
            last_seen=now,
            count=count,
        )
        self.book.put(firing)
        if inhibited(firing.layer, self.book.root_down):
            firing.inhibited = True
            rec = self._base(firing, now, firing.id, reason)
            rec["targets"] = {name: "inhibited" for name in self.targets}
            return [_Send(rec, "firing", [])]
        return [self._send(firing, now)]

    def _send(self, firing: Firing, now: float, *, repeat: bool = False) -> _Send:
        """Send ``firing`` to every target: its first sending (an inhibited alert's
        too, under its own id), or a repeat under a new id."""
        rid = uuid.uuid4().hex if repeat else firing.id
        rec = self._base(firing, now, rid, firing.reason)
        if repeat:
            rec["repeat_of"] = firing.id
        elif firing.inhibited:
            rec["event"] = "delivery"  # its raised record said "inhibited"
        firing.inhibited = False
        firing.last_sent = now
        firing.targets = sorted(self.targets)
        self.book.dirty = True
        return _Send(rec, "firing", list(firing.targets))

    def _repeats(self, now: float, configured: Mapping[str, str]) -> list[_Send]:
        sends = []
        for f in list(self.book.alerts.values()):
            removed = f.component not in configured and not f.component.startswith(
                ("layer:", "fleet:")
            )
            if removed or stale(f, now, self.cfg.repeat_interval, self.cfg.window):
                self.book.pop(f.key)  # forgotten without a resolve: nothing will recover it
        for f in due_repeats(
            list(self.book.alerts.values()), now, self.cfg.repeat_interval, self.book.root_down
        ):
            sends.append(self._send(f, now, repeat=not f.inhibited))
        return sends

    def _resolve(self, o: Observation, now: float) -> list[_Send]:
        sends = []
        for f in self.book.of_component(o.host, o.component):
            self.book.pop(f.key)
            rec = self._base(f, now, uuid.uuid4().hex, "resolved")
            rec["resolves"] = f.id
            rec["sample"] = redact(o.message)[:SAMPLE_CHARS]
            rec["summary"] = f"{f.component} on {f.host}: recovered ({REASON_TEXT[f.reason]})"
            # a never-delivered (inhibited) alert needs no resolve at the targets
            sends.append(_Send(rec, "resolved", [] if f.inhibited else list(f.targets)))
        return sends

    def _base(self, f: Firing, now: float, rid: str, reason: str) -> dict[str, Any]:
        return {
            "ts": now,
            "time": iso(now),
            "id": rid,
            "event": "raised",
            "host": f.host,
            "component": f.component,
            "layer": f.layer,
            "reason": reason,
            "signature": f.signature,
            "sample": f.sample,
            "count": f.count,
            "dedup_key": f.dedup_key,
            "summary": f.summary,
            "first_ts": f.first_ts,
            "alert_reason": f.reason,  # the original reason, for a resolve's labels
        }

    # ------------------------------------------------------------ durable steps

    def _queue_and_commit(self, sends: list[_Send], now: float) -> list[tuple[str, str]]:
        """Queue every delivery, save the book, commit the read positions; returns the
        (id, target) of items dropped from a full outbox."""
        dropped_keys = []
        for s in sends:
            alert = {**s.record, "reason": s.record["alert_reason"], "ts": s.record["first_ts"]}
            for name in s.targets:
                dropped = self.outbox.put(
                    {
                        "id": s.record["id"],
                        "target": name,
                        "status": s.status,
                        "alert": alert,
                        "attempts": 0,
                        "next_try": now,
                        "created": now,
                        "last_error": "",
                    }
                )
                for item in dropped:
                    self._dropped(item, "the outbox is full")
                    dropped_keys.append((str(item.get("id")), str(item.get("target"))))
        self.book.save()
        self.journal.commit()
        for tail, _ in self.tails:
            tail.commit()
        self.spool.commit()
        try:
            self.spool.empty_read()
        except StateError as e:  # housekeeping: the deliveries of this pass go ahead
            if not self._spool_warned:
                self._spool_warned = True
                log.warning("escalation spool not emptied: %s", e)
        return dropped_keys

    def _dropped(self, item: dict[str, Any], why: str) -> None:
        target = str(item.get("target"))
        alert = item.get("alert") if isinstance(item.get("alert"), dict) else {}
        assert isinstance(alert, dict)
        if self.metrics is not None:
            self.metrics.alerts.labels(target, "dropped").inc()
        self.events.emit(
            "alert_dropped",
            f"alert {item.get('id')} for {target} dropped: {why} "
            f"({alert.get('summary', '')}; last error: {item.get('last_error') or 'none'})",
            component=str(alert.get("component") or "") or None,
            priority=Priority.WARNING,
            escalation_id=str(item.get("id")),
            target=target,
        )

    async def _deliver(
        self, client: httpx.AsyncClient, now: float, result: PassResult
    ) -> dict[tuple[str, str], str]:
        """Try each due outbox item, oldest first; returns {(id, target): state}."""
        outcomes: dict[tuple[str, str], str] = {}
        down: set[str] = set()  # a target that failed this pass is not tried again now
        items = await asyncio.to_thread(self.outbox.items)
        for name, item in items:
            tname = str(item.get("target"))
            if tname in down or float(item.get("next_try") or 0) > now:
                continue
            rid = str(item.get("id"))
            target = self.targets.get(tname)
            alert = item.get("alert")
            if target is None or not isinstance(alert, dict):
                await asyncio.to_thread(self.outbox.remove, name)
                await asyncio.to_thread(self._dropped, item, f"target {tname} is not configured")
                outcomes[(rid, tname)] = "failed"
                continue
            status: Status = "resolved" if item.get("status") == "resolved" else "firing"
            try:
                await target.send(client, alert, status, self.clock())
            except DeliveryError as e:
                result.failed += 1
                if self.metrics is not None:
                    self.metrics.alerts.labels(tname, "failed").inc()
                item["attempts"] = int(item.get("attempts") or 0) + 1
                item["last_error"] = str(e)
                if e.permanent:
                    await asyncio.to_thread(self.outbox.remove, name)
                    await asyncio.to_thread(self._dropped, item, f"refused: {e}")
                    outcomes[(rid, tname)] = "failed"
                    continue
                down.add(tname)
                item["next_try"] = now + backoff(
                    item["attempts"], self.cfg.retry_base, self.cfg.retry_cap
                )
                await asyncio.to_thread(self.outbox.update, name, item)
                outcomes[(rid, tname)] = "queued"
                self._say_once(f"down:{tname}", f"alerts kept in the outbox: {e}", Priority.WARNING)
                continue
            self._said.discard(f"down:{tname}")
            await asyncio.to_thread(self.outbox.remove, name)
            result.delivered += 1
            outcomes[(rid, tname)] = "delivered"
            if self.metrics is not None:
                self.metrics.alerts.labels(tname, "delivered").inc()
                self.metrics.last_delivery.set(self.clock())
        return outcomes

    def _record(
        self,
        sends: list[_Send],
        outcomes: dict[tuple[str, str], str],
        now: float,
        result: PassResult,
    ) -> None:
        raised_ids = set()
        for s in sends:
            rec = dict(s.record)
            rid = rec["id"]
            raised_ids.add(rid)
            rec.pop("alert_reason", None)
            rec.pop("first_ts", None)
            if s.targets:
                rec["targets"] = {t: outcomes.get((rid, t), "queued") for t in s.targets}
            else:
                rec.setdefault("targets", {})
            rec["delivered"] = all_delivered(rec["targets"])
            append_escalation(self.state_dir, rec)
            (result.resolved if rec["reason"] == "resolved" else result.raised).append(rid)
            self.events.emit(
                "escalation_raised" if rec["reason"] != "resolved" else "escalation_resolved",
                f"{rec['summary']} -> "
                + (", ".join(f"{k}: {v}" for k, v in rec["targets"].items()) or "no targets"),
                component=rec["component"] if not rec["component"].startswith("layer:") else None,
                layer=rec["layer"] or None,
                priority=Priority.NOTICE,
                escalation_id=rid,
                escalation_reason=rec["reason"],
            )
        # retries from earlier passes that now have an outcome
        later: dict[str, dict[str, str]] = {}
        for (rid, tname), state in outcomes.items():
            if rid in raised_ids or state == "queued":
                continue
            later.setdefault(rid, {})[tname] = state
        if not later:
            return
        pending = {str(item.get("id")) for _, item in self.outbox.items()}
        for rid, targets in later.items():
            append_escalation(
                self.state_dir,
                {
                    "ts": now,
                    "time": iso(now),
                    "id": rid,
                    "event": "delivery",
                    "targets": targets,
                    "delivered": rid not in pending and all_delivered(targets),
                },
            )

    def _say_once(self, key: str, message: str, priority: int) -> None:
        """Journal a problem once until it changes (a target down for an hour is one line)."""
        if key in self._said:
            return
        self._said.add(key)
        log.warning("%s", message)
        self.events.emit("escalation_notifier", message, priority=priority)


def _entry_us(entry: Mapping[str, str]) -> int:
    """When an entry was sent, in microseconds, for ordering the journal's entries with the
    spool's (0 if it says nothing): journald's ``_SOURCE_REALTIME_TIMESTAMP`` (the
    datagram's own time) where it has one, since ``__REALTIME_TIMESTAMP`` is when journald
    wrote it, late for a datagram that waited in a full socket queue; a spooled entry's
    time is when razard emitted it."""
    raw = entry.get("_SOURCE_REALTIME_TIMESTAMP") or entry.get("__REALTIME_TIMESTAMP", "")
    return int(raw) if raw.isdigit() else 0

"""Operator escalation: when self-healing does not hold, tell a person once, with context.

Three things in razar are called "notifier"; only the first two are this package:

- `EscalationNotifier` (notifier.py): reads the journal and repair logs, raises and
  delivers operator alerts. razard runs it as a task when ``[escalation]`` is on;
- the same notifier outside razard: ``scripts/escalation_notifier.py`` (cli.py),
  run by ``units/razar-notifier.timer``/``.service`` while razard is stopped (one lock:
  only one of the two is active);
- ``razard.daemon.Notifier``: sd_notify to systemd (READY=1, STATUS=, WATCHDOG=1),
  nothing to do with alerts.

signature.py   a log line's normalised signature (volatile parts stripped)
source.py      razard's one journal reader (read_journal, also for triage and the
               handover); JournalSource: new journal entries by cursor, once each
tail.py        JsonlTail: new records of a JSON-lines log by offset + inode
classify.py    journal entry / log record -> observation (pure)
grouping.py    Grouper: N recurrences of a signature within a window (pure)
book.py        the firing alerts, dedup/repeat/inhibit decisions (pure + saved)
targets.py     Alertmanager, operator console, webhook (httpx, bearer tokens)
outbox.py      undelivered alerts on disk, bounded, retried with backoff
history.py     operator_escalations.jsonl and read_escalations()
metrics.py     razar_alerts_total and friends
notifier.py    EscalationNotifier: one pass, and the loop razard runs
cli.py         scripts/escalation_notifier.py (--once for the timer, --follow)
"""

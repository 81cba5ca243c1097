"""Scenario 6: the escalation notifier reading journal entries, against journalctl.

Many entries (1,000,000 in a full run) are written as a journal export stream and
imported with ``systemd-journal-remote`` into a journal directory of their own (no
journald rate limit, nothing of the host's journal). Then, alternating:

- the notifier's read path: `razard.escalation.source.JournalSource` in batches of
  the notifier's ``BATCH`` (``journalctl -o json --after-cursor``, stream-parsed),
  each entry classified as the notifier does (`classify.from_journal`), and each
  failure's signature counted by a `Grouper`;
- the ceiling: ``journalctl -o json > /dev/null`` over the same entries.

Entries are a mix like a busy node's: a third razard events, the rest component
output, a quarter of that errors with varying numbers, addresses and ids.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.scenarios import Bench
from bench.stats import summary

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
MODULES = ("razard.escalation.signature", "razard.escalation.source", "razard.escalation.grouping")
COMPONENTS = 50


def available() -> str | None:
    """None when the notifier's modules import, else why not."""
    for m in MODULES:
        try:
            importlib.import_module(m)
        except ImportError as e:
            return f"notifier missing ({m}: {e})"
    return None


def _export_entry(i: int, t0: int) -> str:
    comp = f"c{i % COMPONENTS:02d}"
    base = (
        f"__REALTIME_TIMESTAMP={t0 + i * 1000}\n__MONOTONIC_TIMESTAMP={1_000_000 + i * 1000}\n"
        "_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=bench\n"
    )
    kind = i % 12
    if kind < 4:  # razard's own events
        ev = ("state_restarting", "component_failed", "probe_failed", "state_healthy")[kind]
        prio = 3 if kind == 1 else 5
        return (
            f"{base}SYSLOG_IDENTIFIER=razard\nPRIORITY={prio}\nRAZAR_EVENT={ev}\n"
            f"RAZAR_COMPONENT={comp}\nRAZAR_LAYER=crown\n"
            f"MESSAGE=unit razar-{comp}.service died: exit {i % 7} after {i % 977} ms\n\n"
        )
    if kind < 6:  # errors with volatile parts
        msg = (
            f"2026-11-29T10:{i % 60:02d}:{i % 59:02d}Z worker[{4000 + i % 3000}]: "
            f"connect to 10.0.{i % 250}.{i % 200}:5432 failed: timeout after {i % 90} s "
            f"(request {i * 7919:x})"
        )
        prio = 3
    else:
        msg = f"served request {i} in {i % 113} ms from 192.168.{i % 250}.{i % 99}"
        prio = 6
    return (
        f"{base}SYSLOG_IDENTIFIER=razar-{comp}\n_SYSTEMD_UNIT=razar-{comp}.service\n"
        f"PRIORITY={prio}\nMESSAGE={msg}\n\n"
    )


def make_journal(directory: Path, n: int) -> Path:
    """Write ``n`` entries into a journal file under ``directory`` via journal-remote."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "bench.journal"
    proc = subprocess.Popen(
        [str(JOURNAL_REMOTE), f"--output={out}", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    t0 = int((time.time() - 86400) * 1e6)
    chunk: list[str] = []
    for i in range(n):
        chunk.append(_export_entry(i, t0))
        if len(chunk) == 5000:
            proc.stdin.write("".join(chunk).encode())
            chunk = []
    proc.stdin.write("".join(chunk).encode())
    proc.stdin.close()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"{JOURNAL_REMOTE} failed: {err.strip()[-500:]}")
    return directory


def count_ceiling(directory: Path) -> tuple[float, int]:
    """Seconds for ``journalctl -o json > /dev/null`` over the directory (-1: not counted)."""
    argv = ["journalctl", "--no-pager", "-q", "-o", "json", f"--directory={directory}"]
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0, -1


def _matches() -> list[str]:
    """The journalctl matches the notifier itself uses for these components."""
    try:
        from razard.escalation.notifier import journal_matches
    except ImportError:
        return []
    from razard.config import ComponentConfig

    comps = [
        ComponentConfig(
            name=f"c{i:02d}",
            layer="crown",
            priority=0,
            unit=f"razar-c{i:02d}.service",
            command=("/bin/true",),
        )
        for i in range(COMPONENTS)
    ]
    return journal_matches(comps)


#: The fields `classify.from_journal` reads (journalctl adds the cursor and timestamps).
FIELDS = (
    "MESSAGE,PRIORITY,RAZAR_EVENT,RAZAR_COMPONENT,RAZAR_LAYER,SYSLOG_IDENTIFIER,"
    "_SYSTEMD_UNIT,_SYSTEMD_USER_UNIT,_HOSTNAME"
)


async def _notifier_pass(
    directory: Path, cursor: Path, *, lean: bool = False
) -> tuple[float, int, int]:
    """Seconds to read and judge every entry as the notifier does; entries; failures seen.

    ``lean``: what it would take without the notifier's journalctl matches (the entries
    are filtered by `classify.from_journal` anyway) and with ``--output-fields``.
    """
    from razard.escalation import classify
    from razard.escalation.grouping import Grouper
    from razard.escalation.source import JournalSource

    try:
        from razard.escalation.notifier import BATCH
    except ImportError:
        BATCH = 10_000  # noqa: N806
    await asyncio.to_thread(cursor.unlink, missing_ok=True)
    args = [f"--directory={directory}"] + ([f"--output-fields={FIELDS}"] if lean else [])
    source = JournalSource(cursor, matches=[] if lean else _matches(), journal_args=args)
    grouper = Grouper(5, 300.0)
    units = {f"razar-c{i:02d}.service": f"c{i:02d}" for i in range(COMPONENTS)}
    layers = {f"c{i:02d}": "crown" for i in range(COMPONENTS)}
    total = failures = 0
    now = time.time()
    t0 = time.perf_counter()
    while True:
        entries = await source.read_new(BATCH)
        total += len(entries)
        for entry in entries:
            o = classify.from_journal(entry, units=units, layers=layers, host="bench", now=now)
            if o is not None and o.kind == "failure":
                failures += 1
                grouper.observe((o.component, o.signature), o.ts)
        if len(entries) < BATCH:
            break
    return time.perf_counter() - t0, total, failures


def run(b: Bench) -> dict[str, Any]:
    why = available()
    if why:
        return {"not_run": why}
    if not JOURNAL_REMOTE.exists():
        return {"not_run": f"{JOURNAL_REMOTE} missing (Debian package systemd-journal-remote)"}
    if shutil.which("journalctl") is None:
        return {"not_run": "journalctl missing"}
    n = b.sizes.notifier_lines
    directory = b.work / "journal"
    make_journal(directory, n)
    cursor = b.work / "notifier.cursor"
    trials = b.sizes.notifier_trials
    rates: dict[str, list[float]] = {"notifier": [], "journalctl": [], "notifier_lean": []}
    seen = failures = 0
    for r in range(trials):
        order = ["notifier", "journalctl", "notifier_lean"]
        order = order[r % 3 :] + order[: r % 3]
        for who in order:
            if who == "journalctl":
                secs, _ = count_ceiling(directory)
                rates[who].append(n / secs)
            else:
                secs, got, fails = asyncio.run(
                    _notifier_pass(directory, cursor, lean=who == "notifier_lean")
                )
                rates[who].append(got / secs)
                if who == "notifier":
                    seen, failures = got, fails
    shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, Any] = {
        "unit": "lines/s",
        "entries": n,
        "entries_read": seen,
        "failures_counted": failures,
        "notifier": summary(rates["notifier"]),
        "journalctl": summary(rates["journalctl"]),
        "notifier_lean": summary(rates["notifier_lean"]),
        "lean_fields": FIELDS,
    }
    out["notifier_lps"] = out["notifier"]["median"]
    out["journalctl_lps"] = out["journalctl"]["median"]
    if seen != n:
        out.setdefault("errors", {})["notifier"] = f"read {seen} of {n} entries"
    return out


if __name__ == "__main__":  # pragma: no cover - by hand: python -m bench.notifier N
    import sys
    import tempfile

    from bench.scenarios import SMOKE

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    work = Path(tempfile.mkdtemp(prefix="rzn-"))
    os.environ.setdefault("SYSTEMD_COLORS", "0")
    from dataclasses import replace

    bench = Bench(work, replace(SMOKE, notifier_lines=n))
    try:
        print(run(bench))
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)

"""Scenario 6: the escalation notifier reading journal entries, against journalctl.

Many entries (1,000,000 in a full run) are written as a journal export stream and
imported with ``systemd-journal-remote`` into a journal directory of their own (no
journald rate limit, nothing of the host's journal). Then, alternating:

- the notifier's read path, built from the notifier's own parts:
  `razard.escalation.source.JournalSource` as the notifier configures it (export
  format, `classify.JOURNAL_FIELDS`, its ``BATCH``, the `OwnEntries` filter), each
  entry classified (`classify.from_journal`) and each failure's signature counted
  by a `Grouper`;
- the ceiling: ``journalctl -o json > /dev/null`` over the same entries;
- for reference, the notifier's journalctl alone (``-o export --output-fields=...
  > /dev/null``): what is left of the notifier's time is Python's.

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

from bench.scenarios import Bench, rotations
from bench.stats import summary

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
MODULES = ("razard.escalation.notifier", "razard.escalation.source", "razard.escalation.grouping")
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


def count_ceiling(directory: Path, *args: str) -> float:
    """Seconds for ``journalctl -o json > /dev/null`` over the directory (``args``: other
    output options instead of ``-o json``)."""
    out = list(args) or ["-o", "json"]
    argv = ["journalctl", "--no-pager", "-q", *out, f"--directory={directory}"]
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def _components() -> list[Any]:
    from razard.config import ComponentConfig

    return [
        ComponentConfig(
            name=f"c{i:02d}",
            layer="crown",
            priority=0,
            unit=f"razar-c{i:02d}.service",
            command=("/bin/true",),
        )
        for i in range(COMPONENTS)
    ]


async def _notifier_pass(directory: Path, cursor: Path) -> tuple[float, int, int]:
    """Seconds to read and judge every entry as the notifier does; entries; failures seen."""
    from razard.escalation import classify
    from razard.escalation.grouping import Grouper
    from razard.escalation.notifier import BATCH, OwnEntries
    from razard.escalation.source import JournalSource

    await asyncio.to_thread(cursor.unlink, missing_ok=True)
    source = JournalSource(
        cursor, journal_args=[f"--directory={directory}"], fields=classify.JOURNAL_FIELDS
    )
    comps = _components()
    keep = OwnEntries(comps)
    grouper = Grouper(5, 300.0)
    units = {c.unit: c.name for c in comps}
    layers = {c.name: c.layer for c in comps}
    total = failures = 0
    now = time.time()
    t0 = time.perf_counter()
    while True:
        entries = await source.read_new(BATCH, keep=keep)
        total += source.last_read
        for entry in entries:
            o = classify.from_journal(entry, units=units, layers=layers, host="bench", now=now)
            if o is not None and o.kind == "failure":
                failures += 1
                grouper.observe((o.component, o.signature), o.ts)
        if source.last_read < BATCH:
            break
    return time.perf_counter() - t0, total, failures


def _export_args() -> list[str]:
    from razard.escalation.classify import JOURNAL_FIELDS

    return ["-o", "export", "--output-fields=" + ",".join(JOURNAL_FIELDS)]


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
    rates: dict[str, list[float]] = {"notifier": [], "journalctl": [], "journalctl_export": []}
    seen = failures = 0
    for _r, order in rotations(("notifier", "journalctl", "journalctl_export"), trials):
        for who in order:
            if who == "journalctl":
                rates[who].append(n / count_ceiling(directory))
            elif who == "journalctl_export":
                rates[who].append(n / count_ceiling(directory, *_export_args()))
            else:
                secs, got, fails = asyncio.run(_notifier_pass(directory, cursor))
                rates[who].append(got / secs)
                seen, failures = got, fails
    shutil.rmtree(directory, ignore_errors=True)
    out: dict[str, Any] = {
        "unit": "lines/s",
        "entries": n,
        "entries_read": seen,
        "failures_counted": failures,
        "notifier": summary(rates["notifier"]),
        "journalctl": summary(rates["journalctl"]),
        "journalctl_export": summary(rates["journalctl_export"]),
        "export_args": " ".join(_export_args()),
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

"""``python -m bench run [--smoke] [--scale F] [--comps F] [--out DIR] [--only S,...]``.

Needs root (private systemd user managers are started, as in the tests) and
writes ``results.md``, ``results.json`` and ``recovery.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import notifier, report, scenarios
from razard.usermanager import SYSTEMD, ensure_journald, stop_journald

SCENARIOS = ("recovery", "load", "boot", "idle", "notifier")


def _versions() -> dict[str, str]:
    def out(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            return ""

    sd = out(str(SYSTEMD), "--version").splitlines()
    return {
        "systemd": sd[0] if sd else "?",
        "supervisord": out(str(Path(sys.executable).parent / "supervisord"), "--version").strip(),
        "python": platform.python_version(),
        "component_python": out(scenarios_python(), "--version").strip(),
    }


def scenarios_python() -> str:
    from bench.systems import COMPONENT_PYTHON

    return COMPONENT_PYTHON


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench: needs root (it starts private systemd user managers)", file=sys.stderr)
        return 2
    if not SYSTEMD.exists():
        print(f"bench: {SYSTEMD} is missing", file=sys.stderr)
        return 2
    sizes = scenarios.SMOKE if args.smoke else scenarios.FULL
    sizes = sizes.scaled(trials=args.scale, comps=args.comps)
    if args.idle_sizes:
        try:
            idle_sizes = tuple(int(x) for x in args.idle_sizes.split(","))
        except ValueError:
            idle_sizes = ()
        if not idle_sizes or min(idle_sizes) < 1:
            print(f"bench: --idle-sizes: not counts: {args.idle_sizes!r}", file=sys.stderr)
            return 2
        sizes = replace(sizes, idle_sizes=idle_sizes)
    only = set(args.only.split(",")) if args.only else set(SCENARIOS)
    unknown = only - set(SCENARIOS)
    if unknown:
        print(f"bench: --only: unknown scenario(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    systems = tuple(args.systems.split(",")) if args.systems else scenarios.SYSTEM_NAMES
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    journald = None
    with contextlib.suppress(Exception):
        journald = ensure_journald()  # razard and the managers log there, as in production
    # a user manager started from a shell logs to the console, not the journal; the
    # recovery timelines read its unit messages there (both managers alike)
    os.environ.setdefault("SYSTEMD_LOG_TARGET", "journal")
    os.environ.setdefault("SYSTEMD_LOG_LEVEL", "info")
    work = Path(tempfile.mkdtemp(prefix="rzb-", dir="/tmp"))
    started = time.monotonic()
    res: dict[str, Any] = {
        "meta": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "host": f"{platform.node()}, {os.cpu_count()} CPUs, Linux {platform.release()}",
            "command": command,
            "smoke": args.smoke,
            "scale": args.scale,
            "comps": args.comps,
            "sizes": sizes.__dict__ | {"idle_sizes": list(sizes.idle_sizes)},
            "versions": _versions(),
        },
        "scenarios": {},
    }
    b = scenarios.Bench(work, sizes, systems)
    try:
        sc = res["scenarios"]
        if "recovery" in only:
            logging.info("scenarios 1 and 2: recovery and crash storm")
            sc.update(scenarios.recovery_and_storm(b))
        if "load" in only:
            logging.info("scenarios 1 and 2 under CPU load")
            sc.update(scenarios.under_load(b))
        if "boot" in only:
            logging.info("scenario 3: boot in waves")
            sc["boot"] = scenarios.boot(b)
        if "idle" in only:
            logging.info("scenarios 4 and 5: idle cost and scrape")
            sc.update(scenarios.idle_and_scrape(b))
        if "notifier" in only:
            logging.info("scenario 6: notifier")
            sc["notifier"] = notifier.run(b)
    finally:
        b.close()
        stop_journald(journald)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["meta"]["seconds"] = time.monotonic() - started
    out = Path(args.out)
    report.write(res, out)
    print((out / "results.md").read_text())
    return 0


def footprint(args: argparse.Namespace) -> int:
    from bench import footprint

    if os.geteuid() != 0:
        print("bench: needs root (it starts private systemd user managers)", file=sys.stderr)
        return 2
    command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    journald = None
    with contextlib.suppress(Exception):
        journald = ensure_journald()
    work = Path(tempfile.mkdtemp(prefix="rzb-", dir="/tmp"))
    try:
        res = footprint.run(
            work,
            comps=args.comps,
            settle=args.settle,
            seconds=args.seconds,
            ctl_runs=args.ctl_runs,
        )
    finally:
        stop_journald(journald)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["command"] = command
    print(footprint.dump(res) if args.json else footprint.markdown(res, command))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmarks and write the results")
    r.add_argument("--smoke", action="store_true", help="few trials, few components (< 60 s)")
    r.add_argument(
        "--scale", type=float, default=1.0, help="scale trial counts, durations, journal entries"
    )
    r.add_argument("--comps", type=float, default=1.0, help="scale component counts")
    r.add_argument("--out", default="bench/results", help="where results go")
    r.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    r.add_argument("--systems", default="", help="comma-separated subset of the systems")
    r.add_argument(
        "--idle-sizes", default="", help="comma-separated component counts for idle (e.g. 500)"
    )
    r.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    f = sub.add_parser(
        "footprint",
        help="razard's RSS (floor, imports, idle) and razarctl's start-up, alone (minutes)",
    )
    f.add_argument("--comps", type=int, default=500, help="components razard supervises")
    f.add_argument("--settle", type=float, default=10.0, help="seconds after all are ready")
    f.add_argument("--seconds", type=float, default=10.0, help="seconds RSS is sampled")
    f.add_argument("--ctl-runs", type=int, default=20, help="razarctl runs timed (0: none)")
    f.add_argument("--json", action="store_true", help="print every figure as JSON")
    f.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    fl = sub.add_parser("fleet", help="simulated razard nodes on one real etcd (bench/fleet.py)")
    fl.add_argument("--smoke", action="store_true", help="8 nodes, seconds (no figures to keep)")
    fl.add_argument("--nodes", type=int, default=0, help="simulated nodes (default 200)")
    fl.add_argument("--seconds", type=float, default=0.0, help="contention phase (default 90)")
    fl.add_argument("--idle-seconds", type=float, default=0.0, help="idle phase (default 60)")
    fl.add_argument("--seed", type=int, default=1, help="seed of the kills and the load")
    fl.add_argument("--out", default="bench/results", help="where fleet.md and fleet.json go")
    fl.add_argument("--keep", action="store_true", help="keep the work directory (etcd's log)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bench: %(message)s")
    if args.cmd == "fleet":
        from bench import fleet

        command = "python -m bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        return fleet.main(args, command)
    return footprint(args) if args.cmd == "footprint" else run(args)


if __name__ == "__main__":
    sys.exit(main())

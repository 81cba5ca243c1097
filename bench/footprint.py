"""``python -m bench footprint``: razard's memory and razarctl's start-up, alone, in minutes.

The full run's idle scenario measures razard's RSS beside its peers; this is
the quick, repeatable view of where razard's own memory goes, for work on it:

- the floor: a Python that imports only asyncio, dbus-fast and prometheus-client
  (razard cannot go below it without dropping its libraries);
- ``import razard.daemon`` and ``import razard.ctl``: peak RSS and module count;
- a real razard at ``--comps`` components (on its own private user manager, as
  in the benchmark), with probes off and with a TCP probe each: its RSS once
  settled, split into the heap, other anonymous memory (thread stacks, malloc
  arenas), and file-backed pages, with its thread count;
- ``razarctl --help`` and ``razarctl status`` start-to-exit against that razard,
  median of ``--ctl-runs`` runs, their CPU time, and how many modules each imports
  (one more run with ``PYTHONPROFILEIMPORTTIME``).

Needs root, like ``bench run``. Prints a markdown table; ``--json`` for the figures.
razard's and agents' bytecode caches are written first (``compileall``), as an
installed razar has them: without them every start compiles from source, which
costs time and leaves its garbage in the figures (``PYTHONDONTWRITEBYTECODE``
in a development shell does that).
"""

from __future__ import annotations

import json
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.systems import BIN, Razard

#: The libraries razard's daemon cannot do without.
_FLOOR = "import asyncio, dbus_fast.aio, prometheus_client"
#: Peak RSS (KiB, VmHWM: this process's own, where ru_maxrss keeps the parent's across
#: exec) after the floor, then after importing ``module``; and the module count.
_IMPORT = (
    "import sys\n"
    "def hwm():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            return int(line.split()[1])\n"
    "{floor}\n"
    "libs = hwm()\n"
    "import {module}\n"
    "print(libs, hwm(), len(sys.modules))\n"
)


def import_cost(module: str, floor: str = _FLOOR) -> dict[str, Any]:
    """Peak RSS after ``floor`` and then after ``import module``, in fresh interpreters
    (median of 3)."""
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT.format(floor=floor, module=module)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        runs.append([int(x) for x in out.stdout.split()])
    libs, peak, modules = (statistics.median(r[i] for r in runs) for i in range(3))
    return {"libs_mib": libs / 1024, "mib": peak / 1024, "modules": int(modules)}


def memory_of(pid: int) -> dict[str, float]:
    """RSS of ``pid`` from /proc (MiB): total, anonymous, file-backed, the heap, threads."""
    status: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    heap = 0
    current = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):
            current = head[5] if len(head) > 5 else ""
        elif head and head[0] == "Rss:" and current == "[heap]":
            heap += int(head[1])

    def kib(key: str) -> float:
        return int(status.get(key, "0 kB").split()[0]) / 1024

    return {
        "rss_mib": kib("VmRSS"),
        "anon_mib": kib("RssAnon"),
        "file_mib": kib("RssFile"),
        "heap_mib": heap / 1024,
        "threads": float(status.get("Threads", "0")),
    }


def settled_memory(pid: int, seconds: float) -> dict[str, float]:
    """`memory_of` at its peak RSS over ``seconds`` (sampled every 0.5 s)."""
    best = memory_of(pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.5)
        now = memory_of(pid)
        if now["rss_mib"] > best["rss_mib"]:
            best = now
    return best


def run_to_exit(argv: list[str], env: dict[str, str], limit_s: float = 60.0) -> None:
    """Run ``argv`` and return the moment it exits; fail unless it exits 0.

    Not ``subprocess.run(..., timeout=)``: with a timeout it polls for the exit with
    sleeps growing to 50 ms, so a run is timed to the next poll (64, 114, 164 ms...).
    A blocking wait returns at the exit; a timer kills a run past ``limit_s``.
    """
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    killer = threading.Timer(limit_s, proc.kill)
    killer.start()
    try:
        rc = proc.wait()
    finally:
        killer.cancel()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, argv)


def time_ctl(system: Razard, args: list[str], runs: int) -> dict[str, Any]:
    """Wall-clock ms of ``razarctl --bus user ARGS`` against ``system`` (median, min, max)."""
    assert system.um is not None
    env = system.um.env()
    argv = [str(BIN / "razarctl"), "--bus", "user", *args]
    times, cpu = [], []
    for _ in range(runs):
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        run_to_exit(argv, env)
        times.append(1000 * (time.perf_counter() - t0))
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(1000 * (c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime))
    # one more run with Python's import log: how many modules the command imports
    log = subprocess.run(
        argv,
        env={**env, "PYTHONPROFILEIMPORTTIME": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
        timeout=60,
    ).stderr
    imports = sum(1 for line in log.splitlines() if re.match(r"import time:\s+\d", line))
    return {
        "imports": imports,
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        # CPU time (user + system): what a busy machine's other load changes least
        "cpu_median_ms": statistics.median(cpu),
        "samples": times,
    }


def run(work: Path, *, comps: int, settle: float, seconds: float, ctl_runs: int) -> dict[str, Any]:
    """Every figure the report prints; ``work`` holds the managers and razard's files."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "razard"), str(root / "agents")],
        check=True,
        timeout=300,
    )
    res: dict[str, Any] = {
        "daemon_import": import_cost("razard.daemon"),
        "ctl_import": import_cost("razard.ctl", floor="pass"),
        "idle": {},
        "comps": comps,
        "settle_s": settle,
        "seconds": seconds,
    }
    b = scenarios.Bench(work, scenarios.FULL, ("razard",))
    try:
        ports = scenarios.free_ports(comps)
        for label, probes in (("probes off", False), ("TCP probes", True)):
            cs = scenarios.comps("fp", comps, ports=ports if probes else None)
            with b.running("razard", cs, probes=probes) as system:
                assert isinstance(system, Razard)
                time.sleep(settle)
                pid = system.supervisor_pids()[0]
                res["idle"][label] = settled_memory(pid, seconds)
                if not probes and ctl_runs:
                    res["ctl_help"] = time_ctl(system, ["--help"], ctl_runs)
                    res["ctl_status"] = time_ctl(system, ["status"], ctl_runs)
                    res["ctl_status_json"] = time_ctl(system, ["status", "--json"], ctl_runs)
    finally:
        b.close()
    return res


def markdown(res: dict[str, Any], command: str) -> str:
    """The figures as a short markdown report."""
    d, c = res["daemon_import"], res["ctl_import"]
    lines = [
        f"# razard footprint: `{command}`",
        "",
        "| what | peak RSS | modules |",
        "|---|---|---|",
        f"| floor: Python, asyncio, dbus-fast, prometheus-client | {d['libs_mib']:.1f} MiB | – |",
        f"| `import razard.daemon` | {d['mib']:.1f} MiB | {d['modules']} |",
        f"| `import razard.ctl` | {c['mib']:.1f} MiB | {c['modules']} |",
        "",
        f"razard idle at {res['comps']} components ({res['settle_s']:g} s settled, peak over "
        f"{res['seconds']:g} s):",
        "",
        "| razard | RSS | heap | other anonymous | file-backed | threads |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in res["idle"].items():
        other = m["anon_mib"] - m["heap_mib"]
        lines.append(
            f"| {label} | **{m['rss_mib']:.1f} MiB** | {m['heap_mib']:.1f} MiB | "
            f"{other:.1f} MiB | {m['file_mib']:.1f} MiB | {m['threads']:.0f} |"
        )
    if "ctl_status" in res:
        lines += [
            "",
            f"razarctl start to exit against that razard (probes off), ms over "
            f"{len(res['ctl_status']['samples'])} runs:",
            "",
            "| command | median | min | max | CPU (user+sys) median | modules imported |",
            "|---|---|---|---|---|---|",
        ]
        for key, cmd in (
            ("ctl_help", "razarctl --help"),
            ("ctl_status", "razarctl status"),
            ("ctl_status_json", "razarctl status --json"),
        ):
            t = res[key]
            lines.append(
                f"| `{cmd}` | **{t['median_ms']:.0f}** | {t['min_ms']:.0f} | {t['max_ms']:.0f} | "
                f"{t['cpu_median_ms']:.0f} | {t.get('imports', '-')} |"
            )
    return "\n".join(lines) + "\n"


def dump(res: dict[str, Any]) -> str:
    return json.dumps(res, indent=2)

"""Soak: many injected failures across many components; every one accounted for, no growth.

Run by hand (minutes, not part of the suite)::

    .venv/bin/python -m tests.soak --components 100 --failures 10000

A private ``systemd --user`` runs razard with N sleeping components; the soak
SIGKILLs a batch of running components at a time, waits until each is back
with a new process, and repeats until F failures were injected. Then it checks
that razard saw every one: ``razar_component_restarts_total`` and
``razar_component_failures_total`` summed over the components, and the
``component_failed`` records in razar.log, each equal F. razard's RSS is
sampled after every batch; the mean of the last quarter against the first
quarter is the memory growth (target: under 5%). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

from razard.usermanager import ensure_journald, start_user_manager, stop_journald

BIN = Path(sys.executable).parent


def metric_sum(page: str, name: str) -> float:
    return sum(
        float(line.rpartition(" ")[2])
        for line in page.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


BASE_SECONDS = 900_000  # component i sleeps BASE_SECONDS + i: its process is found by that


def sleepers() -> dict[str, int]:
    """pid of each component's process, by its tag (``soak-<i>``)."""
    out: dict[str, int] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if len(cmd) == 2 and cmd[0].endswith("sleep") and cmd[1].isdigit():
            i = int(cmd[1]) - BASE_SECONDS
            if i >= 0:
                out[f"soak-{i}"] = p.info["pid"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=100)
    ap.add_argument("--failures", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=10, help="components killed at once")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    # a SIGTERM (timeout, Ctrl+C) still tears the private manager down
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    journald = ensure_journald()
    base = Path(tempfile.mkdtemp(prefix="razar-soak-"))
    um = start_user_manager(base / "um")
    port = 0
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = base / "state"
    tags = [f"soak-{i}" for i in range(args.components)]
    config = base / "razard.toml"
    config.write_text(
        f'[razard]\nstate_dir = "{state}"\nbus = "user"\nmetrics_port = {port}\n'
        f'unit_dir = "{um.unit_dir}"\n'
        + "".join(
            f'\n[[component]]\nname = "{t}"\nlayer = "crown"\npriority = {i % 5}\n'
            f'command = ["/bin/sleep", "{BASE_SECONDS + i}"]\n'
            "restart = { attempts = 10000, backoff_base = 0.01, backoff_cap = 0.05, "
            "jitter = 0.0, healthy_window = 0.5 }\n"
            for i, t in enumerate(tags)
        )
    )
    env = um.env()
    env.pop("NOTIFY_SOCKET", None)
    err = (base / "razard.stderr").open("wb")
    proc = subprocess.Popen(
        [str(BIN / "razard"), "--config", str(config)], env=env, stdout=err, stderr=err
    )
    summary: dict[str, object] = {}
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit((base / "razard.stderr").read_text()[-3000:])
            try:
                if "razar_ready 1.0" in httpx.get(url, timeout=2).text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        while len(sleepers()) < args.components:
            time.sleep(0.2)
        rss: list[int] = []
        me = psutil.Process(proc.pid)
        injected = 0
        started = time.monotonic()
        while injected < args.failures:
            pids = sleepers()
            batch = rng.sample(sorted(pids), min(args.batch, args.failures - injected))
            for t in batch:
                os.kill(pids[t], signal.SIGKILL)
            injected += len(batch)
            wait_until = time.monotonic() + 60
            while time.monotonic() < wait_until:
                now = sleepers()
                if all(t in now and now[t] != pids[t] for t in batch):
                    break
                time.sleep(0.02)
            else:
                raise SystemExit(f"components not back after 60 s: {batch}")
            rss.append(me.memory_info().rss)
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the last restarts are counted
        page = httpx.get(url, timeout=10).text
        restarts = metric_sum(page, "razar_component_restarts_total")
        failures = metric_sum(page, "razar_component_failures_total")
        logged = 0
        for line in (state / "razar.log").read_text().splitlines():
            try:
                if json.loads(line).get("event") == "component_failed":
                    logged += 1
            except ValueError:
                pass
        q = max(1, len(rss) // 4)
        first, last = statistics.mean(rss[:q]), statistics.mean(rss[-q:])
        cpu = me.cpu_times()
        summary = {
            "components": args.components,
            "failures_injected": injected,
            "restarts_metric": restarts,
            "failures_metric": failures,
            "component_failed_logged": logged,
            "all_accounted": restarts == failures == logged == injected,
            "seconds": round(elapsed, 1),
            "failures_per_second": round(injected / elapsed, 1),
            "rss_first_quarter_mib": round(first / 2**20, 2),
            "rss_last_quarter_mib": round(last / 2**20, 2),
            "rss_growth_percent": round(100 * (last - first) / first, 2),
            "razard_cpu_seconds": round(cpu.user + cpu.system, 1),
        }
        print(json.dumps(summary, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        um.stop()
        stop_journald(journald)
        err.close()
    ok = summary.get("all_accounted") and float(summary["rss_growth_percent"]) < 5.0  # type: ignore[arg-type]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Healing told truthfully (issue 15): per-unit holds, verified heals, what works on this host.

Everything runs in a real razard on the private user manager; the layer sensors
read a PSI/meminfo file the test writes where the kernel's own cannot be driven
on demand, and the memory test uses a component that really allocates.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import Factory
from tests.integration.harness import Razard, py, script, wait_for

pytestmark = pytest.mark.integration

IDLER = """\
    import time
    time.sleep(100000)
    """

#: A healer that runs until the test lets it finish (it may write only in razard's state dir).
SLOW_HEALER = """\
    #!/bin/sh
    echo "$RAZAR_LAYER" >> "{started}"
    i=0
    while [ ! -e "{release}" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    echo '{{"healer": "slow", "result": "healed", "reason": "waited", "steps": []}}'
    exit 0
    """


def _psi(path: Path, avg10: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        f"some avg10={avg10:.2f} avg60=0.00 avg300=0.00 total=1\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    tmp.replace(path)


def _events(r: Razard, event: str, **match: str) -> list[dict[str, object]]:
    return [
        e
        for e in r.events()
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    ]


def test_a_crash_elsewhere_is_restarted_while_a_layer_healer_runs(
    razard: Factory, tmp_path: Path
) -> None:
    """The heart healer runs (and runs on); a throat component killed meanwhile is restarted
    by its own ladder before the healer has finished: the hold covers only the units a
    healer touches, not the whole node."""
    psi = tmp_path / "mem.psi"
    _psi(psi, 0.0)
    started = tmp_path / "state" / "healer-started"
    release = tmp_path / "state" / "healer-release"
    healer = script(tmp_path / "slow.sh", SLOW_HEALER.format(started=started, release=release))
    idler = script(tmp_path / "idle.py", IDLER)
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"
        heartbeat_interval = 0.5
        window_factor = 2

        [chakra.heart]
        pressure_file = "{psi}"
        pressure_threshold = 50
        healer = ["{healer}"]
        healer_timeout = 120

        [[component]]
        name = "ht-cache"
        layer = "heart"
        priority = 10
        command = ["{py()}", "{idler}"]

        [[component]]
        name = "ht-api"
        layer = "throat"
        priority = 10
        command = ["{py()}", "{idler}"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.2, jitter = 0.0 }}
        """)
    r.start()
    r.wait_state("ht-api", "healthy")
    try:
        _psi(psi, 90.0)  # the heart layer goes down: its healer starts, and waits
        wait_for(lambda: started.exists(), 60, "the heart healer to start")
        wait_for(lambda: _events(r, "heal_started", layer="heart"), what="heal_started")
        old = r.main_pid("razar-ht-api.service")
        assert old > 0
        os.kill(old, signal.SIGKILL)
        wait_for(
            lambda: (p := r.main_pid("razar-ht-api.service")) and p != old,
            60,
            "ht-api restarted by its ladder",
        )
        r.wait_state("ht-api", "healthy", timeout=60)
        # ordering, not timing: the restart happened while the healer was still running
        assert not _events(r, "heal_result", layer="heart"), "the healer had already finished"
        assert started.read_text().splitlines() == ["heart"]
        failed = _events(r, "component_failed", component="ht-api")
        assert failed and failed[0]["failure_kind"] == "exit"
        assert not _events(r, "component_failed", component="ht-cache")
    finally:
        release.touch()
        _psi(psi, 0.0)
    wait_for(lambda: _events(r, "heal_result", layer="heart"), what="the heart healer's result")

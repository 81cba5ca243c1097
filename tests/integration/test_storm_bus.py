"""A restart storm while the D-Bus connection is cut and systemd re-executes itself."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.integration.conftest import Factory
from tests.integration.harness import Razard, sleepers, wait_for

pytestmark = pytest.mark.integration

N = 12


@pytest.fixture
def storm(razard: Factory) -> tuple[Razard, list[str]]:
    """A razard (not started) with N sleepers in three waves, restarted without delay."""
    tag = uuid.uuid4().hex[:6]
    names = [f"st{i}-{tag}" for i in range(N)]
    restart = "attempts = 50, backoff_base = 0.05, backoff_cap = 0.3, jitter = 0.0"
    return razard(sleepers(names, waves=3, restart=restart)), names


def test_no_component_is_lost_when_the_bus_drops_and_systemd_reexecs_mid_storm(
    storm: tuple[Razard, list[str]],
) -> None:
    """Every unit is killed, then the user bus is restarted (cutting razard's connection)
    and systemd re-executes, all while the restarts run: razard reconnects, re-reads every
    unit, and each component ends healthy and is still watched (a later kill is healed)."""
    r, names = storm
    r.start()
    for n in names:
        r.wait_state(n, "healthy")
    units = [f"razar-{n}.service" for n in names]
    before = {u: r.main_pid(u) for u in units}

    r.um.systemctl("kill", "--signal=SIGKILL", *units)  # the storm
    r.um.systemctl("restart", "dbus.service")  # the user bus: every connection is cut
    r.um.systemctl("daemon-reexec")
    time.sleep(0.5)
    r.um.systemctl("kill", "--signal=SIGKILL", *units, check=False)  # a second wave, mid-reconnect

    def all_back() -> bool:
        st = r.status(check=False)
        if not st:
            return False
        rows = {c["name"]: c for c in st["components"]}
        return all(rows[n]["state"] == "healthy" for n in names) and all(
            r.main_pid(u) not in (0, before[u]) for u in units
        )

    wait_for(all_back, 90, "every component healthy again with a new process")
    resyncs = [e for e in r.events() if e["event"] == "bus_resync"]
    assert resyncs, "razard did not re-read the units after reconnecting"
    assert r.proc is not None and r.proc.poll() is None  # razard itself never died

    # still tracked: each unit's next death is seen and healed
    after = {u: r.main_pid(u) for u in units}
    r.um.systemctl("kill", "--signal=SIGKILL", *units)
    wait_for(
        lambda: all(r.main_pid(u) not in (0, after[u]) for u in units),
        60,
        "every unit restarted after the storm",
    )
    status = json.loads(r.ctl("status", "--json").stdout)
    assert sorted(c["name"] for c in status["components"]) == sorted(names)
    print(f"storm: {N} components, 3 kill waves, {len(resyncs)} resyncs, none lost")

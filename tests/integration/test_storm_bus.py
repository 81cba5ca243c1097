"""A restart storm while the D-Bus connection is cut and systemd re-executes itself."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid

import pytest

from razard.errors import SystemdError, UnitNotFound
from razard.systemd import Systemd, UnitStatus
from razard.usermanager import UserManager
from tests.integration.conftest import Factory
from tests.integration.harness import Razard, sleepers, wait_for

pytestmark = pytest.mark.integration

N = 12
#: razard's own match rules (JobRemoved, Reloading, NameOwnerChanged, every unit's
#: PropertiesChanged): a fixed few, whatever the number of units (issue 18; the system
#: bus allows 512 per connection by default)
MAX_RULES = 6


def match_rules(r: Razard) -> int:
    """How many match rules razard's bus connection holds, from the bus daemon's stats."""
    assert r.proc is not None
    env = r.um.env()
    names = subprocess.run(
        ["busctl", "--user", "--json=short", "list", "--unique"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    mine = [n["name"] for n in json.loads(names.stdout) if n.get("pid") == r.proc.pid]
    assert len(mine) == 1, f"razard's connection: {mine}"
    stats = subprocess.run(
        [
            "busctl",
            "--user",
            "--json=short",
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.Debug.Stats",
            "GetConnectionStats",
            "s",
            mine[0],
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    (table,) = json.loads(stats.stdout)["data"]
    return int(table["MatchRules"]["data"])


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
    assert match_rules(r) <= MAX_RULES < N  # not one rule per unit
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
    assert match_rules(r) <= MAX_RULES  # re-added once after the reconnect, not per unit
    print(f"storm: {N} components, 3 kill waves, {len(resyncs)} resyncs, none lost")


async def test_a_burst_of_calls_larger_than_the_socket_buffer_keeps_the_connection(
    user_manager: UserManager,
) -> None:
    """2,000 calls at once (what a boot or resync of hundreds of units sends) all get their
    answers on the same connection. dbus-fast drops the connection when a write finds the
    socket buffer full; razard keeps few enough calls in flight that it never is."""
    sd = Systemd(bus="user", address=user_manager.bus_address)
    await sd.connect()
    try:
        missing = [f"razar-absent-{i}.service" for i in range(1000)]
        results = await asyncio.gather(
            *(sd.status(u) for u in missing),
            *(sd.status("dbus.service") for _ in range(1000)),
            return_exceptions=True,
        )
        lost = [r for r in results if isinstance(r, SystemdError) and "connection" in str(r)]
        assert lost == [], f"{len(lost)} calls lost the bus: {lost[0]}"
        assert all(isinstance(r, UnitNotFound) for r in results[:1000])
        assert all(isinstance(r, UnitStatus) and r.active_state == "active" for r in results[1000:])
        assert sd.connected
    finally:
        await sd.close()

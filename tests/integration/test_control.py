"""razarctl against razard's control interface on a private D-Bus daemon.

The supervisor side is a fake (in memory); the bus, the interface, the client
and the ``razarctl`` console script are real. razarctl runs as a subprocess
while the interface is served from this test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from razard import __version__
from razard.control import (
    BUS_NAME,
    INTERFACE,
    OBJECT_PATH,
    ControlClient,
    ControlInterface,
    SupervisorControl,
    export_control,
    unexport_control,
)
from razard.errors import ConfigError, ConfigProblem, ControlError, RazarError, UnknownComponent
from razard.escalation.trust import uid_matches
from razard.repair.types import RepairError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon"),
]

RAZARCTL = str(Path(sys.executable).with_name("razarctl"))
CLI_DEADLINE = 60.0


def _component(name: str, layer: str, priority: int, state: str, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": name,
        "unit": f"razar-{name}.service",
        "layer": layer,
        "priority": priority,
        "state": state,
        "healthy": state == "healthy",
        "restarts": 0,
        "quarantined": state == "quarantined",
        "last_error": None,
        "since": "2024-05-01T12:00:00+00:00",
    }
    record.update(extra)
    return record


PATCH_ID = "20260102T030405Z-a1b2c3"
REFUSED_ID = "20260102T030300Z-0f0f0f"
DIFF = "--- a/app.sh\n+++ b/app.sh\n@@ -1,2 +1,2 @@\n #!/bin/sh\n-port=80\n+port=8080\n"


def _ladder() -> dict[str, Any]:
    return {
        "roster": [
            {
                "name": "registry",
                "kind": "registry",
                "configured": True,
                "skip_reason": None,
                "max_attempts": 1,
                "takes_over_after": None,
            },
            {
                "name": "Crown",
                "kind": "openai",
                "configured": True,
                "skip_reason": None,
                "max_attempts": 3,
                "takes_over_after": None,
            },
            {
                "name": "K2 Coder",
                "kind": "openai",
                "configured": False,
                "skip_reason": "KIMI_K2_URL is not set",
                "max_attempts": 2,
                "takes_over_after": None,
            },
            {
                "name": "rStar",
                "kind": "openai",
                "configured": True,
                "skip_reason": None,
                "max_attempts": 4,
                "takes_over_after": 9,
            },
        ],
        "thresholds": {"rstar": 9, "escalation_warning": 3},
        "remote_attempts": 5,
        "long_task": False,
        "restart_attempts": {"api": 5, "gpu-worker": 2},
    }


def _patch_records() -> list[dict[str, Any]]:
    return [
        {
            "component": "api",
            "patch_id": REFUSED_ID,
            "status": "refused",
            "agent": "Crown",
            "diff_hash": "ab" * 32,
            "files": ["/etc/passwd"],
            "reason": "/etc/passwd: absolute paths are not allowed",
            "time": "2026-01-02T03:03:00+00:00",
        },
        {
            "component": "api",
            "patch_id": PATCH_ID,
            "status": "applied",
            "agent": "registry",
            "diff_hash": "cd" * 32,
            "files": ["app.sh"],
            "time": "2026-01-02T03:04:05+00:00",
        },
        {
            "component": "api",
            "patch_id": PATCH_ID,
            "status": "kept",
            "agent": "registry",
            "diff_hash": "cd" * 32,
            "files": ["app.sh"],
            "time": "2026-01-02T03:04:09+00:00",
        },
    ]


@dataclass
class FakeSupervisor:
    """An in-memory SupervisorControl that records what it was asked to do."""

    components: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            c["name"]: c
            for c in (
                _component("netcheck", "root", 0, "healthy"),
                _component(
                    "gpu-worker",
                    "sacral",
                    1,
                    "restarting",
                    restarts=3,
                    last_error="probe http://127.0.0.1:8000/health: timed out",
                ),
                _component("inference", "heart", 2, "quarantined", last_error="exit status 1"),
                _component("api", "throat", 2, "healthy"),
            )
        }
    )
    calls: list[tuple[str, str]] = field(default_factory=list)
    reload_error: Exception | None = None
    restart_delay: float = 0.0
    ladder_state: dict[str, Any] = field(default_factory=_ladder)
    patch_records: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"api": _patch_records()}
    )
    diffs: dict[tuple[str, str], str] = field(default_factory=lambda: {("api", PATCH_ID): DIFF})
    heal_outcome: dict[str, Any] = field(
        default_factory=lambda: {
            "healed": True,
            "attempts": 2,
            "agent": "registry",
            "patch_id": PATCH_ID,
        }
    )
    heal_calls: list[tuple[str, bool, int | None, int | None]] = field(default_factory=list)
    heal_forever: bool = False
    heal_called: asyncio.Event = field(default_factory=asyncio.Event)

    def _get(self, name: str) -> dict[str, Any]:
        if name not in self.components:
            raise UnknownComponent(name)
        return self.components[name]

    def status(self) -> dict[str, Any]:
        states = [c["state"] for c in self.components.values()]
        summary = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
        return {
            "summary": summary,
            "ready": True,
            "pid": os.getpid(),
            "version": __version__,
            "config": "/etc/razard/razard.toml",
            # Shuffled on purpose: razarctl sorts by priority then name.
            "components": list(reversed(self.components.values())),
        }

    async def start_component(self, name: str) -> None:
        self._get(name)["state"] = "starting"
        self.calls.append(("start", name))

    async def stop_component(self, name: str) -> None:
        self._get(name)["state"] = "stopped"
        self.calls.append(("stop", name))

    async def restart_component(self, name: str) -> None:
        self._get(name)
        if self.restart_delay:
            await asyncio.sleep(self.restart_delay)
        if name == "crash":
            raise RuntimeError("secret /opt/razard/internal.py detail")
        self.calls.append(("restart", name))

    def quarantined(self) -> list[dict[str, Any]]:
        return [
            {
                "component": c["name"],
                "reason": "ladder exhausted",
                "last_error": c["last_error"],
                "attempts": 7,
                "time": "2024-05-01T12:30:00+00:00",
            }
            for c in self.components.values()
            if c["quarantined"]
        ]

    async def release(self, name: str) -> None:
        component = self._get(name)
        if not component["quarantined"]:
            raise ControlError(f"{name} is not quarantined")
        component.update(quarantined=False, state="pending")
        self.calls.append(("release", name))

    async def reload(self) -> None:
        if self.reload_error is not None:
            raise self.reload_error
        self.calls.append(("reload", ""))

    def ladder(self) -> dict[str, Any]:
        return self.ladder_state

    def patches(self, name: str) -> list[dict[str, Any]]:
        self._get(name)
        return self.patch_records.get(name, [])

    def diff(self, name: str, patch_id: str | None) -> str:
        self._get(name)
        if patch_id is None:
            applied = [r for r in self.patches(name) if r["status"] == "applied"]
            if not applied:
                raise RepairError(f"{name}: no patch has been applied")
            patch_id = applied[-1]["patch_id"]
        if (name, patch_id) not in self.diffs:
            raise RepairError(f"{name}: no diff stored for patch {patch_id}")
        return self.diffs[(name, patch_id)]

    async def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        self._get(name)
        kept = [r for r in self.patches(name) if r["status"] == "kept"]
        if not kept or (to is not None and to not in {r["patch_id"] for r in kept}):
            raise RazarError(f"{name}: nothing to roll back (no kept patch)")
        self.calls.append(("rollback", f"{name} {to or ''}".strip()))
        return {
            **kept[-1],
            "status": "reverted",
            "by": "operator",
            "reason": f"operator rollback to before patch {kept[-1]['patch_id']}",
            "undone": [kept[-1]["patch_id"]],
            "restarted": not self.components[name]["quarantined"],
        }

    async def heal(
        self, name: str, long_task: bool, retries: int | None, remote_attempts: int | None
    ) -> dict[str, Any]:
        self._get(name)
        self.heal_calls.append((name, long_task, retries, remote_attempts))
        self.heal_called.set()
        if self.heal_forever:
            await asyncio.sleep(3600)
        return self.heal_outcome

    # No layer agents here (as in a razard whose layer agents have not started);
    # razard's own ControlError, so the fake keeps SupervisorControl's whole shape.
    def chakra(self) -> list[dict[str, Any]]:
        raise ControlError("the layer agents are not running yet")

    async def heal_layer(self, layer: str, dry_run: bool) -> dict[str, Any]:
        raise ControlError("the layer agents are not running yet")


@dataclass
class Served:
    """A fake supervisor served on the private bus at ``address``."""

    address: str
    supervisor: FakeSupervisor
    bus: MessageBus
    iface: ControlInterface


@dataclass
class Run:
    """One finished razarctl run."""

    rc: int
    out: str
    err: str


def start_dbus_daemon(
    tmp_path: Path, config: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start a private dbus-daemon (session policy, or ``config``); return it and its address."""
    if config is None:
        where = ["--session", f"--address=unix:path={tmp_path}/bus"]
    else:
        where = [f"--config-file={config}"]
    proc = subprocess.Popen(
        ["dbus-daemon", *where, "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    if not address.startswith("unix:"):
        stop_dbus_daemon(proc)
        pytest.fail(f"dbus-daemon printed {address!r}")
    return proc, address


def stop_dbus_daemon(proc: subprocess.Popen[str]) -> None:
    """Stop a daemon started by start_dbus_daemon."""
    proc.terminate()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    """A private dbus-daemon of our own; its address."""
    proc, address = start_dbus_daemon(tmp_path)
    try:
        yield address
    finally:
        stop_dbus_daemon(proc)


@pytest.fixture
async def served(bus_address: str) -> AsyncIterator[Served]:
    """razard's control interface over a FakeSupervisor, on the private bus."""
    bus = await MessageBus(bus_address=bus_address).connect()
    supervisor = FakeSupervisor()
    iface = await export_control(bus, supervisor)
    try:
        yield Served(bus_address, supervisor, bus, iface)
    finally:
        await unexport_control(bus, iface)
        bus.disconnect()


async def razarctl(address: str, *args: str, env: dict[str, str] | None = None) -> Run:
    """Run the real razarctl console script while this loop keeps serving."""
    proc = await asyncio.create_subprocess_exec(
        RAZARCTL,
        "--bus",
        "user",
        "--address",
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(CLI_DEADLINE):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def test_status_table_shows_every_component_and_its_state(served: Served) -> None:
    """`razarctl status` prints the summary and one row per component with its state."""
    run = await razarctl(served.address, "status")
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == served.supervisor.status()["summary"]
    assert "component" in lines[1] and "last error" in lines[1]
    for name, state in [
        ("netcheck", "healthy"),
        ("gpu-worker", "restarting"),
        ("inference", "quarantined"),
        ("api", "healthy"),
    ]:
        row = next(line for line in lines if line.startswith(name + " "))
        assert state in row and f"razar-{name}.service" in row
    names = [line.split()[0] for line in lines[2:]]
    assert names == ["netcheck", "gpu-worker", "api", "inference"]
    assert "probe http://127.0.0.1:8000/health: timed out" in run.out


async def test_status_reaches_razard_without_asyncio(served: Served) -> None:
    """The real `razarctl status`, with Python's import log on, prints the table having
    imported neither asyncio nor dbus-fast's buses: it calls razard through its blocking
    client (issue 18: razarctl's start-to-exit)."""
    run = await razarctl(served.address, "status", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert run.rc == 0, run.err
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in run.err.splitlines()
        if line.startswith("import time:")
    }
    assert {"razard.controlsync", "dbus_fast.message"} <= imported  # the log is read
    assert sorted(imported & {"asyncio", "ssl", "dbus_fast.aio", "razard.control"}) == []
    assert "gpu-worker" in run.out


async def test_status_json_has_stable_keys_sorted_by_priority(served: Served) -> None:
    """`razarctl status --json` prints the summary and stable component records in order."""
    run = await razarctl(served.address, "status", "--json")
    assert run.rc == 0, run.err
    data = json.loads(run.out)
    assert set(data) == {"summary", "ready", "pid", "version", "components"}
    keys = {
        "name",
        "unit",
        "layer",
        "priority",
        "state",
        "healthy",
        "restarts",
        "quarantined",
        "last_error",
        "since",
    }
    assert all(set(c) == keys for c in data["components"])
    assert [c["name"] for c in data["components"]] == ["netcheck", "gpu-worker", "api", "inference"]
    gpu = data["components"][1]
    assert gpu["state"] == "restarting" and gpu["restarts"] == 3 and gpu["healthy"] is False


async def test_restart_calls_the_supervisor(served: Served) -> None:
    """`razarctl restart x` restarts x in razard and says so."""
    run = await razarctl(served.address, "restart", "gpu-worker")
    assert run.rc == 0, run.err
    assert run.out.strip() == "restarted gpu-worker"
    assert served.supervisor.calls == [("restart", "gpu-worker")]


async def test_stop_then_start_reach_the_supervisor(served: Served) -> None:
    """`stop` and `start` reach razard in order and each prints one line."""
    stop = await razarctl(served.address, "stop", "api")
    start = await razarctl(served.address, "start", "api")
    assert (stop.rc, start.rc) == (0, 0), stop.err + start.err
    assert stop.out.startswith("stopped api") and start.out.strip() == "started api"
    assert served.supervisor.calls == [("stop", "api"), ("start", "api")]


async def test_unknown_component_exits_2_without_traceback(served: Served) -> None:
    """`razarctl restart nope` says the component is unknown, exits 2, shows no traceback."""
    run = await razarctl(served.address, "restart", "nope")
    assert run.rc == 2
    assert run.err.strip() == "razarctl: unknown component 'nope'"
    assert "Traceback" not in run.err and run.out == ""
    assert served.supervisor.calls == []


async def test_release_of_a_component_not_quarantined_fails_clearly(served: Served) -> None:
    """Releasing a component that is not quarantined exits 1 and says why."""
    run = await razarctl(served.address, "quarantine", "release", "api")
    assert run.rc == 1
    assert run.err.strip() == "razarctl: api is not quarantined"
    assert "Traceback" not in run.err


async def test_quarantine_list_then_release(served: Served) -> None:
    """`quarantine list` shows the quarantined component; `release` frees it."""
    listed = await razarctl(served.address, "quarantine", "list")
    assert listed.rc == 0, listed.err
    assert "inference" in listed.out and "ladder exhausted" in listed.out
    as_json = await razarctl(served.address, "quarantine", "list", "--json")
    assert [r["component"] for r in json.loads(as_json.out)] == ["inference"]

    released = await razarctl(served.address, "quarantine", "release", "inference")
    assert released.rc == 0, released.err
    assert released.out.strip() == "released inference from quarantine"
    after = await razarctl(served.address, "quarantine", "list")
    assert after.out.strip() == "no component is quarantined"


async def test_reload_with_invalid_config_shows_every_problem(served: Served) -> None:
    """`razarctl reload` against an invalid config exits 1 and prints each problem."""
    served.supervisor.reload_error = ConfigError(
        [
            ConfigProblem("/etc/razard/razard.toml", "components.api.priority", "expected int"),
            ConfigProblem("/etc/razard/razard.toml", "components.gpu.layer", "unknown layer"),
        ]
    )
    run = await razarctl(served.address, "reload")
    assert run.rc == 1
    assert "razarctl: /etc/razard/razard.toml: components.api.priority: expected int" in run.err
    assert "/etc/razard/razard.toml: components.gpu.layer: unknown layer" in run.err
    assert "Traceback" not in run.err


async def test_reload_succeeds(served: Served) -> None:
    """`razarctl reload` with a valid config reloads and says so."""
    run = await razarctl(served.address, "reload")
    assert (run.rc, run.out.strip()) == (0, "razard reloaded its config")
    assert served.supervisor.calls == [("reload", "")]


async def test_bus_without_razard_says_not_running(bus_address: str) -> None:
    """With the bus up but nobody owning the name, razarctl says razard is not running."""
    run = await razarctl(bus_address, "status")
    assert run.rc == 1
    assert run.err.strip() == (
        "razarctl: razard is not running on the user bus (no owner of org.razar.Supervisor1)"
    )


async def test_missing_bus_socket_is_a_clear_error(tmp_path: Path) -> None:
    """An address whose socket does not exist gives one line naming it, exit 1."""
    address = f"unix:path={tmp_path}/no-such-bus"
    run = await razarctl(address, "status")
    assert run.rc == 1
    assert run.err.strip() == (
        f"razarctl: cannot connect to the user bus at {address}: No such file or directory"
    )
    assert "Traceback" not in run.err


async def test_slow_razard_hits_the_deadline(served: Served) -> None:
    """A call razard does not answer in time fails with the deadline, exit 1."""
    served.supervisor.restart_delay = 5.0
    run = await razarctl(served.address, "--timeout", "0.5", "restart", "api")
    assert run.rc == 1
    assert run.err.startswith("razarctl: razard did not answer Restart within 0.5 s (")


async def test_unexpected_error_is_internal_and_not_leaked(served: Served) -> None:
    """A bug in the supervisor reaches the client as an internal error, without details."""
    served.supervisor.components["crash"] = _component("crash", "crown", 9, "healthy")
    client = await ControlClient.connect("user", served.address)
    try:
        with pytest.raises(ControlError) as caught:
            await client.call(SupervisorControl.restart_component, "crash")
    finally:
        await client.close()
    assert "razard failed internally (RuntimeError)" in str(caught.value)
    assert "secret" not in str(caught.value) and "/opt" not in str(caught.value)


async def test_client_round_trips_status_and_unknown_component(served: Served) -> None:
    """ControlClient returns the status dict and raises UnknownComponent with the name."""
    async with await ControlClient.connect("user", served.address) as client:
        status = await client.call(SupervisorControl.status)
        assert status["version"] == __version__ and len(status["components"]) == 4
        with pytest.raises(UnknownComponent) as caught:
            await client.call(SupervisorControl.stop_component, "nope")
    assert caught.value.name == "nope"


async def test_version_property(served: Served) -> None:
    """The read-only Version property is razard's version."""
    bus = await MessageBus(bus_address=served.address).connect()
    try:
        reply = await bus.call(
            Message(
                destination=BUS_NAME,
                path=OBJECT_PATH,
                interface="org.freedesktop.DBus.Properties",
                member="Get",
                signature="ss",
                body=[INTERFACE, "Version"],
            )
        )
    finally:
        bus.disconnect()
    assert reply.message_type is MessageType.METHOD_RETURN
    assert reply.body[0].value == __version__


async def test_second_razard_on_the_bus_is_refused(served: Served) -> None:
    """export_control on a second connection to the same bus raises ControlError."""
    other = await MessageBus(bus_address=served.address).connect()
    try:
        with pytest.raises(ControlError, match="another razard already owns"):
            await export_control(other, FakeSupervisor())
        # Nothing stays exported on the refused connection.
        with pytest.raises(ControlError, match="another razard already owns"):
            await export_control(other, FakeSupervisor())
    finally:
        other.disconnect()
    # The first razard still answers.
    run = await razarctl(served.address, "status", "--json")
    assert run.rc == 0, run.err


async def test_export_twice_on_one_connection_is_refused(served: Served) -> None:
    """export_control twice on the same connection raises ControlError."""
    with pytest.raises(ControlError, match="already exported"):
        await export_control(served.bus, FakeSupervisor())


async def test_unexport_releases_the_name(served: Served) -> None:
    """After unexport_control the bus has no razard, and another can take the name."""
    await unexport_control(served.bus, served.iface)
    run = await razarctl(served.address, "status")
    assert run.rc == 1 and "razard is not running" in run.err
    served.iface = await export_control(served.bus, served.supervisor)
    run = await razarctl(served.address, "status")
    assert run.rc == 0, run.err


def _fake_journalctl(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "journalctl"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


async def test_logs_runs_journalctl_for_the_component_unit(served: Served, tmp_path: Path) -> None:
    """`razarctl logs x` runs journalctl matching razard's records OR x's unit."""
    run = await razarctl(
        served.address,
        "logs",
        "gpu-worker",
        "-n",
        "50",
        "--since",
        "1h ago",
        "-o",
        "json",
        env=_fake_journalctl(tmp_path),
    )
    assert run.rc == 0, run.err
    argv = run.out.splitlines()
    # "1h ago" reaches journalctl as a fixed UTC instant, never as text it reads as local time
    since = argv[4]
    assert since.startswith("@") and abs(time.time() - 3600 - float(since[1:])) < 120, since
    assert argv == [
        "--no-pager",
        "-o",
        "json",
        "--since",
        since,
        "-n",
        "50",
        "RAZAR_COMPONENT=gpu-worker",
        *uid_matches(),  # razard's records: sent by root (journald's _UID), not forged
        "+",
        "_SYSTEMD_UNIT=razar-gpu-worker.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-gpu-worker.service",
        *uid_matches("_SYSTEMD_OWNER_UID"),
        "+",
        "SYSLOG_IDENTIFIER=razar-gpu-worker",
        *uid_matches(),
    ]


async def test_logs_without_razard_falls_back_to_the_name(bus_address: str, tmp_path: Path) -> None:
    """`razarctl logs x` with razard down says so and matches razard's records only."""
    run = await razarctl(bus_address, "logs", "gpu-worker", env=_fake_journalctl(tmp_path))
    assert run.rc == 0, run.err
    assert "razard is not running" in run.err and "gpu-worker only" in run.err
    assert run.out.splitlines() == [
        "--no-pager",
        "-o",
        "short-iso",
        "RAZAR_COMPONENT=gpu-worker",
        *uid_matches(),
    ]


async def test_logs_of_unknown_component_exits_2(served: Served, tmp_path: Path) -> None:
    """`razarctl logs nope` with razard up says the component is unknown, exit 2."""
    run = await razarctl(served.address, "logs", "nope", env=_fake_journalctl(tmp_path))
    assert run.rc == 2 and run.out == ""
    assert run.err.strip() == "razarctl: unknown component 'nope'"


# Like the production policy in spirit: anyone may own and call, except that
# Restart on razard's interface is refused to everybody.
RESTRICTED_POLICY = """<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
    <deny send_destination="org.razar.Supervisor1" send_interface="org.razar.Supervisor1"
          send_member="Restart"/>
  </policy>
</busconfig>
"""


async def test_call_refused_by_bus_policy_says_permission_denied(tmp_path: Path) -> None:
    """A call the bus policy refuses tells the operator to run as root or group razar."""
    config = tmp_path / "bus.conf"
    config.write_text(RESTRICTED_POLICY.format(socket=tmp_path / "bus"))
    proc, address = start_dbus_daemon(tmp_path, config)
    try:
        bus = await MessageBus(bus_address=address).connect()
        supervisor = FakeSupervisor()
        iface = await export_control(bus, supervisor)
        try:
            refused = await razarctl(address, "restart", "api")
            allowed = await razarctl(address, "stop", "api")
        finally:
            await unexport_control(bus, iface)
            bus.disconnect()
    finally:
        stop_dbus_daemon(proc)
    assert refused.rc == 1
    assert refused.err.strip() == (
        "razarctl: permission denied: the user bus refused Restart; "
        "run as root or a member of group razar"
    )
    assert allowed.rc == 0, allowed.err
    assert supervisor.calls == [("stop", "api")]


# --- repairs: ladder, patches, diff, rollback, heal ------------------------------


async def test_ladder_table_shows_roster_in_order_and_thresholds(served: Served) -> None:
    """`razarctl ladder` lists the rungs in order with configured/skip/attempts, then thresholds."""
    run = await razarctl(served.address, "ladder")
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    header = lines[0]
    for column in ("agent", "kind", "configured", "skip reason", "max attempts", "takes over"):
        assert column in header
    rows = lines[1:5]
    assert [row.split()[0] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0].split()[1:4] == ["registry", "registry", "yes"]
    assert "K2 Coder" in rows[2] and " no " in rows[2] and "KIMI_K2_URL is not set" in rows[2]
    assert "rStar" in rows[3] and rows[3].rstrip().endswith("after 9 attempts")
    assert lines[5] == (
        "rStar threshold 9 attempts; escalation warning after 3 escalations; "
        "remote attempts 5; long task off"
    )
    assert lines[6] == "restart attempts before the ladder: api 5, gpu-worker 2"


async def test_ladder_says_when_thresholds_are_off(served: Served) -> None:
    """rStar 0, no warning threshold and no remote bound read as disabled, off, unbounded."""
    served.supervisor.ladder_state.update(
        thresholds={"rstar": 0, "escalation_warning": None},
        remote_attempts=None,
        long_task=True,
        restart_attempts={},
    )
    run = await razarctl(served.address, "ladder")
    assert run.rc == 0, run.err
    assert run.out.splitlines()[-1] == (
        "rStar disabled; escalation warning off; remote attempts unbounded; long task on"
    )


async def test_ladder_json_is_razards_dict(served: Served) -> None:
    """`razarctl ladder --json` prints razard's ladder as parseable JSON."""
    run = await razarctl(served.address, "ladder", "--json")
    assert run.rc == 0, run.err
    assert json.loads(run.out) == _ladder()


async def test_patches_table_lists_every_record(served: Served) -> None:
    """`razarctl patches api` shows time, id, agent, status, files and reason, oldest first."""
    run = await razarctl(served.address, "patches", "api")
    assert run.rc == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["time", "patch", "agent", "status", "files", "reason"]
    refused, applied, kept = lines[1:4]
    assert refused.split()[2:6] == [REFUSED_ID, "Crown", "refused", "/etc/passwd"]
    assert "absolute paths are not allowed" in refused
    assert applied.split()[2:6] == [PATCH_ID, "registry", "applied", "app.sh"]
    assert kept.split()[2:6] == [PATCH_ID, "registry", "kept", "app.sh"]
    assert "None" not in run.out


async def test_patches_json_and_empty_list(served: Served) -> None:
    """`patches --json` parses to the records; a component without any says so."""
    as_json = await razarctl(served.address, "patches", "api", "--json")
    assert as_json.rc == 0, as_json.err
    assert json.loads(as_json.out) == _patch_records()
    empty = await razarctl(served.address, "patches", "netcheck")
    assert (empty.rc, empty.out.strip()) == (0, "no patch records for netcheck")


async def test_patches_of_unknown_component_exits_2(served: Served) -> None:
    """`razarctl patches nope` says the component is unknown and exits 2."""
    run = await razarctl(served.address, "patches", "nope")
    assert run.rc == 2 and run.out == ""
    assert run.err.strip() == "razarctl: unknown component 'nope'"


async def test_diff_prints_the_stored_text(served: Served) -> None:
    """`razarctl diff api [PATCH]` prints the diff exactly, without colour when piped."""
    latest = await razarctl(served.address, "diff", "api")
    named = await razarctl(served.address, "diff", "api", PATCH_ID)
    assert (latest.rc, named.rc) == (0, 0), latest.err + named.err
    assert latest.out == DIFF and named.out == DIFF
    assert "\x1b[" not in latest.out


async def test_diff_without_patch_is_a_clear_error(served: Served) -> None:
    """A RepairError from razard (no patch applied) reaches the operator as its message, exit 1."""
    none_applied = await razarctl(served.address, "diff", "netcheck")
    assert none_applied.rc == 1
    assert none_applied.err.strip() == "razarctl: netcheck: no patch has been applied"
    missing = await razarctl(served.address, "diff", "api", REFUSED_ID)
    assert missing.rc == 1
    assert missing.err.strip() == f"razarctl: api: no diff stored for patch {REFUSED_ID}"


async def test_rollback_through_razard_prints_the_reverted_record(served: Served) -> None:
    """`razarctl rollback api` asks razard, then names the reverted patch and its files."""
    run = await razarctl(served.address, "rollback", "api", "--to", PATCH_ID)
    assert run.rc == 0, run.err
    assert run.out.splitlines() == [
        f"rolled back api: reverted patch {PATCH_ID}; files: app.sh",
        "razard restarted api",
    ]
    served.supervisor.components["api"]["quarantined"] = True
    again = await razarctl(served.address, "rollback", "api")
    assert again.rc == 0, again.err
    assert again.out.splitlines()[1] == (
        "razard did not restart api (it is quarantined): "
        "`razarctl quarantine release api` starts it"
    )
    assert served.supervisor.calls == [("rollback", f"api {PATCH_ID}"), ("rollback", "api")]


async def test_rollback_with_nothing_to_roll_back_exits_1(served: Served) -> None:
    """With no kept patch, rollback exits 1 with razard's message and changes nothing."""
    run = await razarctl(served.address, "rollback", "netcheck")
    assert run.rc == 1 and run.out == ""
    assert run.err.strip() == "razarctl: netcheck: nothing to roll back (no kept patch)"
    assert served.supervisor.calls == []


async def test_heal_healed_exits_0_and_passes_the_options(served: Served) -> None:
    """`razarctl heal` prints who healed it with which patch, exit 0; options reach razard."""
    run = await razarctl(served.address, "heal", "api", "--retries", "2", "--remote-attempts", "0")
    assert run.rc == 0, run.err
    assert run.out.strip() == f"api: healed by registry (patch {PATCH_ID})"
    plain = await razarctl(served.address, "heal", "gpu-worker")
    assert plain.rc == 0, plain.err
    assert served.supervisor.heal_calls == [("api", False, 2, 0), ("gpu-worker", False, None, None)]


async def test_heal_not_healed_exits_1(served: Served) -> None:
    """When the ladder does not heal the component, heal says after how many attempts, exit 1."""
    served.supervisor.heal_outcome = {
        "healed": False,
        "attempts": 7,
        "agent": None,
        "patch_id": None,
    }
    run = await razarctl(served.address, "heal", "api", "--long-task")
    assert run.rc == 1
    assert run.out.strip() == "api: not healed after 7 attempts"
    assert served.supervisor.heal_calls == [("api", True, None, None)]


async def test_heal_of_unknown_component_exits_2(served: Served) -> None:
    """`razarctl heal nope` exits 2 naming the component."""
    run = await razarctl(served.address, "heal", "nope")
    assert run.rc == 2
    assert run.err.strip() == "razarctl: unknown component 'nope'"


def _sigint_as_at_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_heal_ctrl_c_exits_130_and_leaves_razard_working(served: Served) -> None:
    """Ctrl+C during `heal --long-task` exits 130 and says razard goes on; no traceback."""
    served.supervisor.heal_forever = True
    proc = await asyncio.create_subprocess_exec(
        RAZARCTL,
        "--bus",
        "user",
        "--address",
        served.address,
        "heal",
        "api",
        "--long-task",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # as at a terminal: a test run started in the background (a non-interactive
        # shell's `&`) ignores SIGINT, and its children would inherit that
        preexec_fn=_sigint_as_at_a_terminal,
    )
    async with asyncio.timeout(CLI_DEADLINE):
        await served.supervisor.heal_called.wait()
        proc.send_signal(signal.SIGINT)
        out, err = await proc.communicate()
    assert proc.returncode == 130
    assert "interrupted; razard goes on healing api" in err.decode()
    assert "Traceback" not in err.decode() and out == b""


async def test_heal_deadline_from_timeout(served: Served) -> None:
    """An explicit --timeout bounds heal's wait; razard is not interrupted by it."""
    served.supervisor.heal_forever = True
    run = await razarctl(served.address, "--timeout", "0.5", "heal", "api")
    assert run.rc == 1
    assert run.err.startswith("razarctl: razard did not answer Heal within 0.5 s (")


async def test_heal_refuses_negative_counts_on_the_bus(served: Served) -> None:
    """Heal with a count below -1 is refused as Failed; -1 means not given."""
    bus = await MessageBus(bus_address=served.address).connect()
    try:
        reply = await bus.call(
            Message(
                destination=BUS_NAME,
                path=OBJECT_PATH,
                interface=INTERFACE,
                member="Heal",
                signature="sbii",
                body=["api", False, -2, -1],
            )
        )
    finally:
        bus.disconnect()
    assert reply.message_type is MessageType.ERROR
    assert reply.error_name == "org.razar.Error.Failed"
    assert "retries must be 0 or more" in reply.body[0]
    assert served.supervisor.heal_calls == []


async def test_client_round_trips_repair_calls(served: Served) -> None:
    """ControlClient's ladder, patches, diff, rollback and heal return razard's values."""
    async with await ControlClient.connect("user", served.address) as client:
        assert (await client.call(SupervisorControl.ladder))["thresholds"]["rstar"] == 9
        assert [r["status"] for r in await client.call(SupervisorControl.patches, "api")] == [
            "refused",
            "applied",
            "kept",
        ]
        assert await client.call(SupervisorControl.diff, "api", None) == DIFF
        record = await client.call(SupervisorControl.rollback, "api", None)
        assert (record["status"], record["by"]) == ("reverted", "operator")
        assert (await client.call(SupervisorControl.heal, "api", False, 1, None))["healed"] is True
        with pytest.raises(UnknownComponent):
            await client.call(SupervisorControl.rollback, "nope", None)
    assert served.supervisor.heal_calls == [("api", False, 1, None)]


#: The interface as razarctl, the shipped D-Bus policy and any other caller know it:
#: member -> (argument names and signatures, reply signature). The methods are made
#: from razard.control.SupervisorControl; this pins what they must stay.
INTERFACE_CONTRACT = {
    "Status": ([], "s"),
    "Start": ([("name", "s")], ""),
    "Stop": ([("name", "s")], ""),
    "Restart": ([("name", "s")], ""),
    "QuarantineList": ([], "s"),
    "QuarantineRelease": ([("name", "s")], ""),
    "Reload": ([], ""),
    "Ladder": ([], "s"),
    "Patches": ([("name", "s")], "s"),
    "Diff": ([("name", "s"), ("patch_id", "s")], "s"),
    "Rollback": ([("name", "s"), ("to", "s")], "s"),
    "Heal": (
        [("name", "s"), ("long_task", "b"), ("retries", "i"), ("remote_attempts", "i")],
        "s",
    ),
    "Chakra": ([], "s"),
    "HealLayer": ([("layer", "s"), ("dry_run", "b")], "s"),
}


async def test_introspection_shows_every_method_with_its_signature(served: Served) -> None:
    """Introspect on the bus lists each control method with today's names and signatures."""
    bus = await MessageBus(bus_address=served.address).connect()
    try:
        node = await bus.introspect(BUS_NAME, OBJECT_PATH)
    finally:
        bus.disconnect()
    iface = next(i for i in node.interfaces if i.name == INTERFACE)
    seen = {
        m.name: (
            [(a.name, str(a.signature)) for a in m.in_args],
            "".join(str(a.signature) for a in m.out_args),
        )
        for m in iface.methods
    }
    assert seen == INTERFACE_CONTRACT
    assert [(p.name, p.signature, p.access.value) for p in iface.properties] == [
        ("Version", "s", "read")
    ]

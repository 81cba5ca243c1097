"""The ladder run in the test's own process against the session's real systemd user manager.

No razard subprocess and no razarctl: a `Supervisor` with its `Runner`s is built here
on a `Systemd` connected to the user manager (as `test_storm_bus.py` drives
`Systemd`), the components are real units, and what is asserted is what an operator
sees: the unit's ``ActiveState``/``MainPID`` from ``systemctl show``, the state file,
the quarantine file, ``razar.log`` and the journal (this process's own entries,
selected by the trusted ``_PID`` field).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from razard.config import ComponentConfig, Config, load_config
from razard.journal import EventLog
from razard.layout import LOG_FILE, STATE_FILE
from razard.metrics import Metrics
from razard.runner import EscalationRung, Failure, RungOutcome
from razard.supervisor import Supervisor
from razard.systemd import Systemd
from razard.usermanager import UserManager
from tests.integration.harness import py, script

pytestmark = pytest.mark.integration

#: restarts without waiting long: the backoff doubles from 0.05 s, never above 0.2 s
FAST = "backoff_base = 0.05, backoff_cap = 0.2, jitter = 0.0"


async def until(pred: Callable[[], Any], within: float, what: str) -> Any:
    """Poll ``pred`` (tests only) while the event loop runs the supervisor."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: Any = None
    while loop.time() < deadline:
        last = pred()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within}s waiting for {what}; last value: {last!r}")


@dataclass
class InProcess:
    """A supervisor running in this process, and what an operator can read of it."""

    um: UserManager
    sup: Supervisor
    state_dir: Path

    def record(self, name: str) -> dict[str, Any]:
        """The component's record as razard holds it now (what ``razarctl status`` reports
        and the next state write saves), in the state file's form."""
        runner = self.sup.runners.get(name)
        return json.loads(json.dumps(runner.rec.to_json())) if runner is not None else {}

    def saved(self, name: str) -> dict[str, Any]:
        """The component's record in ``razar_state.json`` as written (empty: none yet).
        Starting and healthy are written lazily; what the ladder counts is written at once."""
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return {}
        comps: dict[str, dict[str, Any]] = json.loads(path.read_text())["components"]
        return comps.get(name, {})

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        """``razar.log`` lines about ``name`` (of kind ``event``, when given)."""
        path = self.state_dir / LOG_FILE
        lines = path.read_text().splitlines() if path.exists() else []
        recs = [json.loads(line) for line in lines if line.strip()]
        return [
            r
            for r in recs
            if r.get("component") == name and (event is None or r.get("event") == event)
        ]

    def unit(self, name: str) -> dict[str, str]:
        """``ActiveState`` and ``MainPID`` of the component's unit, as systemctl shows them."""
        out = self.um.systemctl(
            "show", "-p", "ActiveState", "-p", "MainPID", f"razar-{name}.service"
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(event: str, name: str) -> list[dict[str, str]]:
    """This process's journal entries of ``event`` about ``name`` (``_PID`` is journald's
    own field: nobody else's entry can match it)."""
    p = subprocess.run(
        [
            "journalctl",
            "--no-pager",
            "-o",
            "json",
            f"_PID={os.getpid()}",
            f"RAZAR_EVENT={event}",
            f"RAZAR_COMPONENT={name}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def write_config(um: UserManager, base: Path, components: str) -> Config:
    """razard.toml for ``components`` on the user manager, its state directory in ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    state_dir = base / "state"
    path = base / "razard.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [razard]
        state_dir = "{state_dir}"
        bus = "user"
        metrics_port = 0
        unit_dir = "{um.unit_dir}"
        """)
        + textwrap.dedent(components)
    )
    state_dir.mkdir(exist_ok=True)
    return load_config(path)


@contextlib.asynccontextmanager
async def supervising(
    um: UserManager,
    base: Path,
    components: str,
    rungs: Sequence[EscalationRung] = (),
) -> AsyncIterator[InProcess]:
    """Boot ``components`` under a Supervisor in this process; afterwards stop supervising
    (units keep running, as when razard stops; the `names` fixture removes them)."""
    config = write_config(um, base, components)
    state_dir = config.daemon.state_dir
    sd = Systemd(bus="user", address=um.bus_address)
    await sd.connect()
    sup = Supervisor(
        config,
        sd,
        EventLog(state_dir / LOG_FILE),
        Metrics("test"),
        rungs=rungs,
        rng=random.Random(0),
    )
    connection = asyncio.create_task(sd.run())
    boot: asyncio.Task[None] | None = None
    try:
        await sup.start()
        boot = asyncio.create_task(sup.boot())
        yield InProcess(um, sup, state_dir)
    finally:
        if boot is not None:
            boot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await boot
        await sup.shutdown()
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection
        await sd.close()


def cleanup(um: UserManager, names: Sequence[str]) -> None:
    for n in names:
        unit = f"razar-{n}.service"
        um.systemctl("stop", unit, check=False)
        um.systemctl("reset-failed", unit, check=False)
        (um.unit_dir / unit).unlink(missing_ok=True)
    um.systemctl("daemon-reload", check=False)


@pytest.fixture
def names(user_manager: UserManager) -> Iterator[Callable[[str], str]]:
    """Unique component names for this test; their units are removed afterwards."""
    made: list[str] = []

    def make(stem: str) -> str:
        made.append(f"{stem}-{uuid.uuid4().hex[:6]}")
        return made[-1]

    yield make
    cleanup(user_manager, made)


def component(name: str, command: str, restart: str, layer: str = "heart") -> str:
    return f"""
        [[component]]
        name = "{name}"
        layer = "{layer}"
        priority = 10
        command = ["{py()}", "{command}"]
        restart = {{ {restart} }}
        """


def failing_until(tmp_path: Path, marker: Path, code: int) -> Path:
    """A component that exits ``code`` (saying why on stderr) until ``marker`` exists."""
    return script(
        tmp_path / f"until-{code}.py",
        f"""\
        import pathlib, sys, time
        if not pathlib.Path("{marker}").exists():
            print("fatal: shard corrupt", file=sys.stderr); sys.exit({code})
        time.sleep(100000)
        """,
    )


@dataclass
class MarkerRung:
    """An escalation rung that fixes the component by creating the file it needs, then
    verifies through the runner (a real restart of the real unit)."""

    marker: Path
    name: str = "marker fixer"
    restarts_unit: bool = True
    applicable: bool = True
    seen: list[Failure] = field(default_factory=list)
    fixed: dict[str, bool] = field(default_factory=dict)

    async def attempt(
        self, component: ComponentConfig, failure: Failure, verify: Callable[[], Awaitable[bool]]
    ) -> bool:
        self.seen.append(failure)
        if not self.applicable:
            return False
        self.marker.write_text("fixed")
        self.fixed[component.name] = await verify()
        return self.fixed[component.name]

    def outcome(self, component: str) -> tuple[RungOutcome, str]:
        if not self.applicable:
            return "not_applicable", "no marker to write here"
        return ("fixed", "") if self.fixed.get(component) else ("failed", "")

    def records(self, component: str) -> list[dict[str, Any]]:
        return [{"error": f.error} for f in self.seen if f.component == component]


def _delays(events: list[dict[str, Any]]) -> list[float]:
    return [
        float(m.group(1))
        for e in events
        if (m := re.search(r" in (\d+\.\d+)s$", e["message"])) is not None
    ]


async def test_a_crash_loop_is_restarted_with_backoff_then_quarantined(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """Two restarts, each after a longer backoff, then quarantine: the unit stopped, the
    quarantine file and state file say why, and the operator is alerted in the journal."""
    name = names("ip-loop")
    s = failing_until(tmp_path, tmp_path / "never", 4)
    async with supervising(
        user_manager, tmp_path, component(name, str(s), f"attempts = 2, {FAST}")
    ) as run:
        await until(lambda: run.record(name).get("status") == "quarantined", 30, "quarantine")

        assert run.unit(name)["ActiveState"] in ("inactive", "failed")
        assert run.unit(name)["MainPID"] == "0"
        rec = run.saved(name)  # a quarantine is written at once, before razard acts
        assert rec["status"] == "quarantined"
        assert rec["restarts_total"] == 2 and "status=4" in rec["last_error"]
        failed = run.events(name, "component_failed")
        assert [e["rung"] for e in failed] == ["restart", "restart", "quarantine"]
        delays = _delays(run.events(name, "state_restarting"))
        assert len(delays) == 2 and 0 < delays[0] < delays[1], delays
        qfile = json.loads((run.state_dir / "quarantine" / f"{name}.json").read_text())
        assert qfile["attempts"] == 2 and "status=4" in qfile["last_error"]
        alerts = await until(lambda: journal("operator_alert", name), 10, "the alert in journal")
        assert f"razarctl quarantine release {name}" in alerts[-1]["MESSAGE"]
        assert alerts[-1]["PRIORITY"] == "1"  # LOG_ALERT


async def test_a_verified_rung_ends_the_failure_cycle(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """The restart budget spent, the rung gets the typed failure, fixes the cause and
    verifies with a real restart: the component is healthy with a new process, the
    counters are reset, and its next death starts a new cycle with a restart again."""
    name = names("ip-rung")
    marker = tmp_path / "marker"
    s = failing_until(tmp_path, marker, 5)
    rung = MarkerRung(marker)
    async with supervising(
        user_manager, tmp_path, component(name, str(s), f"attempts = 1, {FAST}"), [rung]
    ) as run:
        await until(
            lambda: (
                run.events(name, "escalation_result")
                and run.record(name).get("status") == "healthy"
            ),
            30,
            "the rung's fix verified and the component healthy",
        )

        [failure] = rung.seen
        assert failure.component == name and failure.kind == "exit"
        assert "status=5" in failure.error and failure.cycle_started is not None
        assert run.events(name, "escalation_result")[-1]["outcome"] == "fixed"
        rec = run.record(name)
        assert (rec["restarts"], rec["escalations"], rec["restarts_total"]) == (0, 0, 1)
        unit = run.unit(name)
        assert unit["ActiveState"] == "active" and int(unit["MainPID"]) > 0
        assert not (run.state_dir / "quarantine" / f"{name}.json").exists()

        # a new cycle: the next death is restarted (budget 1 again), not escalated
        before = int(unit["MainPID"])
        user_manager.systemctl("kill", "--signal=SIGKILL", f"razar-{name}.service")
        await until(
            lambda: (
                int(run.unit(name)["MainPID"]) not in (0, before)
                and run.record(name).get("status") == "healthy"
                and run.record(name).get("restarts_total") == 2
            ),
            30,
            "the killed unit restarted with a new process",
        )
        rungs = [e["rung"] for e in run.events(name, "component_failed")]
        assert rungs == ["restart", "escalate", "restart"], rungs
        assert len(rung.seen) == 1


async def test_an_inapplicable_rung_is_not_a_failed_one_in_the_quarantine(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """A rung that could not apply is named as such in the quarantine reason, and its
    records are in the quarantine file's ladder."""
    name = names("ip-na")
    s = failing_until(tmp_path, tmp_path / "never", 6)
    rung = MarkerRung(tmp_path / "unused", applicable=False)
    async with supervising(
        user_manager, tmp_path, component(name, str(s), f"attempts = 1, {FAST}"), [rung]
    ) as run:
        await until(lambda: run.record(name).get("status") == "quarantined", 30, "quarantine")

        qfile = json.loads((run.state_dir / "quarantine" / f"{name}.json").read_text())
        assert "not applicable here: marker fixer (no marker to write here)" in qfile["reason"]
        [entry] = [e for e in qfile["ladder"] if e.get("rung") == "marker fixer"]
        assert entry["outcome"] == "not_applicable"
        assert entry["attempts"] == [{"error": rung.seen[0].error}]
        assert not (tmp_path / "unused").exists()
        assert run.unit(name)["ActiveState"] in ("inactive", "failed")


async def test_each_restart_is_on_disk_before_its_process_starts(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """With no backoff at all, each restart is counted in the state file before the
    StartUnit that carries it out reaches systemd: every start of the component reads
    the file and finds its own restart already there (a razard killed at any moment
    after the start has it saved)."""
    name = names("ip-durable")
    state = tmp_path / "state" / STATE_FILE
    seen = tmp_path / "seen"
    s = script(
        tmp_path / "durable.py",
        f"""\
        import json, pathlib, sys, time
        seen = pathlib.Path("{seen}")
        try:
            rec = json.loads(pathlib.Path("{state}").read_text())["components"]["{name}"]
            n = rec["restarts_total"]
        except (OSError, ValueError, KeyError):
            n = -1
        with seen.open("a") as f:
            f.write(f"{{n}}\\n")
        if len(seen.read_text().split()) <= 3:
            sys.exit(9)
        time.sleep(100000)
        """,
    )
    zero = "attempts = 5, backoff_base = 0.0, backoff_cap = 0.0, jitter = 0.0"
    async with supervising(user_manager, tmp_path, component(name, str(s), zero)) as run:
        await until(lambda: run.record(name).get("status") == "healthy", 30, "healthy")
        # written down after the call (a restart without backoff), still in their order
        said = [
            e
            for e in run.events(name)
            if e["event"] in ("component_failed", "state_restarting", "state_starting")
        ]
    assert [e["event"] for e in said] == ["state_starting"] + [
        "component_failed",
        "state_restarting",
        "state_starting",
    ] * 3, [e["event"] for e in said]
    assert [e["restarts"] for e in said if e["event"] == "state_restarting"] == [1, 2, 3]
    starts = [int(x) for x in seen.read_text().split()]
    # the first start may come before any save; start k (k >= 2) is restart k - 1
    assert len(starts) == 4, starts
    assert starts[1:] == [1, 2, 3], starts


async def test_a_second_supervisor_adopts_the_running_unit(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """Stopping supervision leaves the unit running; the next supervisor on the same state
    directory adopts it without a restart (same MainPID), and still heals it."""
    name = names("ip-adopt")
    marker = tmp_path / "marker"
    marker.write_text("ok")
    s = failing_until(tmp_path, marker, 7)
    comps = component(name, str(s), f"attempts = 3, {FAST}", layer="crown")
    async with supervising(user_manager, tmp_path, comps) as run:
        await until(lambda: run.record(name).get("status") == "healthy", 30, "healthy")
        pid = int(run.unit(name)["MainPID"])
    assert run.unit(name)["ActiveState"] == "active"  # razard stopping leaves units running

    async with supervising(user_manager, tmp_path, comps) as run:
        adopted = await until(lambda: run.events(name, "component_adopted"), 30, "adoption")
        assert str(pid) in adopted[-1]["message"]
        assert int(run.unit(name)["MainPID"]) == pid
        os.kill(pid, signal.SIGKILL)
        await until(
            lambda: (
                int(run.unit(name)["MainPID"]) not in (0, pid)
                and run.record(name).get("status") == "healthy"
            ),
            30,
            "the adopted unit healed after a kill",
        )


async def test_a_unit_held_by_a_healer_is_not_a_failure_until_the_hold_ends(
    user_manager: UserManager, journald: object, tmp_path: Path, names: Callable[[str], str]
) -> None:
    """While a healer holds a unit its death is not a failure (the healer is acting on it);
    once the hold ends, a unit still down is one, and it is restarted."""
    name = names("ip-hold")
    unit = f"razar-{name}.service"
    marker = tmp_path / "marker"
    marker.write_text("ok")
    s = failing_until(tmp_path, marker, 8)
    comps = component(name, str(s), f"attempts = 3, {FAST}", layer="crown")
    async with supervising(user_manager, tmp_path, comps) as run:
        await until(lambda: run.record(name).get("status") == "healthy", 30, "healthy")
        pid = int(run.unit(name)["MainPID"])
        async with run.sup.components.hold([unit]) as held:
            user_manager.systemctl("kill", "--signal=SIGKILL", unit)
            # the runner saw the death: the cache and the runner are told by the same signal
            await until(
                lambda: (st := run.sup.systemd.cached(unit)) is not None and st.dead,
                10,
                "the death seen over D-Bus",
            )
            assert run.events(name, "component_failed") == []
            assert run.record(name)["status"] == "healthy"
            assert run.unit(name)["MainPID"] == "0"
            assert unit in held
        await until(
            lambda: (
                int(run.unit(name)["MainPID"]) not in (0, pid)
                and run.record(name).get("status") == "healthy"
            ),
            30,
            "the unit restarted once the hold ended",
        )
        assert [e["rung"] for e in run.events(name, "component_failed")] == ["restart"]

"""razard against a real systemd user manager, D-Bus and journald, driven through razarctl."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from razard.usermanager import UserManager
from tests.integration.conftest import Factory
from tests.integration.harness import BIN, Razard, free_port, py, script, wait_for

pytestmark = pytest.mark.integration


def sleeper(name: str, priority: int = 10, extra: str = "") -> str:
    return f"""
        [[component]]
        name = "{name}"
        layer = "crown"
        priority = {priority}
        command = ["/bin/sleep", "100000"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5 }}
        {extra}
        """


def test_crash_once_is_restarted_and_healthy(razard: Factory, tmp_path: Path) -> None:
    """A component that crashes on its first start is restarted and ends healthy."""
    marker = tmp_path / "crashed"
    s = script(
        tmp_path / "once.py",
        f"""\
        import pathlib, sys, time
        m = pathlib.Path("{marker}")
        if not m.exists():
            m.write_text("x"); print("boom: first start fails", file=sys.stderr); sys.exit(3)
        time.sleep(100000)
        """,
    )
    r = razard(f"""
        [[component]]
        name = "it-once"
        layer = "third_eye"
        priority = 10
        command = ["{py()}", "{s}"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5, jitter = 0.0 }}
        """)
    r.start()
    c = r.wait_state("it-once", "healthy")
    assert c["restarts"] == 1
    failed = [e for e in r.events("it-once") if e["event"] == "component_failed"]
    assert failed and "status=3" in failed[0]["message"]


def test_crash_loop_is_quarantined_then_released(razard: Factory, tmp_path: Path) -> None:
    """A crash loop spends its budget, is quarantined with a file and log row, and is released."""
    broken = tmp_path / "broken"
    broken.write_text("yes")
    s = script(
        tmp_path / "loop.py",
        f"""\
        import pathlib, sys, time
        if pathlib.Path("{broken}").exists():
            print("fatal: shard corrupt", file=sys.stderr); sys.exit(4)
        time.sleep(100000)
        """,
    )
    r = razard(f"""
        [[component]]
        name = "it-loop"
        layer = "heart"
        priority = 10
        command = ["{py()}", "{s}"]
        restart = {{ attempts = 2, backoff_base = 0.05, backoff_cap = 0.2 }}
        """)
    r.start()
    c = r.wait_state("it-loop", "quarantined")
    assert c["quarantined"] is True and c["healthy"] is False
    qfile = r.state_dir / "quarantine" / "it-loop.json"
    record = json.loads(qfile.read_text())
    assert record["component"] == "it-loop" and record["attempts"] == 2
    assert "status=4" in (record["last_error"] or "")
    assert "| it-loop | quarantined |" in (r.state_dir / "quarantine_log.md").read_text()
    # the unit is stopped while quarantined
    assert r.um.systemctl("is-active", "razar-it-loop.service", check=False).stdout.strip() in (
        "inactive",
        "failed",
    )
    listed = json.loads(r.ctl("quarantine", "list", "--json").stdout)
    assert [q["component"] for q in listed] == ["it-loop"]

    broken.unlink()  # the operator fixes the cause, then releases
    out = r.ctl("quarantine", "release", "it-loop").stdout
    assert "it-loop" in out
    c = r.wait_state("it-loop", "healthy")
    assert not qfile.exists()
    assert "| it-loop | released |" in (r.state_dir / "quarantine_log.md").read_text()


def test_quarantine_survives_restart_until_file_deleted(razard: Factory, tmp_path: Path) -> None:
    """--retries caps the budget; a quarantined component stays down across razard restarts
    and deleting quarantine/<name>.json by hand releases it (watched, not polled)."""
    broken = tmp_path / "broken"
    broken.write_text("yes")
    s = script(
        tmp_path / "loop.sh",
        f"""\
        #!/bin/sh
        [ -e {broken} ] && exit 5
        exec sleep 100000
        """,
    )
    r = razard(
        f"""
        [[component]]
        name = "it-del"
        layer = "heart"
        priority = 10
        command = ["{s}"]
        restart = {{ attempts = 50, backoff_base = 0.05, backoff_cap = 0.1 }}
        """
    )
    r.start("--retries", "1")
    c = r.wait_state("it-del", "quarantined")
    assert c["restarts"] == 1
    r.stop()
    r.start("--retries", "1")
    assert r.component("it-del")["state"] == "quarantined"
    starts = [e for e in r.events("it-del") if e["event"] == "state_starting"]
    assert len(starts) == 2  # the first start and the one restart; none after razard restarted
    assert r.um.systemctl("is-active", "razar-it-del.service", check=False).stdout.strip() != (
        "active"
    )
    broken.unlink()
    (r.state_dir / "quarantine" / "it-del.json").unlink()
    r.wait_state("it-del", "healthy")
    assert any(e["event"] == "quarantine_released" for e in r.events("it-del"))


def test_hung_probe_counts_as_failure(razard: Factory) -> None:
    """A probe that hangs past its timeout is a failed probe and leads to restarts."""
    r = razard(
        sleeper(
            "it-hang",
            extra="""
        start_timeout = 1.5
        probe = { type = "exec", command = ["/bin/sleep", "30"], timeout = 0.3, interval = 0.2 }
        """,
        )
    )
    r.start()
    c = wait_for(
        lambda: (c := r.component("it-hang"))["restarts"] >= 1 and c,
        30,
        "a restart caused by the hung probe",
    )
    assert "timed out" in (c["last_error"] or "")
    assert c["healthy"] is False


def test_kill_is_seen_and_restarted(razard: Factory) -> None:
    """SIGKILL to a component's process is reported with the signal and the unit restarted."""
    r = razard(sleeper("it-kill"))
    r.start()
    r.wait_state("it-kill", "healthy")
    pid = r.main_pid("razar-it-kill.service")
    r.um.systemctl("kill", "-s", "KILL", "razar-it-kill.service")
    wait_for(lambda: r.main_pid("razar-it-kill.service") not in (0, pid), 20, "a new main pid")
    c = r.wait_state("it-kill", "healthy")
    assert c["restarts"] == 1
    failed = [e for e in r.events("it-kill") if e["event"] == "component_failed"]
    assert "signal=9" in failed[-1]["message"]


def test_sigkilled_razard_adopts_running_units(razard: Factory) -> None:
    """razard killed with SIGKILL and started again adopts running units without restarting."""
    r = razard(sleeper("it-adopt-a", 10) + sleeper("it-adopt-b", 20))
    r.start()
    r.wait_state("it-adopt-b", "healthy")
    pids = {u: r.main_pid(f"razar-{u}.service") for u in ("it-adopt-a", "it-adopt-b")}
    assert r.stop(signal.SIGKILL) == -signal.SIGKILL
    r.start()
    for name in pids:
        r.wait_state(name, "healthy")
    assert {u: r.main_pid(f"razar-{u}.service") for u in pids} == pids
    adopted = [e for e in r.events() if e["event"] == "component_adopted"]
    assert {e["component"] for e in adopted} == set(pids)
    assert all(r.component(n)["restarts"] == 0 for n in pids)


def test_restart_counts_survive_razard_restart(razard: Factory, tmp_path: Path) -> None:
    """Attempts keep counting where they left off after razard restarts."""
    s = script(tmp_path / "die.sh", "#!/bin/sh\nexit 7\n")
    r = razard(f"""
        [[component]]
        name = "it-count"
        layer = "root"
        priority = 10
        command = ["{s}"]
        restart = {{ attempts = 4, backoff_base = 1.0, backoff_cap = 1.0, jitter = 0.0 }}
        """)
    r.start(wait_ready=False)
    wait_for(
        lambda: (
            (r.status(check=False) or {}).get("components")
            and r.component("it-count")["restarts"] >= 2
        ),
        30,
        "two restarts",
    )
    r.stop(signal.SIGKILL)
    before = json.loads((r.state_dir / "razar_state.json").read_text())
    spent = before["components"]["it-count"]["restarts"]
    assert spent >= 2
    r.start()
    c = r.wait_state("it-count", "quarantined", 30)
    q = json.loads((r.state_dir / "quarantine" / "it-count.json").read_text())
    assert q["attempts"] == 4
    assert c["restarts"] == 4  # 4 in all, not 4 more after the restart


def test_razarctl_drives_razard_over_dbus(razard: Factory) -> None:
    """razarctl status/stop/start/restart work over D-Bus; unknown names are clear errors."""
    r = razard(sleeper("it-ctl"))
    r.start()
    r.wait_state("it-ctl", "healthy")
    table = r.ctl("status").stdout
    assert "it-ctl" in table and "healthy" in table and "razar-it-ctl.service" in table
    # the harness polls razard's Status method in process: what razarctl prints, no less
    assert r.status_via_ctl() == r.status()

    r.ctl("stop", "it-ctl")
    assert r.component("it-ctl")["state"] == "stopped"
    assert r.um.systemctl("is-active", "razar-it-ctl.service", check=False).stdout.strip() != (
        "active"
    )
    time.sleep(0.5)  # razard must not heal an operator stop
    assert r.component("it-ctl")["state"] == "stopped"

    r.ctl("start", "it-ctl")
    r.wait_state("it-ctl", "healthy")
    pid = r.main_pid("razar-it-ctl.service")
    r.ctl("restart", "it-ctl")
    assert r.main_pid("razar-it-ctl.service") != pid
    assert r.component("it-ctl")["state"] == "healthy"

    bad = r.ctl("restart", "no-such", check=False)
    assert bad.returncode == 2
    assert "unknown component 'no-such'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_metrics_are_scraped_over_http(razard: Factory) -> None:
    """/metrics on the configured port has component, probe and process metrics."""
    port = free_port()
    r = razard(
        sleeper(
            "it-metrics",
            extra=f"""
        probe = {{ type = "tcp", host = "127.0.0.1", port = {port}, interval = 0.2 }}
        start_timeout = 1.0
        """,
        )
    )
    r.start(wait_ready=False)
    wait_for(lambda: r.status(check=False), 30, "razard up")
    up = 'razar_component_up{component="it-metrics",layer="crown"} 1.0'
    probed = 'razar_probe_duration_seconds_count{component="it-metrics",probe="tcp"}'

    def page_with_it_probed() -> str | None:
        # a probe's series appear with its first run, which may come after the unit is up
        text = httpx.get(f"http://127.0.0.1:{r.metrics_port}/metrics", timeout=5).text
        return text if up in text and probed in text else None

    text = wait_for(page_with_it_probed, 30, "the metrics page to show it-metrics up and probed")
    assert 'razar_probe_failures_total{component="it-metrics",probe="tcp"}' in text
    assert "process_resident_memory_bytes" in text
    assert 'razar_component_healthy{component="it-metrics",layer="crown"} 0.0' in text


def test_journal_fields_queryable_with_journalctl(razard: Factory) -> None:
    """Events carry RAZAR_COMPONENT/RAZAR_EVENT fields that journalctl can filter on."""
    r = razard(sleeper("it-journal"))
    r.start()
    r.wait_state("it-journal", "healthy")

    def found() -> list[dict[str, str]]:
        p = subprocess.run(
            [
                "journalctl",
                "--no-pager",
                "-o",
                "json",
                "RAZAR_COMPONENT=it-journal",
                "RAZAR_EVENT=state_healthy",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]

    recs = wait_for(found, 10, "the state_healthy record in the journal")
    assert recs[-1]["RAZAR_LAYER"] == "crown"
    assert recs[-1]["SYSLOG_IDENTIFIER"] == "razard"


def test_reload_applies_changes_and_rejects_invalid(razard: Factory) -> None:
    """SIGHUP starts new components, stops removed ones, restarts changed ones; bad config kept."""
    r = razard(sleeper("it-keep") + sleeper("it-gone") + sleeper("it-change"))
    r.start()
    for n in ("it-keep", "it-gone", "it-change"):
        r.wait_state(n, "healthy")
    keep_pid = r.main_pid("razar-it-keep.service")
    change_pid = r.main_pid("razar-it-change.service")

    r.write_config(
        sleeper("it-keep")
        + sleeper("it-new")
        + sleeper("it-change", extra='environment = { MODE = "fast" }')
    )
    r.send(signal.SIGHUP)
    r.wait_state("it-new", "healthy")
    wait_for(
        lambda: "it-gone" not in _names(r),
        10,
        "it-gone removed",
    )
    assert r.um.systemctl("is-active", "razar-it-gone.service", check=False).stdout.strip() != (
        "active"
    )
    wait_for(
        lambda: r.main_pid("razar-it-change.service") not in (0, change_pid),
        10,
        "it-change restarted",
    )
    assert r.main_pid("razar-it-keep.service") == keep_pid
    # environment values live in a 0600 file beside the unit, not in the unit itself
    assert 'MODE="fast"' in (r.um.unit_dir / ".razar-it-change.service.env").read_text()

    r.config.write_text(r.config.read_text() + "\n[[component]]\nname = 'x'\nbogus = 1\n")
    r.send(signal.SIGHUP)
    wait_for(
        lambda: any(e["event"] == "config_rejected" for e in r.events()),
        10,
        "config_rejected event",
    )
    rejected = [e for e in r.events() if e["event"] == "config_rejected"][-1]
    assert "bogus" in rejected["message"]
    assert r.proc is not None and r.proc.poll() is None
    assert _names(r) == {"it-keep", "it-new", "it-change"}


def _names(r: Razard) -> set[str]:
    """The components ``razarctl status`` lists."""
    status = r.status()
    assert status is not None  # check=True: a failing razarctl raises instead
    return {c["name"] for c in status["components"]}


def test_resubscribes_after_systemd_reexec(razard: Factory) -> None:
    """After `systemctl daemon-reexec` razard still sees unit deaths and heals them."""
    r = razard(sleeper("it-reexec"))
    r.start()
    r.wait_state("it-reexec", "healthy")
    r.um.systemctl("daemon-reexec")
    wait_for(lambda: any(e["event"] == "bus_resync" for e in r.events()), 20, "a resync")
    pid = r.main_pid("razar-it-reexec.service")
    r.um.systemctl("kill", "-s", "KILL", "razar-it-reexec.service")
    wait_for(
        lambda: r.main_pid("razar-it-reexec.service") not in (0, pid), 20, "restart after re-exec"
    )
    assert r.wait_state("it-reexec", "healthy")["restarts"] == 1


def stamper(tmp_path: Path) -> tuple[Path, Path]:
    """A command that notes its first argument and the time it started in a file (both
    returned), then sleeps."""
    stamp = tmp_path / "order"
    s = script(
        tmp_path / "stamp.sh",
        f"""\
        #!/bin/sh
        echo "$1 $(date +%s.%N)" >> {stamp}
        exec sleep 100000
        """,
    )
    return s, stamp


def stamps(stamp: Path) -> list[tuple[str, float]]:
    """(argument, start time) for each start the stamper noted, in order."""
    return [(w, float(t)) for w, t in (line.split() for line in stamp.read_text().splitlines())]


def test_waves_start_in_priority_order(razard: Factory, tmp_path: Path) -> None:
    """A later wave starts only after the earlier wave passed its probe."""
    s, stamp = stamper(tmp_path)
    r = razard(f"""
        [[component]]
        name = "it-wave-db"
        layer = "root"
        priority = 1
        command = ["{s}", "db"]
        probe = {{ type = "exec", command = ["/bin/sh", "-c", "sleep 0.5; true"], timeout = 2 }}

        [[component]]
        name = "it-wave-app"
        layer = "crown"
        priority = 2
        command = ["{s}", "app"]
        """)
    r.start()
    r.wait_state("it-wave-app", "healthy")
    lines = stamps(stamp)
    assert [w for w, _ in lines] == ["db", "app"]
    assert lines[1][1] - lines[0][1] >= 0.5


def test_waves_without_probes_wait_for_the_up_time_from_exec(
    razard: Factory, tmp_path: Path
) -> None:
    """Without a probe, a wave settles once its units' processes have been up for the
    up-time (start_timeout here, 0.5 s) counted from their exec: the next wave's process
    starts no sooner."""
    s, stamp = stamper(tmp_path)
    r = razard(f"""
        [[component]]
        name = "it-upw-db"
        layer = "root"
        priority = 1
        start_timeout = 0.5
        command = ["{s}", "db"]

        [[component]]
        name = "it-upw-app"
        layer = "crown"
        priority = 2
        command = ["{s}", "app"]
        """)
    r.start()
    r.wait_state("it-upw-app", "healthy")
    lines = stamps(stamp)
    assert [w for w, _ in lines] == ["db", "app"]
    # db's stamp is written a little after its exec, app's a little after its own
    assert lines[1][1] - lines[0][1] >= 0.45


def test_dying_before_the_up_time_is_not_healthy(razard: Factory, tmp_path: Path) -> None:
    """A process that exits 0.3 s after its exec, short of the 1 s up-time, is a failed
    start (restarted), never counted healthy; the next start that stays up is."""
    marker = tmp_path / "started-once"
    s = script(
        tmp_path / "short.py",
        f"""\
        import pathlib, sys, time
        m = pathlib.Path("{marker}")
        if not m.exists():
            m.write_text("x"); time.sleep(0.3); sys.exit(5)
        time.sleep(100000)
        """,
    )
    r = razard(f"""
        [[component]]
        name = "it-short"
        layer = "crown"
        priority = 10
        command = ["{py()}", "{s}"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5, jitter = 0.0 }}
        """)
    r.start()
    c = r.wait_state("it-short", "healthy")
    assert c["restarts"] == 1
    evs = r.events("it-short")
    failed = [e for e in evs if e["event"] == "component_failed"]
    assert failed and "died while starting" in failed[0]["message"]
    assert "status=5" in failed[0]["message"]
    states = [e["event"] for e in evs if e["event"].startswith("state_")]
    # healthy only after the failure, never before it
    assert states.index("state_healthy") > states.index("state_restarting")


def test_boot_reports_a_unit_systemd_does_not_know(razard: Factory) -> None:
    """Every unit is listed at once at start; one that does not exist is reported for that
    component alone, and the others boot."""
    r = razard(
        sleeper("it-known", priority=1)
        + """
        [[component]]
        name = "it-unknown"
        layer = "crown"
        priority = 20
        unit = "it-no-such-unit-anywhere.service"
        restart = { attempts = 1, backoff_base = 0.05, backoff_cap = 0.1 }
        """
    )
    r.start()
    r.wait_state("it-known", "healthy")
    gone = wait_for(
        lambda: [e for e in r.events("it-unknown") if e["event"] == "unit_unavailable"],
        30,
        "unit_unavailable for it-unknown",
    )
    assert "it-no-such-unit-anywhere.service" in gone[0]["message"]
    assert not [e for e in r.events("it-known") if e["event"] == "unit_unavailable"]


def test_invalid_config_changes_nothing(user_manager: UserManager, tmp_path: Path) -> None:
    """razard refuses an invalid config with the key named, exit 2, and touches nothing."""
    cfg = tmp_path / "bad.toml"
    state = tmp_path / "state"
    cfg.write_text(f"""
[razard]
state_dir = "{state}"
bus = "user"
unit_dir = "{user_manager.unit_dir}"

[[component]]
name = "it-bad"
layer = "navel"
priority = 1
command = ["/bin/sleep", "1000"]
""")
    p = subprocess.run(
        [str(BIN / "razard"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=user_manager.env(),
        timeout=30,
        check=False,
    )
    assert p.returncode == 2
    assert "component[0] (it-bad).layer" in p.stderr and "Traceback" not in p.stderr
    assert not state.exists()
    assert not (user_manager.unit_dir / "razar-it-bad.service").exists()

    c = subprocess.run(
        [str(BIN / "razard"), "check-config", str(cfg)], capture_output=True, text=True, check=False
    )
    assert c.returncode == 1 and "layer" in c.stderr


def test_razarctl_without_razard_says_so(user_manager: UserManager) -> None:
    """razarctl with no razard on the bus prints a clear error and exits 1."""
    p = subprocess.run(
        [str(BIN / "razarctl"), "--bus", "user", "--address", user_manager.bus_address, "status"],
        capture_output=True,
        text=True,
        env=user_manager.env(),
        timeout=30,
        check=False,
    )
    assert p.returncode == 1
    assert "razard is not running" in p.stderr and "Traceback" not in p.stderr


def test_survives_dbus_daemon_restart(razard: Factory) -> None:
    """When the bus daemon restarts, razard reconnects, re-exports razarctl's interface, heals."""
    r = razard(sleeper("it-busdrop"))
    r.start()
    r.wait_state("it-busdrop", "healthy")
    r.um.systemctl("restart", "dbus.service")
    wait_for(lambda: "reconnected to the user bus" in r.stderr_text(), 20, "a reconnect")
    wait_for(lambda: r.status(check=False), 20, "razarctl answering again")
    pid = r.main_pid("razar-it-busdrop.service")
    r.um.systemctl("kill", "-s", "KILL", "razar-it-busdrop.service")
    wait_for(
        lambda: r.main_pid("razar-it-busdrop.service") not in (0, pid),
        20,
        "restart after the bus came back",
    )
    assert r.wait_state("it-busdrop", "healthy")["restarts"] == 1
    assert "Traceback" not in r.stderr_text().split("reconnected to the user bus")[-1]


def test_razarctl_logs_shows_events_and_unit_output(razard: Factory, tmp_path: Path) -> None:
    """`razarctl logs <component>` shows razard's records and the unit's own output."""
    s = script(tmp_path / "talk.sh", "#!/bin/sh\necho model-loaded-token-4711\nexec sleep 100000\n")
    r = razard(f"""
        [[component]]
        name = "it-logs"
        layer = "third_eye"
        priority = 1
        command = ["{s}"]
        """)
    r.start()
    r.wait_state("it-logs", "healthy")

    def shown() -> str:
        out = r.ctl("logs", "it-logs", "-o", "cat").stdout
        return out if "model-loaded-token-4711" in out and "healthy" in out else ""

    wait_for(shown, 10, "the unit's output and razard's events in razarctl logs")
    recs = [json.loads(x) for x in r.ctl("logs", "it-logs", "-o", "json").stdout.splitlines()]
    assert {x.get("RAZAR_EVENT") for x in recs} >= {"state_starting", "state_healthy"}


def test_runs_as_notify_unit_with_status_and_reload(
    razard: Factory, user_manager: UserManager
) -> None:
    """As a Type=notify unit razard reports READY and STATUS=; `systemctl reload` applies config."""
    from razard.demo import razard_unit

    r = razard(sleeper("it-unit-a"))
    unit = user_manager.unit_dir / "razard-it.service"
    unit.write_text(razard_unit(r.config))
    user_manager.systemctl("daemon-reload")
    try:
        user_manager.systemctl("start", "razard-it.service", timeout=90)  # returns on READY=1
        text = user_manager.systemctl("show", "-p", "StatusText", "--value", "razard-it.service")
        assert text.stdout.strip() == "1 healthy, 0 restarting, 0 quarantined"
        r.write_config(sleeper("it-unit-a") + sleeper("it-unit-b"))
        user_manager.systemctl("reload", "razard-it.service")
        r.wait_state("it-unit-b", "healthy")
        wait_for(
            lambda: (
                user_manager.systemctl(
                    "show", "-p", "StatusText", "--value", "razard-it.service"
                ).stdout.strip()
                == "2 healthy, 0 restarting, 0 quarantined"
            ),
            10,
            "STATUS= to count both",
        )
        assert user_manager.systemctl("is-active", "razard-it.service").stdout.strip() == "active"
    finally:
        user_manager.systemctl("stop", "razard-it.service", check=False)
        unit.unlink()
        user_manager.systemctl("daemon-reload", check=False)


async def _forge_failed_signal(bus_address: str, unit: str) -> None:
    """Send razard, directly, a PropertiesChanged claiming ``unit`` failed (as an attacker)."""
    from dbus_fast import Message, MessageType, Variant
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_address=bus_address).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="GetNameOwner",
                signature="s",
                body=["org.razar.Supervisor1"],
            )
        )
        assert reply is not None and reply.message_type == MessageType.METHOD_RETURN
        path = "/org/freedesktop/systemd1/unit/" + "".join(
            c if c.isalnum() else f"_{ord(c):02x}" for c in unit
        )
        changed = {"ActiveState": Variant("s", "failed"), "SubState": Variant("s", "failed")}
        for _ in range(3):
            await bus.send(
                Message(
                    message_type=MessageType.SIGNAL,
                    destination=reply.body[0],
                    path=path,
                    interface="org.freedesktop.DBus.Properties",
                    member="PropertiesChanged",
                    signature="sa{sv}as",
                    body=["org.freedesktop.systemd1.Unit", changed, []],
                )
            )
    finally:
        bus.disconnect()


def test_forged_signals_from_other_clients_are_ignored(razard: Factory) -> None:
    """A PropertiesChanged sent to razard by anyone but systemd does not count as a death."""
    import asyncio

    r = razard(sleeper("it-forge"))
    r.start()
    r.wait_state("it-forge", "healthy")
    pid = r.main_pid("razar-it-forge.service")
    asyncio.run(_forge_failed_signal(r.um.bus_address, "razar-it-forge.service"))
    time.sleep(1.0)
    c = r.component("it-forge")
    assert c["state"] == "healthy" and c["restarts"] == 0
    assert r.main_pid("razar-it-forge.service") == pid


def test_config_changed_while_down_restarts_not_adopts(razard: Factory) -> None:
    """A unit whose config changed while razard was stopped is restarted with the new config."""
    r = razard(sleeper("it-stale"))
    r.start()
    r.wait_state("it-stale", "healthy")
    pid = r.main_pid("razar-it-stale.service")
    r.stop()
    r.write_config(sleeper("it-stale", extra='environment = { MODEL = "v2" }'))
    r.start()
    c = r.wait_state("it-stale", "healthy")
    assert r.main_pid("razar-it-stale.service") != pid
    assert 'MODEL="v2"' in (r.um.unit_dir / ".razar-it-stale.service.env").read_text()
    assert c["restarts"] == 0  # a config change is not a failure
    assert not any(e["event"] == "component_adopted" for e in r.events("it-stale"))


def test_operator_stop_during_boot_lets_the_boot_go_on(razard: Factory) -> None:
    """Stopping a component whose wave is still booting lets later waves start."""
    r = razard(
        sleeper(
            "it-slow",
            1,
            extra="""
        start_timeout = 60
        probe = { type = "exec", command = ["/bin/false"], interval = 0.5 }
        """,
        )
        + sleeper("it-late", 2)
    )
    r.start(wait_ready=False)
    wait_for(
        lambda: (
            (r.status(check=False) or {}).get("components")
            and r.component("it-slow")["state"] == "starting"
        ),
        30,
        "it-slow starting",
    )
    r.ctl("stop", "it-slow")
    r.wait_state("it-late", "healthy", 30)
    st = r.status()
    assert st is not None and st["ready"] is True
    assert r.component("it-slow")["state"] == "stopped"


def test_second_razard_on_the_same_state_dir_refuses(razard: Factory) -> None:
    """Two razards on one state directory would fight: the second one refuses to start."""
    r = razard(sleeper("it-lock"))
    r.start()
    p = subprocess.run(
        [str(BIN / "razard"), "--config", str(r.config)],
        env=r.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert p.returncode == 1
    assert "another razard is running on this state directory" in p.stderr
    assert r.component("it-lock")["state"] == "healthy"

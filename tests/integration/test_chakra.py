"""The layer agents inside a real razard: heartbeat files, pulse metrics, chakra_down, healers.

Everything here is real: razard on the private user manager, components as
units, heartbeat files watched with inotify, metrics scraped over HTTP, the
healers run as processes. Pressure is the one stand-in: a PSI file the test
writes (the kernel's own /proc/pressure cannot be driven on demand).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agents.healing.units import controller_support
from razard.usermanager import UserManager
from tests.integration.conftest import Factory
from tests.integration.harness import BIN, Razard, py, script, wait_for

pytestmark = pytest.mark.integration


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in a Prometheus text page, or None when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return None


def events(r: Razard, event: str, layer: str | None = None) -> list[dict[str, object]]:
    return [
        e
        for e in r.events()
        if e.get("event") == event and (layer is None or e.get("layer") == layer)
    ]


BEATER = """\
    import os, pathlib, time
    beat = pathlib.Path(os.environ["RAZAR_HEARTBEAT_FILE"])
    mute = pathlib.Path("{mute}")
    while True:
        if not mute.exists():
            beat.touch()
        time.sleep(0.2)
    """


def test_heartbeats_give_pulse_and_a_silent_layer_raises_one_chakra_down(
    razard: Factory, tmp_path: Path
) -> None:
    """A beating component keeps its layer up; when it falls silent the layer goes down once,
    the component's ladder restarts it, and the layer comes back."""
    mute = tmp_path / "mute"
    beater = script(tmp_path / "beater.py", BEATER.format(mute=mute))
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"
        heartbeat_interval = 0.5
        window_factor = 3

        [[component]]
        name = "hb-api"
        layer = "throat"
        priority = 10
        heartbeat = true
        command = ["{py()}", "{beater}"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5, jitter = 0.0 }}
        """)
    r.start()
    r.wait_state("hb-api", "healthy")
    beat_file = tmp_path / "run" / "heartbeat" / "throat" / "hb-api"
    assert beat_file.exists()

    def throat(text: str) -> float | None:
        return metric(text, "chakra_pulse_hz", chakra="throat")

    def beating() -> str | None:
        text = r.metrics_text()
        return text if (throat(text) or 0) > 1 else None

    page = wait_for(beating, what="the throat layer's pulse")
    assert metric(page, "chakra_alignment") == 1.0
    assert metric(page, "razar_chakra_up", chakra="throat") == 1.0
    beat = throat(page)
    assert beat is not None and beat > 1 / 1.5  # beat within the window
    layers = {row["layer"]: row for row in json.loads(r.ctl("chakra", "--json").stdout)}
    assert layers["throat"]["state"] == "up"
    assert [s["name"] for s in layers["throat"]["sources"]] == ["hb-api"]
    assert layers["root"]["state"] == "unconfigured"  # no sensor, no heartbeat: not judged
    table = r.ctl("chakra").stdout
    assert "throat" in table and "up" in table

    mute.touch()  # the process keeps running but stops beating
    down = wait_for(lambda: events(r, "chakra_down", "throat"), what="chakra_down")
    assert "heartbeat hb-api" in str(down[0]["message"])
    page = r.metrics_text()
    assert metric(page, "chakra_alignment") == 0.0
    assert metric(page, "razar_chakra_up", chakra="throat") == 0.0
    failed = wait_for(
        lambda: [
            e
            for e in events(r, "component_failed")
            if e.get("failure_kind") == "heartbeat" and e.get("component") == "hb-api"
        ],
        what="the heartbeat failure on the component's ladder",
    )
    assert "no heartbeat" in str(failed[0]["message"])

    mute.unlink()  # the restarted process beats again
    wait_for(lambda: events(r, "chakra_up", "throat"), what="chakra_up")
    r.wait_state("hb-api", "healthy")
    assert len(events(r, "chakra_down", "throat")) == 1  # once per outage, not per tick
    assert metric(r.metrics_text(), "chakra_alignment") == 1.0


BURNER = """\
    import time
    while True:
        pass
    """

IDLER = """\
    import time
    time.sleep(100000)
    """


def _psi(path: Path, avg10: float) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        f"some avg10={avg10:.2f} avg60=0.00 avg300=0.00 total=1\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    tmp.replace(path)


def _cpu_weight(um: UserManager, unit: str) -> str:
    out = um.systemctl("show", "-p", "CPUWeight", "--value", unit)
    return str(getattr(out, "stdout", out)).strip()


def test_cpu_pressure_runs_the_healer_which_throttles_and_restores(
    razard: Factory, tmp_path: Path, user_manager: UserManager
) -> None:
    """solar_plexus under pressure: the agent runs the real CPU healer, which lowers the
    burner's CPUWeight where the host has a cpu controller for it (the PSI stand-in falls
    once it is lowered, within the settle time, so the heal is verified); when pressure falls
    the layer is up again and the weight restored. Where the host has none, the healer says
    "not applicable here", changes nothing, and the outage goes to the components' ladders."""
    psi = tmp_path / "cpu.psi"
    _psi(psi, 1.0)
    burner = script(tmp_path / "burn.py", BURNER)
    idler = script(tmp_path / "idle.py", IDLER)
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"
        heartbeat_interval = 0.5
        window_factor = 2

        [chakra.solar_plexus]
        pressure_file = "{psi}"
        pressure_threshold = 40
        throttle_weight = 20
        settle = 5
        healer_env = {{ RAZAR_CPU_SAMPLE = "0.5" }}

        [[component]]
        name = "cp-burner"
        layer = "solar_plexus"
        priority = 10
        command = ["{py()}", "{burner}"]

        [[component]]
        name = "cp-idler"
        layer = "solar_plexus"
        priority = 10
        command = ["{py()}", "{idler}"]
        """)
    r.start()
    r.wait_state("cp-burner", "healthy")
    before = _cpu_weight(user_manager, "razar-cp-burner.service")
    group = user_manager.systemctl(
        "show", "-p", "ControlGroup", "--value", "razar-cp-burner.service"
    )
    here, why = controller_support("CPUWeight", str(getattr(group, "stdout", group)).strip())
    wait_for(lambda: metric(r.metrics_text(), "razar_chakra_up", chakra="solar_plexus") == 1.0)

    _psi(psi, 85.0)
    down = wait_for(lambda: events(r, "chakra_down", "solar_plexus"), what="chakra_down")
    assert "CPU pressure 85%" in str(down[0]["message"])
    if not here:  # no cpu controller for the unit's cgroup on this host: nothing to throttle
        result = wait_for(lambda: events(r, "heal_result", "solar_plexus"), what="heal_result")
        assert result[0]["result"] == "not_applicable", result
        assert "not applicable here" in str(result[0]["message"]) and why in str(
            result[0]["message"]
        )
        wait_for(lambda: events(r, "chakra_escalated", "solar_plexus"), what="the escalation")
        assert _cpu_weight(user_manager, "razar-cp-burner.service") == before
        _psi(psi, 2.0)
        wait_for(lambda: events(r, "chakra_up", "solar_plexus"), what="chakra_up")
        return
    wait_for(lambda: _cpu_weight(user_manager, "razar-cp-burner.service") == "20")
    _psi(psi, 2.0)  # the throttle worked: the stand-in pressure falls within the settle time
    result = wait_for(lambda: events(r, "heal_result", "solar_plexus"), what="heal_result")
    assert result[0]["result"] == "healed", result
    assert _cpu_weight(user_manager, "razar-cp-burner.service") == "20"
    assert _cpu_weight(user_manager, "razar-cp-idler.service") == before
    log = [json.loads(x) for x in (r.state_dir / "chakra_healing.log").read_text().splitlines()]
    assert log[0]["layer"] == "solar_plexus" and log[0]["result"] == "healed"
    page = r.metrics_text()
    assert (
        metric(
            page,
            "razar_heal_attempts_total",
            healer="solar_plexus_cpu_throttle",
            layer="solar_plexus",
            result="healed",
        )
        == 1.0
    )

    wait_for(lambda: events(r, "chakra_up", "solar_plexus"), what="chakra_up")
    wait_for(
        lambda: [e for e in events(r, "heal_result", "solar_plexus") if e.get("mode") == "restore"],
        what="the restore run",
    )
    assert _cpu_weight(user_manager, "razar-cp-burner.service") == before
    assert len(events(r, "chakra_down", "solar_plexus")) == 1
    assert r.component("cp-burner")["state"] == "healthy"  # throttled, never restarted


FAILING_HEALER = """\
    #!/bin/sh
    echo "$RAZAR_LAYER $RAZAR_HEAL_MODE" >> "{calls}"
    echo '{{"healer": "custom", "result": "not_healed", "reason": "cannot fix it", "steps": []}}'
    exit 1
    """


def test_unhealed_layer_goes_up_the_components_ladders(razard: Factory, tmp_path: Path) -> None:
    """A healer that cannot heal: the layer's component gets the failure (healer rung
    skipped, since it just ran), the operator hears of it through its ladder."""
    psi = tmp_path / "mem.psi"
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1000000 kB\nMemAvailable: 900000 kB\n")
    _psi(psi, 0.0)
    # the healer's sandbox (its own transient unit) may write only in razard's state dir
    calls = tmp_path / "state" / "healer-calls"
    healer = script(tmp_path / "healer.sh", FAILING_HEALER.format(calls=calls))
    idler = script(tmp_path / "idle.py", IDLER)
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"
        heartbeat_interval = 0.5
        window_factor = 2

        [chakra.heart]
        pressure_file = "{psi}"
        meminfo_file = "{meminfo}"
        healer = ["{healer}"]

        [[component]]
        name = "hm-cache"
        layer = "heart"
        priority = 10
        command = ["{py()}", "{idler}"]
        restart = {{ attempts = 1, backoff_base = 0.1, backoff_cap = 0.2, jitter = 0.0 }}
        """)
    r.start()
    r.wait_state("hm-cache", "healthy")
    meminfo.write_text("MemTotal: 1000000 kB\nMemAvailable: 10000 kB\n")  # 1% available
    down = wait_for(lambda: events(r, "chakra_down", "heart"), what="chakra_down")
    assert "1.0% of memory available" in str(down[0]["message"])
    wait_for(lambda: events(r, "chakra_escalated", "heart"), what="escalation")
    failed = wait_for(
        lambda: [
            e
            for e in events(r, "component_failed")
            if e.get("component") == "hm-cache" and e.get("failure_kind") == "layer"
        ],
        what="the layer failure on hm-cache's ladder",
    )
    assert "cannot fix it" in str(failed[0]["message"])
    assert calls.read_text().splitlines() == ["heart heal"]  # once: the rung did not rerun it
    res = events(r, "heal_result", "heart")
    assert res[0]["result"] == "not_healed"


def test_component_ladder_runs_its_layer_healer(razard: Factory, tmp_path: Path) -> None:
    """restart attempts = 0: the first failure goes to the layer healer rung; the real throat
    healer restarts the layer's units in order, and the component is healthy again."""
    marker = tmp_path / "started-once"
    flaky = script(
        tmp_path / "flaky.py",
        f"""\
        import pathlib, sys, time
        m = pathlib.Path("{marker}")
        if not m.exists():
            m.write_text("x")
            sys.exit(4)
        time.sleep(100000)
        """,
    )
    idler = script(tmp_path / "idle.py", IDLER)
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"

        [[component]]
        name = "tl-gateway"
        layer = "throat"
        priority = 10
        command = ["{py()}", "{flaky}"]
        restart = {{ attempts = 0 }}

        [[component]]
        name = "tl-auth"
        layer = "throat"
        priority = 20
        command = ["{py()}", "{idler}"]
        """)
    r.start()
    r.wait_state("tl-gateway", "healthy", timeout=60)
    result = events(r, "heal_result", "throat")
    assert result and result[0]["result"] == "healed"
    assert result[0]["component"] == "tl-gateway"
    fixed = [e for e in r.events("tl-gateway") if e.get("event") == "escalation_result"]
    assert "layer healer: fixed" in str(fixed[0]["message"])
    rec = json.loads((r.state_dir / "chakra_healing.log").read_text().splitlines()[0])
    assert [s["step"] for s in rec["steps"] if "restart" in s["step"]], rec
    r.wait_state("tl-auth", "healthy")
    assert not [e for e in r.events("tl-auth") if e.get("event") == "component_failed"]


def test_razarctl_chakra_heal_dry_run(razard: Factory, tmp_path: Path) -> None:
    """An operator runs a layer's healer by hand: dry run prints the plan, changes nothing."""
    idler = script(tmp_path / "idle.py", IDLER)
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"

        [[component]]
        name = "ce-sched"
        layer = "crown"
        priority = 10
        command = ["{py()}", "{idler}"]
        """)
    r.start()
    r.wait_state("ce-sched", "healthy")
    pid = r.main_pid("razar-ce-sched.service")
    p = r.ctl("chakra", "heal", "crown", "--dry-run", check=False)
    assert p.returncode == 1, p.stdout + p.stderr  # a dry run heals nothing
    assert "crown_full_restart" in p.stdout and "dry run" in p.stdout
    assert "would:" in p.stdout and "razar-ce-sched.service" in p.stdout
    assert r.main_pid("razar-ce-sched.service") == pid
    assert not (r.state_dir / "chakra_healing.log").exists()  # dry runs are not recorded
    bad = r.ctl("chakra", "heal", "spleen", check=False)
    assert bad.returncode == 2 and "spleen" in bad.stderr
    p = r.ctl("chakra", "heal", "root", check=False)
    assert p.returncode == 2, p.stdout + p.stderr  # no interface configured: not applicable
    assert "not applicable" in p.stdout


def test_check_config_names_bad_chakra_keys(tmp_path: Path) -> None:
    from tests.integration.harness import BIN

    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        '[chakra]\nheartbeat_interval = -1\n[chakra.root]\ninterfaces = "eth0"\n'
        '[chakra.heart]\naction = "pray"\nhealer_env = { PATH = "/tmp" }\n'
    )
    p = subprocess.run(
        [str(BIN / "razard"), "check-config", str(cfg)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert p.returncode != 0
    for key in (
        "chakra.heartbeat_interval",
        "chakra.root.interfaces",
        "chakra.heart.action",
        "chakra.heart.healer_env.PATH",
    ):
        assert key in p.stdout + p.stderr, key


PROBE_HEALER = """\
    #!/bin/sh
    # reports the sandbox it runs in, and whether it can write outside razard's state dir
    caps=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)
    nnp=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status)
    unit=$(grep -o 'razar-heal-[a-z_-]*-[0-9a-f]*\\.service' /proc/self/cgroup | head -n 1)
    if touch "{outside}" 2>/dev/null; then outside=writable; else outside=refused; fi
    state=refused
    touch "$RAZAR_STATE_DIR/healer-was-here" 2>/dev/null && state=writable
    printf '{{"result": "healed", "reason": "sandbox probe", "caps": "%s", "nnp": "%s", ' \\
        "$caps" "$nnp"
    printf '"cgroup_unit": "%s", "outside": "%s", "state": "%s"}}\\n' "$unit" "$outside" "$state"
    exit 0
    """


@pytest.mark.parametrize(
    ("layer", "caps"),
    [("heart", 0), ("root", (1 << 12) | (1 << 13) | (1 << 21))],  # NET_ADMIN, NET_RAW, SYS_ADMIN
)
def test_each_healer_runs_in_its_own_sandboxed_transient_unit(
    razard: Factory, tmp_path: Path, layer: str, caps: int
) -> None:
    """A healer runs as razar-heal-<layer>-<id>.service with only its layer's capabilities,
    no new privileges, and write access to razard's state dir but not elsewhere."""
    outside = tmp_path / "outside-the-sandbox"
    healer = script(tmp_path / "probe.sh", PROBE_HEALER.format(outside=outside))
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"

        [chakra.{layer}]
        healer = ["{healer}"]
        """)
    r.start()
    p = r.ctl("chakra", "heal", layer, "--json", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(p.stdout)["report"]  # the healer's own JSON object
    assert report["cgroup_unit"].startswith(f"razar-heal-{layer.replace('_', '-')}-")
    assert int(report["caps"], 16) == caps
    assert report["nnp"] == "1"
    assert report["state"] == "writable" and (r.state_dir / "healer-was-here").exists()
    assert report["outside"] == "refused" and not outside.exists()
    # its transient unit is gone once it has run (this one: a razard of another test on the
    # same user manager, stopped in the middle of a heal, may leave its own behind)
    unit = report["cgroup_unit"]
    left = r.um.systemctl("list-units", "--all", "--plain", unit, check=False).stdout
    assert unit not in left


def test_razard_stopped_during_a_heal_leaves_no_healer_unit(
    razard: Factory, tmp_path: Path
) -> None:
    """SIGTERM while a layer's healer runs: razard stops and discards the healer's
    transient unit before it exits; nothing of it is left loaded in systemd."""
    healer = script(
        tmp_path / "slow.sh",
        """\
        #!/bin/sh
        touch "$RAZAR_STATE_DIR/healer-started"
        exec sleep 300
        """,
    )
    r = razard(f"""
        [chakra]
        runtime_dir = "{tmp_path / "run"}"

        [chakra.heart]
        healer = ["{healer}"]
        healer_timeout = 600
        """)
    r.start()
    started = r.state_dir / "healer-started"  # the sandbox lets a healer write only there
    ctl = subprocess.Popen(
        [str(BIN / "razarctl"), "--bus", "user", "--address", r.um.bus_address]
        + ["chakra", "heal", "heart"],
        env=r.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(started.exists, 30, "the healer to start")

        def heal_units() -> str:
            out = r.um.systemctl("list-units", "--all", "--plain", "razar-heal-heart-*")
            return "\n".join(x for x in out.stdout.splitlines() if "razar-heal-heart-" in x)

        assert heal_units()  # running now, in its own unit
        assert r.stop() == 0
        assert heal_units() == ""
    finally:
        ctl.kill()
        ctl.wait()

"""The unit healers (solar_plexus, heart, throat, third_eye, crown) on real units.

Every unit here runs on the session's private systemd user manager, and what
the tests check is what an operator sees: the JSON and exit code of the
healer, and the unit properties read back with ``systemctl --user show``.

The kernel's pressure files cannot be driven reliably from a test (CPU PSI on
a 2-core machine shared with other tests, memory PSI without exhausting the
machine's memory), so the healers read fake PSI/meminfo files written by the
test through their RAZAR_*_FILE settings; everything else (the units, their
CPU and memory use, CPUWeight/MemoryHigh, restarts, signals, probes) is real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from agents.healing import heart, restart, solar_plexus
from agents.healing.units import controller_support
from agents.pressure import Pressure, StallLine, format_psi
from razard.usermanager import UserManager, write_unit
from tests.integration.harness import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "chakra_healing"
NOT_SET = 2**64 - 1

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

Runner = Callable[..., tuple[int, dict[str, Any]]]


# --------------------------------------------------------------------------- helpers


def psi(avg10: float) -> str:
    """The text of a PSI file whose ``some avg10`` is ``avg10``."""
    return format_psi(Pressure(StallLine(avg10, avg10, avg10, 123456), StallLine(0, 0, 0, 0)))


def meminfo(available_mib: int, total_mib: int = 16384) -> str:
    """A /proc/meminfo text with the two fields the heart healer reads (and a few others)."""
    return (
        f"MemTotal:       {total_mib * 1024} kB\n"
        f"MemFree:        {available_mib * 512} kB\n"
        f"MemAvailable:   {available_mib * 1024} kB\n"
        "Buffers:           1024 kB\n"
        "HugePages_Total:       0\n"
    )


def one_json(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one JSON line, got: {out!r}"
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


@dataclass
class Units:
    """Units this test writes and starts on the shared manager; all removed afterwards."""

    um: UserManager
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    made: list[str] = field(default_factory=list)

    def add(self, stem: str, service: str, *, start: bool = True) -> str:
        name = f"razar-heal-{stem}-{self.tag}.service"
        body = textwrap.dedent(service).strip()
        write_unit(self.um, name, f"[Unit]\nDescription=heal test {stem}\n\n[Service]\n{body}\n")
        self.made.append(name)
        if start:
            self.um.systemctl("start", name)
        return name

    def show(self, unit: str, prop: str) -> str:
        return self.um.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID") or 0)

    def cleanup(self) -> None:
        for u in self.made:
            self.um.systemctl("stop", u, check=False)
            self.um.systemctl("reset-failed", u, check=False)
            (self.um.unit_dir / u).unlink(missing_ok=True)
        if self.made:
            self.um.systemctl("daemon-reload", check=False)


@pytest.fixture
def units(user_manager: UserManager) -> Iterator[Units]:
    u = Units(user_manager)
    try:
        yield u
    finally:
        u.cleanup()


@pytest.fixture
def base_env(user_manager: UserManager, tmp_path: Path) -> dict[str, str]:
    """What razard passes a healer, pointed at the test's manager and state directory."""
    env = user_manager.env()
    for k in [k for k in env if k.startswith("RAZAR_")]:
        del env[k]
    env.update({"RAZAR_BUS": "user", "RAZAR_STATE_DIR": str(tmp_path / "state")})
    return env


@pytest.fixture
def inproc(capsys: pytest.CaptureFixture[str]) -> Runner:
    """Run a healer's ``run(argv, env)`` in this process; (exit code, its one JSON object)."""

    def call(fn: Callable[..., int], env: dict[str, str], *argv: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        rc = fn(list(argv), env)
        return rc, one_json(capsys.readouterr().out)

    return call


def execute(argv: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run a healer as its own process (a script by path, or ``python -m``)."""
    cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cp.stdout.strip(), f"no JSON on stdout; stderr: {cp.stderr}"
    return cp.returncode, one_json(cp.stdout)


def supported(units: Units, unit: str, prop: str) -> tuple[bool, str]:
    """Does ``prop`` take effect on ``unit`` on this host (its cgroup has the controller)?"""
    return controller_support(prop, units.show(unit, "ControlGroup"))


# --------------------------------------------------------------------------- solar_plexus (CPU)

BURN = "ExecStart=/bin/sh -c 'while :; do :; done'"
IDLE = "ExecStart=/bin/sleep infinity"


@pytest.fixture
def cpu_env(base_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    (tmp_path / "cpu").write_text(psi(75.0))
    return base_env | {
        "RAZAR_CPU_PRESSURE_FILE": str(tmp_path / "cpu"),
        "RAZAR_CPU_SAMPLE": "0.3",
    }


def test_cpu_throttles_the_burner_keeps_the_original_and_restores_it(
    units: Units, cpu_env: dict[str, str], inproc: Runner
) -> None:
    """Under CPU pressure the unit burning CPU gets CPUWeight 20, the idle one is untouched;
    a second run keeps the first original; restore mode puts 150 back."""
    burner = units.add("burn", f"CPUWeight=150\n{BURN}")
    idle = units.add("idle", IDLE)
    idle_weight = units.show(idle, "CPUWeight")
    env = cpu_env | {"RAZAR_CPU_UNITS": f"{burner},{idle}"}
    here, why = supported(units, burner, "CPUWeight")

    rc, out = inproc(solar_plexus.run, env)
    if not here:  # this host: nothing to throttle with, and the healer says so
        assert rc == 2 and out["result"] == "not_applicable", out
        assert "not applicable here" in out["reason"] and why in out["reason"]
        assert units.show(burner, "CPUWeight") == "150"
        return
    assert rc == 0, out
    assert out["healer"] == "solar_plexus_cpu_throttle" and out["result"] == "healed"
    assert out["healed_by"] == "throttle"
    assert [t["unit"] for t in out["details"]["throttled"]] == [burner]
    assert out["details"]["throttled"][0]["old_weight"] == 150
    assert out["details"]["throttled"][0]["new_weight"] == 20
    assert out["details"]["throttled"][0]["cpu_percent"] > 5
    assert units.show(burner, "CPUWeight") == "20"
    assert units.show(idle, "CPUWeight") == idle_weight

    rc, again = inproc(solar_plexus.run, env)
    assert rc == 0, again
    assert again["details"]["throttled"][0]["old_weight"] == 150  # not the 20 set by run one
    assert not any(s["changed"] for s in again["steps"])
    assert units.show(burner, "CPUWeight") == "20"

    rc, back = inproc(solar_plexus.run, env | {"RAZAR_HEAL_MODE": "restore"})
    assert rc == 0, back
    assert back["healed_by"] == "restore"
    assert back["details"]["restored"] == [{"unit": burner, "from": 20, "to": 150}]
    assert units.show(burner, "CPUWeight") == "150"
    assert units.show(idle, "CPUWeight") == idle_weight

    rc, nothing = inproc(solar_plexus.run, env | {"RAZAR_HEAL_MODE": "restore"})
    assert rc == 0 and nothing["details"]["restored"] == [], nothing


def test_cpu_weight_comes_back_when_pressure_falls(
    units: Units, cpu_env: dict[str, str], tmp_path: Path
) -> None:
    """Candidates default to RAZAR_CONFIG's components; once PSI drops below the threshold
    the next run (heal mode) restores the weight, and the one after is a no-op.
    Runs through the script file, as an operator would."""
    burner = units.add("burn", BURN)
    idle = units.add("idle", IDLE)
    config = tmp_path / "razard.toml"
    config.write_text(
        f'[[component]]\nname = "burner"\nlayer = "solar_plexus"\npriority = 1\nunit = "{burner}"\n'
        f'[[component]]\nname = "idle"\nlayer = "heart"\npriority = 2\nunit = "{idle}"\n'
    )
    env = cpu_env | {"RAZAR_CONFIG": str(config)}
    script = [sys.executable, str(SCRIPTS / "solar_plexus_cpu_throttle.py")]

    rc, out = execute(script, env)
    if not supported(units, burner, "CPUWeight")[0]:
        assert rc == 2 and "not applicable here" in out["reason"], out
        assert units.show(burner, "CPUWeight") == "[not set]"
        return
    assert rc == 0, out
    assert out["details"]["candidates"] == [burner, idle]
    assert [t["unit"] for t in out["details"]["throttled"]] == [burner]
    assert units.show(burner, "CPUWeight") == "20"

    Path(env["RAZAR_CPU_PRESSURE_FILE"]).write_text(psi(3.0))
    rc, out = execute(script, env)
    assert rc == 0, out
    assert out["healed_by"] == "restore" and "no CPU pressure" in out["reason"]
    assert units.show(burner, "CPUWeight") == "[not set]"

    rc, out = execute(script, env)
    assert rc == 0, out
    assert out["healed_by"] == "check_pressure" and out["reason"].startswith("no CPU pressure")
    assert not any(s["changed"] for s in out["steps"])


def test_cpu_protected_and_dry_run_change_nothing(
    units: Units, cpu_env: dict[str, str], inproc: Runner
) -> None:
    """A protected burner is never throttled (not healed: nothing else uses CPU); a dry
    run (pressure exactly at the threshold counts) plans the change and makes none."""
    burner = units.add("burn", BURN)
    idle = units.add("idle", IDLE)
    env = cpu_env | {"RAZAR_CPU_UNITS": f"{burner},{idle}"}

    rc, out = inproc(solar_plexus.run, env | {"RAZAR_CPU_PROTECT": burner})
    assert rc == 1, out
    assert out["details"]["candidates"] == [idle] and out["details"]["protected"] == [burner]
    assert "none of the candidate units is using CPU" in out["reason"]

    Path(env["RAZAR_CPU_PRESSURE_FILE"]).write_text(psi(40.0))  # at the threshold: acts
    rc, out = inproc(solar_plexus.run, env, "--dry-run")
    if not supported(units, burner, "CPUWeight")[0]:
        assert rc == 2 and out["dry_run"] and "not applicable here" in out["reason"], out
        assert units.show(burner, "CPUWeight") == "[not set]"
        return
    assert rc == 1 and out["dry_run"], out
    assert out["reason"].startswith("dry run:")
    assert out["plan"] and out["plan"][0].startswith(f"set CPUWeight=20 on {burner}")
    assert units.show(burner, "CPUWeight") == "[not set]"
    assert not (Path(env["RAZAR_STATE_DIR"]) / "healers").exists()


def test_cpu_bad_settings_name_the_variable(
    user_manager: UserManager, cpu_env: dict[str, str], tmp_path: Path, inproc: Runner
) -> None:
    """Garbled or missing pressure files and bad numbers are reported by their setting."""
    garbled = tmp_path / "garbled"
    garbled.write_text("some avg10=lots\n")
    rc, out = inproc(solar_plexus.run, cpu_env | {"RAZAR_CPU_PRESSURE_FILE": str(garbled)})
    assert rc == 1 and "RAZAR_CPU_PRESSURE_FILE" in out["reason"] and str(garbled) in out["reason"]
    missing = str(tmp_path / "nope")
    rc, out = inproc(solar_plexus.run, cpu_env | {"RAZAR_CPU_PRESSURE_FILE": missing})
    assert rc == 1 and "RAZAR_CPU_PRESSURE_FILE" in out["reason"] and missing in out["reason"]
    rc, out = inproc(solar_plexus.run, cpu_env | {"RAZAR_CPU_THROTTLE_WEIGHT": "0"})
    assert rc == 1 and "RAZAR_CPU_THROTTLE_WEIGHT" in out["reason"]
    rc, out = inproc(solar_plexus.run, cpu_env | {"RAZAR_CPU_UNITS": "not a unit"})
    assert rc == 1 and "RAZAR_CPU_UNITS" in out["reason"]


# --------------------------------------------------------------------------- heart (memory)

HOLD = """\
import sys, time
hold = b"\\x01" * (int(sys.argv[1]) << 20)  # written, so it is resident
time.sleep(3600)
"""


@pytest.fixture
def memory_units(units: Units, tmp_path: Path) -> tuple[str, str]:
    """A unit holding ~150 MiB and one holding almost nothing, both running."""
    holder = tmp_path / "hold.py"
    holder.write_text(HOLD)
    big = units.add("big", f"ExecStart={sys.executable} {holder} 150")
    small = units.add("small", IDLE)
    wait_for(
        lambda: psutil.Process(units.main_pid(big)).memory_info().rss > 140 << 20,
        timeout=20,
        what=f"{big} to hold 150 MiB",
    )
    return big, small


@pytest.fixture
def mem_env(
    base_env: dict[str, str], tmp_path: Path, memory_units: tuple[str, str]
) -> dict[str, str]:
    (tmp_path / "memory").write_text(psi(0.0))
    (tmp_path / "meminfo").write_text(meminfo(available_mib=400))  # 2.4% of 16 GiB: pressure
    return base_env | {
        "RAZAR_MEMORY_PRESSURE_FILE": str(tmp_path / "memory"),
        "RAZAR_MEMINFO_FILE": str(tmp_path / "meminfo"),
        "RAZAR_MEMORY_UNITS": ",".join(memory_units),
    }


def test_memory_high_on_the_biggest_unit_then_restored(
    units: Units, memory_units: tuple[str, str], mem_env: dict[str, str], inproc: Runner
) -> None:
    """Low MemAvailable: MemoryHigh = 0.9 x what the big unit holds; the small one is
    untouched; a second run does not lower it again; restore mode lifts it."""
    big, small = memory_units
    assert units.show(big, "MemoryHigh") == "infinity"
    here, why = supported(units, big, "MemoryHigh")
    old_pid = units.main_pid(big)

    rc, out = inproc(heart.run, mem_env)
    if not here:  # this host: MemoryHigh would do nothing; the next action, restart, runs
        assert rc == 0 and out["healed_by"] == "restart", out
        assert f"not applicable here: {why}" in [s["detail"] for s in out["steps"]]
        assert units.main_pid(big) not in (0, old_pid)
        assert units.show(big, "MemoryHigh") == "infinity"
        return
    assert rc == 0, out
    assert out["healer"] == "heart_memory_repair" and out["healed_by"] == "memory_high"
    d = out["details"]
    assert d["unit"] == big and d["memory_bytes"] > 140 << 20
    assert d["new_memory_high"] == int(d["memory_bytes"] * 0.9)
    assert d["old_memory_high"] == NOT_SET
    assert units.show(big, "MemoryHigh") == str(d["new_memory_high"])
    assert units.show(small, "MemoryHigh") == "infinity"

    rc, again = inproc(heart.run, mem_env)
    assert rc == 0 and "already limited" in again["reason"], again
    assert units.show(big, "MemoryHigh") == str(d["new_memory_high"])

    rc, back = inproc(heart.run, mem_env | {"RAZAR_HEAL_MODE": "restore"})
    assert rc == 0 and back["healed_by"] == "restore", back
    assert units.show(big, "MemoryHigh") == "infinity"


def test_memory_psi_trigger_restart_action_and_pressure_gone(
    units: Units, memory_units: tuple[str, str], mem_env: dict[str, str], tmp_path: Path
) -> None:
    """PSI above the threshold with plenty of memory free still counts as pressure;
    action=restart restarts the big unit (a new main pid, active again). Without
    pressure the healer is a no-op. Runs through the script file."""
    big, small = memory_units
    (tmp_path / "meminfo").write_text(meminfo(available_mib=12000))
    (tmp_path / "memory").write_text(psi(35.0))
    script = [sys.executable, str(SCRIPTS / "heart_memory_repair.py")]
    old_pid, small_pid = units.main_pid(big), units.main_pid(small)

    rc, out = execute(script, mem_env | {"RAZAR_MEMORY_ACTION": "restart"})
    assert rc == 0, out
    assert out["healed_by"] == "restart" and out["details"]["unit"] == big
    new_pid = units.main_pid(big)
    assert new_pid not in (0, old_pid)
    assert out["details"]["old_main_pid"] == old_pid
    assert out["details"]["new_main_pid"] == new_pid
    assert units.show(big, "ActiveState") == "active"
    assert units.main_pid(small) == small_pid
    assert units.show(big, "MemoryHigh") == "infinity"

    (tmp_path / "memory").write_text(psi(1.0))
    rc, out = execute(script, mem_env)
    assert rc == 0 and out["healed_by"] == "check_pressure", out
    assert out["reason"].startswith("no memory pressure")
    assert units.main_pid(big) == new_pid


def test_memory_settings_errors(mem_env: dict[str, str], tmp_path: Path, inproc: Runner) -> None:
    """A wrong action or an unreadable meminfo file is named in the reason."""
    rc, out = inproc(heart.run, mem_env | {"RAZAR_MEMORY_ACTION": "kill"})
    assert rc == 1 and "RAZAR_MEMORY_ACTION" in out["reason"]
    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\n")
    rc, out = inproc(heart.run, mem_env)
    assert rc == 1 and "RAZAR_MEMINFO_FILE" in out["reason"] and "MemAvailable" in out["reason"]


# --------------------------------------------------------------------------- restart healers

SERVER = """\
import http.server, sys, time
name, port, log, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
time.sleep(delay)  # a slow start: the healer must wait for the probe
srv = http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler)
with open(log, "a") as f:
    f.write(f"{name} ready\\n")
srv.serve_forever()
"""


@dataclass
class Layer:
    """Components of one layer in a razard.toml, with units that log their starts."""

    units: Units
    base: Path
    layer: str
    log: Path
    blocks: list[str] = field(default_factory=list)
    unit_of: dict[str, str] = field(default_factory=dict)

    def server(self, name: str, priority: int, *, delay: float = 0.0, probe_port: int = 0) -> None:
        """An HTTP server component with an http probe (on ``probe_port`` when given)."""
        port = free_port()
        server = self.base / "server.py"
        server.write_text(SERVER)
        unit = self.units.add(
            name,
            f"""\
            ExecStartPre=/bin/sh -c 'echo "{name} start" >> {self.log}'
            ExecStart={sys.executable} {server} {name} {port} {self.log} {delay}
            """,
        )
        self._block(
            name,
            priority,
            unit,
            f'start_timeout = 10\n[component.probe]\ntype = "http"\n'
            f'url = "http://127.0.0.1:{probe_port or port}/"\ninterval = 0.2\ntimeout = 1\n',
        )
        if not probe_port:
            wait_for(lambda: f"{name} ready" in self.lines(), timeout=15, what=f"{name} up")

    def plain(self, name: str, priority: int, exec_start: str) -> None:
        """A component without a probe (healthy when its unit is active)."""
        unit = self.units.add(
            name,
            f"""\
            ExecStartPre=/bin/sh -c 'echo "{name} start" >> {self.log}'
            ExecStart={exec_start}
            """,
        )
        self._block(name, priority, unit, "start_timeout = 5\n")

    def _block(self, name: str, priority: int, unit: str, extra: str) -> None:
        self.unit_of[name] = unit
        self.blocks.append(
            f'[[component]]\nname = "{name}"\nlayer = "{self.layer}"\npriority = {priority}\n'
            f'unit = "{unit}"\n{extra}'
        )

    def config(self) -> Path:
        path = self.base / "razard.toml"
        path.write_text("\n".join(self.blocks))
        return path

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def clear_log(self) -> None:
        self.log.write_text("")


def make_layer(units: Units, tmp_path: Path, layer: str) -> Layer:
    return Layer(units, tmp_path, layer, tmp_path / "starts.log")


def test_throat_restarts_in_priority_order_each_healthy_before_the_next(
    units: Units, base_env: dict[str, str], tmp_path: Path
) -> None:
    """Declared out of order, restarted by priority; the slow first server passes its probe
    before the second starts. Runs the .sh script by path."""
    lay = make_layer(units, tmp_path, "throat")
    lay.server("gateway", 20)
    lay.plain("sidecar", 30, "/bin/sleep infinity")
    lay.server("api", 10, delay=0.7)
    pids = {n: units.main_pid(u) for n, u in lay.unit_of.items()}
    lay.clear_log()
    env = base_env | {
        "RAZAR_CONFIG": str(lay.config()),
        "RAZAR_COMPONENT": "gateway",
        "RAZAR_UNIT": lay.unit_of["gateway"],
    }

    rc, out = execute([str(SCRIPTS / "throat_api_stabilize.sh")], env)
    assert rc == 0, out
    assert out["healer"] == "throat_api_stabilize" and out["healed_by"] == "restart_layer"
    assert out["details"]["restarted"] == ["api", "gateway", "sidecar"]
    assert out["details"]["trigger"] == {"component": "gateway", "unit": lay.unit_of["gateway"]}
    assert lay.lines() == [
        "api start",
        "api ready",
        "gateway start",
        "gateway ready",
        "sidecar start",
    ]
    for name, unit in lay.unit_of.items():
        assert units.main_pid(unit) not in (0, pids[name]), name


def test_crown_stops_at_the_first_component_that_does_not_come_back(
    units: Units, base_env: dict[str, str], tmp_path: Path
) -> None:
    """A component whose probe never passes: exit 1 naming it, later ones not restarted."""
    lay = make_layer(units, tmp_path, "crown")
    lay.plain("scheduler", 1, "/bin/sleep infinity")
    lay.server("broken", 2, probe_port=free_port())  # its probe asks a port nobody serves
    lay.plain("dashboard", 3, "/bin/sleep infinity")
    # shorter wait for the broken one: its probe can never pass
    cfg = lay.config()
    cfg.write_text(cfg.read_text().replace("start_timeout = 10", "start_timeout = 1.5"))
    dash_pid = units.main_pid(lay.unit_of["dashboard"])
    lay.clear_log()

    rc, out = execute(
        [str(SCRIPTS / "crown_full_restart.sh")], base_env | {"RAZAR_CONFIG": str(cfg)}
    )
    assert rc == 1, out
    assert out["healer"] == "crown_full_restart" and out["result"] == "not_healed"
    assert out["reason"].startswith(f"broken ({lay.unit_of['broken']}) did not come back")
    assert "not healthy within 1.5s" in out["reason"]
    assert out["details"]["failed"]["component"] == "broken"
    assert out["details"]["not_restarted"] == ["dashboard"]
    assert out["details"]["restarted"] == ["scheduler"]
    assert "dashboard start" not in lay.lines()
    assert units.main_pid(lay.unit_of["dashboard"]) == dash_pid


def test_crown_does_not_call_a_unit_that_died_at_once_healthy(
    units: Units, base_env: dict[str, str], tmp_path: Path
) -> None:
    """A component without a probe that is active after its restart and dies half a
    second later: the healer looks again before it says anything, and says not healed."""
    lay = make_layer(units, tmp_path, "crown")
    lay.plain("indexer", 1, "/bin/sh -c 'sleep 0.5; exit 3'")
    rc, out = execute(
        [str(SCRIPTS / "crown_full_restart.sh")],
        base_env | {"RAZAR_CONFIG": str(lay.config()), "RAZAR_RESTART_SETTLE": "1.5"},
    )
    assert rc == 1, out
    assert out["result"] == "not_healed" and "all healthy" not in out["reason"], out
    assert "down again" in out["reason"] and lay.unit_of["indexer"] in out["reason"]


def test_third_eye_flushes_then_restarts(
    units: Units, base_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGUSR1 reaches the main process (it writes a marker) before the restart.
    Runs the .py script by path."""
    lay = make_layer(units, tmp_path, "third_eye")
    trap = f"trap 'echo infer flushed >> {lay.log}' USR1; while :; do sleep 0.1; done"
    lay.plain("infer", 5, f'/bin/sh -c "{trap}"')
    lay.plain("idle", 6, "/bin/sleep infinity")
    lay.clear_log()
    env = base_env | {"RAZAR_CONFIG": str(lay.config()), "RAZAR_FLUSH_GRACE": "0.5"}

    rc, out = execute([sys.executable, str(SCRIPTS / "third_eye_inference_flush.py")], env)
    assert rc == 0, out
    assert out["healer"] == "third_eye_inference_flush"
    assert out["details"]["flush"]["signal"] == "SIGUSR1"
    assert out["details"]["flush"]["signalled"] == [lay.unit_of["infer"], lay.unit_of["idle"]]
    # sleep(1) dies of SIGUSR1 (it has no handler): no marker; the restart brings it back
    assert lay.lines() == ["infer flushed", "infer start", "idle start"]
    assert units.show(lay.unit_of["idle"], "ActiveState") == "active"


def test_restart_healers_not_applicable_dry_run_and_bad_signal(
    tmp_path: Path, base_env: dict[str, str], inproc: Runner
) -> None:
    """No RAZAR_CONFIG, or no components in the layer: not applicable. A dry run plans
    the signal and the restarts in priority order. A bad signal is named by its setting."""
    rc, out = inproc(restart.run_throat, base_env)
    assert rc == 2 and "RAZAR_CONFIG" in out["reason"], out

    cfg = tmp_path / "razard.toml"
    cfg.write_text(
        '[[component]]\nname = "b"\nlayer = "third_eye"\npriority = 9\nunit = "b.service"\n'
        '[[component]]\nname = "a"\nlayer = "third_eye"\npriority = 3\nunit = "a.service"\n'
    )
    env = base_env | {"RAZAR_CONFIG": str(cfg)}
    rc, out = inproc(restart.run_crown, env)
    assert rc == 2 and "no components in the crown layer" in out["reason"], out

    rc, out = execute(
        [sys.executable, "-m", "agents.healing.restart", "third_eye", "--dry-run"], env
    )
    assert rc == 1 and out["dry_run"], out
    assert out["plan"][:3] == [
        "send SIGUSR1 to the main process of a.service",
        "send SIGUSR1 to the main process of b.service",
        "wait 5s for them to drop their queues",
    ]
    assert out["plan"][3].startswith("restart a.service (a)")
    assert out["plan"][4].startswith("restart b.service (b)")

    rc, out = inproc(restart.run_third_eye, env | {"RAZAR_FLUSH_SIGNAL": "SIGNOPE"})
    assert rc == 1 and "RAZAR_FLUSH_SIGNAL" in out["reason"], out
    rc, out = inproc(restart.run_third_eye, env | {"RAZAR_FLUSH_SIGNAL": "12"}, "--dry-run")
    assert rc == 1 and out["plan"][0].startswith("send SIGUSR2 "), out


def test_damaged_saved_values_are_an_error_not_forgotten(
    cpu_env: dict[str, str], inproc: Runner
) -> None:
    """A damaged store may hold the only record of a value to restore: it is reported
    (naming the file) and left in place, never silently dropped."""
    saved = (
        Path(cpu_env["RAZAR_STATE_DIR"]) / "healers" / "solar_plexus_cpu_throttle" / "saved.json"
    )
    saved.parent.mkdir(parents=True)
    saved.write_text('{"units": {"a.service": {"CPUWeight": {"original": "x"}}}}')
    rc, out = inproc(solar_plexus.run, cpu_env | {"RAZAR_HEAL_MODE": "restore"})
    assert rc == 1 and str(saved) in out["reason"] and "damaged" in out["reason"], out
    assert saved.exists()

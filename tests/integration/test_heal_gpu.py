"""The sacral healer (sacral_gpu_recover) on real units, with a fake GPU.

There is no GPU here: the fake NVML (``RAZAR_NVML_FAKE``) plays it, listing the
real MainPIDs of real units on the session's systemd user manager as its
compute processes, and a fake ``nvidia-smi`` first on ``PATH`` records its
arguments and clears the fake's recovery action, as a reset would. Everything
else is real: the units are stopped, killed and started by systemd, and the
tests check what an operator sees (the JSON, the exit code, the units' state
and MainPIDs, the calls of ``nvidia-smi``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pynvml
import pytest

from agents.healing import sacral
from razard.usermanager import UserManager, write_unit
from tests.processes import gone

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "chakra_healing" / "sacral_gpu_recover.py"
UUID0 = "GPU-0a1b2c3d-0000-1111-2222-333344445555"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FAKE_NVIDIA_SMI = """\
#!{python}
# A stand-in for nvidia-smi: records its arguments; on --gpu-reset clears the
# fake GPU's recovery action (or, with FAKE_SMI_FAIL=1, fails as a busy GPU does).
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_SMI_FAIL") == "1":
    print("Unable to reset GPU 00000000:07:00.0: In use by another client")
    sys.exit(255)
path = os.environ["RAZAR_NVML_FAKE"]
with open(path) as f:
    doc = json.load(f)
for gpu in doc["gpus"]:
    gpu["recovery_action"] = "none"
with open(path + ".tmp", "w") as f:
    json.dump(doc, f)
os.replace(path + ".tmp", path)
print("GPU 00000000:07:00.0 was successfully reset.")
"""


def one_json(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one JSON line, got: {out!r}"
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


@dataclass
class GpuNode:
    """A fake GPU whose jobs are real units on the shared manager; all removed afterwards."""

    um: UserManager
    base: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    units: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.fake = self.base / "gpus.json"
        self.smi_log = self.base / "nvidia-smi.calls"
        bin_dir = self.base / "bin"
        bin_dir.mkdir()
        smi = bin_dir / "nvidia-smi"
        smi.write_text(FAKE_NVIDIA_SMI.format(python=sys.executable, log=str(self.smi_log)))
        smi.chmod(0o755)
        env = self.um.env()
        for k in [k for k in env if k.startswith("RAZAR_")]:
            del env[k]
        env.update(
            {
                "RAZAR_BUS": "user",
                "RAZAR_STATE_DIR": str(self.base / "state"),
                "RAZAR_NVML_FAKE": str(self.fake),
                "PATH": f"{bin_dir}:{env.get('PATH', os.defpath)}",
            }
        )
        self.env = env

    def add(self, stem: str, command: str = "/bin/sleep 600") -> str:
        """Write and start a unit standing in for a GPU job."""
        name = f"razar-gpujob-{self.tag}-{stem}.service"
        write_unit(
            self.um, name, f"[Unit]\nDescription=GPU job {stem}\n\n[Service]\nExecStart={command}\n"
        )
        self.units.append(name)
        self.um.systemctl("start", name)
        return name

    def show(self, unit: str, prop: str) -> str:
        return self.um.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID") or 0)

    def gpu(self, action: str, pids: list[int]) -> None:
        """Describe one GPU asking for ``action`` and running ``pids``."""
        doc = {
            "gpus": [
                {
                    "uuid": UUID0,
                    "name": "NVIDIA H100 80GB HBM3",
                    "utilization": 0.9,
                    "memory_used": 10 << 30,
                    "memory_total": 80 << 30,
                    "recovery_action": action,
                    "processes": [{"pid": p, "used_memory": 1 << 30} for p in pids],
                }
            ]
        }
        tmp = self.fake.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.fake)

    def action(self) -> str:
        return str(json.loads(self.fake.read_text())["gpus"][0]["recovery_action"])

    def smi_calls(self) -> list[list[str]]:
        if not self.smi_log.exists():
            return []
        return [json.loads(line) for line in self.smi_log.read_text().splitlines()]

    def cleanup(self) -> None:
        for u in self.units:
            self.um.systemctl("kill", "--signal=KILL", u, check=False)  # one may ignore SIGTERM
            self.um.systemctl("stop", u, check=False)
            self.um.systemctl("reset-failed", u, check=False)
            (self.um.unit_dir / u).unlink(missing_ok=True)
        if self.units:
            self.um.systemctl("daemon-reload", check=False)


@pytest.fixture
def node(user_manager: UserManager, tmp_path: Path) -> Iterator[GpuNode]:
    n = GpuNode(user_manager, tmp_path)
    try:
        yield n
    finally:
        n.cleanup()


@pytest.fixture
def two_jobs(node: GpuNode) -> tuple[str, str, dict[str, int]]:
    """Two running GPU jobs; their MainPIDs by unit."""
    a, b = node.add("a"), node.add("b")
    return a, b, {a: node.main_pid(a), b: node.main_pid(b)}


def inproc(
    capsys: pytest.CaptureFixture[str], env: dict[str, str], *argv: str
) -> tuple[int, dict[str, Any]]:
    """Run the healer's ``run(argv, env)`` in this process; (exit code, its JSON)."""
    capsys.readouterr()
    rc = sacral.run(list(argv), env)
    return rc, one_json(capsys.readouterr().out)


def execute(argv: list[str], env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Run the healer as its own process."""
    cp = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert cp.stdout.strip(), f"no JSON on stdout; stderr: {cp.stderr}"
    return cp.returncode, one_json(cp.stdout)


def restarted(node: GpuNode, units: list[str], old: dict[str, int]) -> None:
    """Each unit is active again under a new MainPID, and its old main process is gone."""
    for u in units:
        assert node.show(u, "ActiveState") == "active", u
        assert node.main_pid(u) not in (0, old[u]), u
        assert gone(old[u]), u


# --------------------------------------------------------------------------- cases


def test_reset_allowed_flushes_resets_and_restarts_the_jobs(
    node: GpuNode, two_jobs: tuple[str, str, dict[str, int]]
) -> None:
    """GPU asks for gpu_reset, resets allowed: both jobs stopped, nvidia-smi --gpu-reset -i 0,
    the GPU answers with no recovery action, both jobs started again. Run by path."""
    a, b, pids = two_jobs
    node.gpu("gpu_reset", [pids[a], pids[b]])

    rc, out = execute([sys.executable, str(SCRIPT)], node.env | {"RAZAR_GPU_ALLOW_RESET": "1"})

    assert rc == 0, out
    assert out["healer"] == "sacral_gpu_recover" and out["layer"] == "sacral"
    assert out["result"] == "healed" and out["healed_by"] == "reset", out
    assert node.smi_calls() == [["--gpu-reset", "-i", "0"]]
    restarted(node, [a, b], pids)
    d = out["details"]
    assert sorted((p["pid"], p["unit"], p["used_memory"]) for p in d["processes"]) == sorted(
        [(pids[a], a, 1 << 30), (pids[b], b, 1 << 30)]
    )
    assert sorted((u["unit"], u["result"]) for u in d["units_stopped"]) == [
        (a, "done"),
        (b, "done"),
    ]
    assert sorted((u["unit"], u["result"]) for u in d["units_started"]) == [
        (a, "done"),
        (b, "done"),
    ]
    (gpu,) = d["gpus"]
    assert (gpu["index"], gpu["uuid"]) == (0, UUID0)
    assert gpu["recovery_action_before"] == "gpu_reset"
    assert gpu["recovery_action_after"] == "none"
    assert gpu["idle"] is True and gpu["answers"] is True
    assert gpu["reset"]["ran"] is True and gpu["reset"]["exit_status"] == 0
    assert d["rate_limit"] == "1/2 in the last 1h"
    assert [s["step"] for s in out["steps"]] == [
        "open_nvml",
        "select_gpu",
        "find_processes",
        "stop_units",
        "wait_idle",
        "read_recovery_action",
        "reset",
        "recheck",
        "start_units",
    ]
    assert all(s["ok"] for s in out["steps"]), out["steps"]


def test_reset_not_allowed_is_not_healed_and_jobs_come_back(
    node: GpuNode, two_jobs: tuple[str, str, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Without RAZAR_GPU_ALLOW_RESET no nvidia-smi runs; not healed, saying why; jobs restarted."""
    a, b, pids = two_jobs
    node.gpu("gpu_reset", [pids[a], pids[b]])

    rc, out = inproc(capsys, node.env)

    assert rc == 1, out
    assert out["result"] == "not_healed"
    assert "recovery action gpu_reset needs a reset; RAZAR_GPU_ALLOW_RESET is off" in out["reason"]
    assert node.smi_calls() == []
    assert node.action() == "gpu_reset"
    restarted(node, [a, b], pids)
    gpu = out["details"]["gpus"][0]
    assert gpu["reset"] == {"ran": False, "why": "RAZAR_GPU_ALLOW_RESET is off"}
    assert gpu["recovery_action_after"] == "gpu_reset"
    assert [u["result"] for u in out["details"]["units_started"]] == ["done", "done"]


def test_reset_rate_limit_stops_a_second_reset_within_the_hour(
    node: GpuNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """With one reset allowed per hour, the second GPU fault in the hour is not reset."""
    job = node.add("a")
    env = node.env | {"RAZAR_GPU_ALLOW_RESET": "1", "RAZAR_GPU_MAX_RESETS_PER_HOUR": "1"}
    node.gpu("gpu_reset", [node.main_pid(job)])
    rc, first = inproc(capsys, env)
    assert rc == 0, first

    old = {job: node.main_pid(job)}
    node.gpu("gpu_reset", [old[job]])
    rc, second = inproc(capsys, env)

    assert rc == 1, second
    assert "rate limit is used up (1/1 in the last 1h" in second["reason"]
    assert node.smi_calls() == [["--gpu-reset", "-i", "0"]]
    assert second["details"]["gpus"][0]["reset"]["ran"] is False
    assert second["details"]["rate_limit"] == "1/1 in the last 1h"
    restarted(node, [job], old)


def test_flush_without_recovery_action_restarts_the_jobs_only(
    node: GpuNode, two_jobs: tuple[str, str, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Recovery action none: the failed component's GPU is flushed (its jobs restarted), no
    reset; a process outside any unit is reported and left running."""
    a, b, pids = two_jobs
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        node.gpu("none", [pids[a], pids[b], stranger.pid])
        env = node.env | {"RAZAR_UNIT": a, "RAZAR_GPU_IDLE_TIMEOUT": "0.5"}

        rc, out = inproc(capsys, env)

        assert rc == 0, out
        assert out["result"] == "healed" and out["healed_by"] == "stop_units", out
        assert out["details"]["selected_by"] == f"RAZAR_GPU unset: the GPUs running {a}"
        assert node.smi_calls() == []
        restarted(node, [a, b], pids)
        assert stranger.poll() is None
        (left,) = [p for p in out["details"]["processes"] if p["pid"] == stranger.pid]
        assert left["unit"] is None and left["stop"] is False
        assert left["why"] == "not in any systemd unit"
        gpu = out["details"]["gpus"][0]
        assert gpu["idle"] is False and gpu["busy_pids"] == [stranger.pid]
        assert gpu["reset"] == {"ran": False, "why": "recovery action none needs no reset"}
    finally:
        stranger.kill()
        stranger.wait()


def test_dry_run_plans_and_touches_nothing(
    node: GpuNode, two_jobs: tuple[str, str, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run lists the units it would stop and the reset it would run; nothing changes."""
    a, b, pids = two_jobs
    node.gpu("gpu_reset", [pids[a], pids[b]])

    rc, out = inproc(capsys, node.env | {"RAZAR_GPU_ALLOW_RESET": "1"}, "--dry-run")

    assert rc == 1, out
    assert out["dry_run"] is True and out["result"] == "not_healed"
    assert out["reason"] == "dry run: nothing changed; would stop 2 unit(s) and reset GPU 0"
    plan = "\n".join(out["plan"])
    for unit in (a, b):
        assert f"stop {unit} " in plan and f"start {unit} again" in plan
    assert "reset GPU 0: nvidia-smi --gpu-reset -i 0" in plan
    assert not any(s["changed"] for s in out["steps"])
    assert {a: node.main_pid(a), b: node.main_pid(b)} == pids
    assert node.smi_calls() == []
    assert node.action() == "gpu_reset"
    assert not (node.base / "state").exists()


def test_a_job_ignoring_sigterm_is_killed_and_started_again(
    node: GpuNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job that ignores SIGTERM is SIGKILLed after RAZAR_GPU_STOP_TIMEOUT; the run goes on."""
    stubborn = node.add("stubborn", "/bin/sh -c 'trap \"\" TERM; sleep 600'")
    polite = node.add("polite")
    pids = {stubborn: node.main_pid(stubborn), polite: node.main_pid(polite)}
    node.gpu("none", list(pids.values()))

    rc, out = inproc(capsys, node.env | {"RAZAR_GPU_STOP_TIMEOUT": "1"})

    assert rc == 0, out
    stopped = {u["unit"]: u["result"] for u in out["details"]["units_stopped"]}
    assert stopped == {stubborn: "killed", polite: "done"}
    restarted(node, [stubborn, polite], pids)


def test_gpu_asking_for_a_node_reboot_is_left_alone(
    node: GpuNode, two_jobs: tuple[str, str, dict[str, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A GPU that asks for a node reboot: not healed, nothing stopped, no reset."""
    a, b, pids = two_jobs
    node.gpu("node_reboot", [pids[a], pids[b]])

    rc, out = inproc(capsys, node.env | {"RAZAR_GPU_ALLOW_RESET": "1"})

    assert rc == 1, out
    assert out["reason"] == "GPU 0 asks for a node reboot"
    assert {a: node.main_pid(a), b: node.main_pid(b)} == pids
    assert node.smi_calls() == []


def test_a_failed_reset_is_not_healed_and_jobs_come_back(
    node: GpuNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """nvidia-smi failing (GPU in use by another client) is recorded; not healed; job restarted."""
    job = node.add("a")
    old = {job: node.main_pid(job)}
    node.gpu("drain_and_reset", [old[job]])

    rc, out = inproc(capsys, node.env | {"RAZAR_GPU_ALLOW_RESET": "1", "FAKE_SMI_FAIL": "1"})

    assert rc == 1, out
    assert "nvidia-smi --gpu-reset failed (exit status 255" in out["reason"]
    assert "In use by another client" in out["details"]["gpus"][0]["reset"]["output"]
    assert node.smi_calls() == [["--gpu-reset", "-i", "0"]]
    restarted(node, [job], old)


def test_unknown_gpu_or_bad_setting_names_the_variable(
    node: GpuNode, capsys: pytest.CaptureFixture[str]
) -> None:
    """RAZAR_GPU naming no GPU here is not applicable; a bad timeout is an error naming it."""
    node.gpu("gpu_reset", [])
    rc, out = inproc(capsys, node.env | {"RAZAR_GPU": "GPU-nope"})
    assert rc == 2 and out["result"] == "not_applicable", out
    assert "RAZAR_GPU: no GPU 'GPU-nope'" in out["reason"]

    rc, out = inproc(capsys, node.env | {"RAZAR_GPU_STOP_TIMEOUT": "soon"})
    assert rc == 1 and "RAZAR_GPU_STOP_TIMEOUT" in out["reason"], out


def _nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_present(), reason="this machine has a working NVML")
def test_without_driver_the_healer_is_not_applicable(node: GpuNode) -> None:
    """No RAZAR_NVML_FAKE and no NVIDIA driver: exit 2, the reason names NVML."""
    env = {k: v for k, v in node.env.items() if k != "RAZAR_NVML_FAKE"}
    rc, out = execute([sys.executable, "-m", "agents.healing.sacral"], env)
    assert rc == 2, out
    assert out["result"] == "not_applicable"
    assert "NVML library not found" in out["reason"]
    assert node.smi_calls() == []

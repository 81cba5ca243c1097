"""Which runtime limits a host's cgroup layout honours (heart's MemoryHigh, solar_plexus's
CPUWeight), read from cgroup trees the test lays out like pure v2 and hybrid hosts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.healing.units import controller_support

GROUP = "/user.slice/app.service"


def _tree(root: Path, controllers: str, group: str = GROUP) -> Path:
    (root / group.strip("/")).mkdir(parents=True)
    for d in [root, *(root / group.strip("/")).parents]:
        if d.is_relative_to(root):
            (d / "cgroup.controllers").write_text(controllers + "\n")
    return root


def test_pure_v2_with_the_controllers_supports_both(tmp_path: Path) -> None:
    v2 = _tree(tmp_path / "v2", "cpuset cpu io memory pids")
    ok, why = controller_support("MemoryHigh", GROUP, unified=[v2], cpu_v1=[])
    assert ok and "cgroup v2 memory controller available" in why
    assert controller_support("CPUWeight", GROUP, unified=[v2], cpu_v1=[])[0]


def test_hybrid_without_v2_controllers_supports_neither_and_says_why(tmp_path: Path) -> None:
    unified = _tree(tmp_path / "unified", "")
    ok, why = controller_support("MemoryHigh", GROUP, unified=[unified], cpu_v1=[])
    assert not ok
    assert "MemoryHigh needs the cgroup v2 memory controller" in why
    assert "offers no controllers" in why
    ok, why = controller_support("CPUWeight", GROUP, unified=[unified], cpu_v1=[])
    assert not ok and "cgroup v2 cpu controller" in why


def test_cpu_weight_works_where_the_v1_cpu_hierarchy_holds_the_unit(tmp_path: Path) -> None:
    unified = _tree(tmp_path / "unified", "")
    cpu = tmp_path / "cpu"
    (cpu / GROUP.strip("/")).mkdir(parents=True)
    ok, why = controller_support("CPUWeight", GROUP, unified=[unified], cpu_v1=[cpu])
    assert ok and "cgroup v1 cpu controller" in why
    # MemoryHigh has no v1 equivalent at all
    assert not controller_support("MemoryHigh", GROUP, unified=[unified], cpu_v1=[cpu])[0]


def test_no_cgroup_v2_tree_at_all(tmp_path: Path) -> None:
    ok, why = controller_support("MemoryHigh", GROUP, unified=[tmp_path / "none"], cpu_v1=[])
    assert not ok and "no cgroup v2 tree" in why


def test_a_dry_run_says_so_even_when_systemd_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """heart and solar_plexus with --dry-run and no bus: not healed, and "dry_run": true."""
    from agents.healing import heart, solar_plexus

    (tmp_path / "psi").write_text(
        "some avg10=90.00 avg60=0.00 avg300=0.00 total=1\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    env = {
        "RAZAR_BUS": "user",
        "DBUS_SESSION_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}",
        "RAZAR_STATE_DIR": str(tmp_path / "state"),
        "RAZAR_MEMORY_PRESSURE_FILE": str(tmp_path / "psi"),
        "RAZAR_CPU_PRESSURE_FILE": str(tmp_path / "psi"),
    }
    for healer in (heart, solar_plexus):
        capsys.readouterr()
        rc = healer.run(["--dry-run"], env)
        out = json.loads(capsys.readouterr().out)
        assert rc == 1 and out["dry_run"] is True, out
        assert "cannot reach systemd" in out["reason"], out

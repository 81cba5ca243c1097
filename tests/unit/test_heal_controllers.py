"""Which runtime limits a host's cgroup layout honours (heart's MemoryHigh, solar_plexus's
CPUWeight), read from cgroup trees the test lays out like pure v2 and hybrid hosts."""

from __future__ import annotations

from pathlib import Path

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

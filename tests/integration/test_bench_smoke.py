"""The benchmark harness (bench/) in smoke mode, so it cannot rot unnoticed.

It asserts what a person running ``python -m bench run`` gets: the three result
files, well formed, with a figure for every scenario and system. Never a speed:
how fast razard is, is what bench/ reports, not what a test holds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from razard.usermanager import SYSTEMD

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("razard", "systemd", "supervisord")
IDLE = ("razard", "razard+probes", "systemd", "supervisord")
JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")

pytestmark = [pytest.mark.integration, pytest.mark.bench]


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, journald: None) -> Path:
    """One smoke run of the whole harness; its output directory. The run's shared journald
    is up first, so the harness uses it and does not start (and then stop) its own."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the harness starts private systemd user managers")
    if not SYSTEMD.exists():
        pytest.skip(f"needs {SYSTEMD}")
    if not (Path(sys.executable).parent / "supervisord").exists():
        pytest.skip("needs supervisord in the virtualenv (the bench extra)")
    out = tmp_path_factory.mktemp("bench")
    p = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, f"bench exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}"
    return out


def _doc(results: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((results / "results.json").read_text())
    return doc


def test_smoke_run_writes_the_three_result_files(results: Path) -> None:
    """A run leaves results.md, strict JSON in results.json and a PNG plot."""
    md = (results / "results.md").read_text()
    assert md.startswith("# razar benchmarks")
    assert "## Targets" in md
    json.loads((results / "results.json").read_text(), parse_constant=_no_nan)
    assert (results / "recovery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _no_nan(name: str) -> None:
    raise AssertionError(f"results.json holds {name}, which is not JSON")


def test_every_system_has_figures_for_recovery_storm_and_boot(results: Path) -> None:
    """Scenarios 1-3 have a median, p90, min and max from at least one trial per system."""
    sc = _doc(results)["scenarios"]
    for scenario in ("recovery", "storm", "boot"):
        assert not sc[scenario].get("errors"), sc[scenario].get("errors")
        for system in SYSTEMS:
            fig = sc[scenario]["systems"][system]
            assert fig["n"] >= 1, (scenario, system)
            for key in ("median", "p90", "min", "max"):
                assert _number(fig[key]) and fig[key] > 0, (scenario, system, key, fig)
            assert len(fig["samples"]) == fig["n"]


def test_recovery_has_a_timeline_for_razard_and_systemd(results: Path) -> None:
    """Scenario 1's trials are placed on one clock: razard's from its own events (always
    there), both systems' SIGKILL-to-ready step from the component's note."""
    tl = _doc(results)["scenarios"]["timeline"]
    for system in ("razard", "systemd"):
        steps = tl[system]["medians"]["steps"]
        assert _number(steps["kill->ready"]["median"]), (system, steps)
        assert len(tl[system]["trials"]) >= 1
    assert _number(tl["razard"]["medians"]["steps"]["exited->start_sent"]["median"])
    assert "Where recovery's time goes" in (results / "results.md").read_text()


def test_load_scenario_has_figures_for_every_system(results: Path) -> None:
    """Scenarios 1 and 2 under CPU load: figures for each system and razard at nice -5."""
    sc = _doc(results)["scenarios"]
    assert sc["load"]["procs"] >= 1 and sc["load"]["method"]
    for scenario in ("load_recovery", "load_storm"):
        assert not sc[scenario].get("errors"), sc[scenario].get("errors")
        for system in (*SYSTEMS, "razard-nice"):
            fig = sc[scenario]["systems"][system]
            assert fig["n"] >= 1 and _number(fig["p90"]), (scenario, system, fig)
    assert "## Under load" in (results / "results.md").read_text()


def test_idle_cost_and_scrape_have_figures(results: Path) -> None:
    """Scenario 4 reports CPU and peak RSS for each system and razard with probes;
    scenario 5 a scrape latency for both razard configurations."""
    sc = _doc(results)["scenarios"]
    assert not sc["idle"].get("errors"), sc["idle"].get("errors")
    assert sc["idle"]["sizes"]
    for size, per in sc["idle"]["sizes"].items():
        for label in IDLE:
            m = per[label]
            assert _number(m["cpu_s"]) and m["cpu_s"] >= 0, (size, label)
            assert _number(m["peak_rss_mib"]) and m["peak_rss_mib"] > 0, (size, label)
    for label in ("razard", "razard+probes"):
        s = sc["scrape"]["systems"][label]
        assert s["n"] >= 1 and _number(s["median"]) and s["bytes"] > 0, label


def test_notifier_has_figures_or_says_why_not(results: Path) -> None:
    """Scenario 6 reports lines per second for the notifier and journalctl, or why it did
    not run (the notifier's modules or systemd-journal-remote missing)."""
    nt = _doc(results)["scenarios"]["notifier"]
    if "not_run" in nt:  # only for want of the Debian package: the notifier ships here
        assert not JOURNAL_REMOTE.exists(), nt
        pytest.skip(nt["not_run"])
    assert not nt.get("errors"), nt.get("errors")
    assert nt["entries_read"] == nt["entries"]
    for key in ("notifier_lps", "journalctl_lps"):
        assert _number(nt[key]) and nt[key] > 0, key


def test_every_target_is_judged(results: Path) -> None:
    """The targets table names each target of issue 6 with a figure and met/not met."""
    doc = _doc(results)
    targets = {t["target"]: t for t in doc["targets"]}
    assert len(targets) >= 9
    md = (results / "results.md").read_text()
    for t in targets.values():
        assert t["target"] in md
        if "Notifier" not in t["target"]:
            assert t["met"] in (True, False), t

"""The fleet benchmark (``python -m bench fleet``) at a tiny scale, so it cannot rot.

It asserts what the benchmark is for, never a speed: nodes took and gave back slots
and were killed, the history read back from etcd never held more slots than the
budget, and the results files carry every figure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("etcd") is None, reason="needs etcd (etcd-server)"),
]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-fleet")
    p = subprocess.run(
        [sys.executable, "-m", "bench", "fleet", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert p.returncode == 0, f"bench exited {p.returncode}:\n{p.stdout}\n{p.stderr[-3000:]}"
    return out


def _doc(results: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((results / "fleet.json").read_text())
    return doc


def test_the_history_from_etcd_never_holds_more_slots_than_the_budget(results: Path) -> None:
    c = _doc(results)["contention"]
    assert c["granted"] > 0 and c["events"] >= c["granted"]  # a put per slot taken
    assert c["revisions"] > 0
    assert 1 <= c["peak_held"] <= c["budget"]
    assert c["over_budget_revisions"] == []


def test_nodes_were_killed_and_every_dead_holders_slot_was_freed(results: Path) -> None:
    c = _doc(results)["contention"]
    assert c["kills"] >= 1
    assert c["dead_slots_never_freed"] == []


def test_idle_requests_were_counted_by_etcd_and_by_the_clients(results: Path) -> None:
    i = _doc(results)["idle"]
    assert i["joined"] == i["nodes"]
    assert i["server_requests"] > 0 and i["client_requests"] > 0


def test_the_table_names_the_command_and_judges_every_target(results: Path) -> None:
    md = (results / "fleet.md").read_text()
    assert md.startswith("# razar fleet benchmark")
    assert "python -m bench fleet --smoke" in md
    doc = _doc(results)
    assert len(doc["targets"]) == 3
    for t in doc["targets"]:
        assert t["target"] in md and t["met"] in (True, False, None), t
    assert doc["targets"][0]["met"] is True  # never over budget

"""razard killed (SIGKILL, in a real child process) at each step of apply/verify, then restarted.

After `PatchEngine.recover` the artifacts are either wholly patched and verified,
or wholly restored byte for byte; the records say which.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from razard.config import ComponentConfig
from razard.layout import HISTORY_FILE
from razard.repair.patch import CRASH_STEPS, RESTART_REASON, PatchEngine
from razard.storage import read_jsonl

APP = b"#!/bin/sh\nport=80\nexec serve --port $port\n"

# The child: check and apply a two-file patch (one edit, one new file in a new
# directory), then give the verdict; PatchEngine kills it at the named step.
CHILD = """
import sys
from pathlib import Path
from razard.config import ComponentConfig
from razard.repair.patch import PatchEngine
from razard.repair.types import FileEdit, Proposal

state, root, step, verdict = sys.argv[1:5]
comp = ComponentConfig(
    name="web", layer="root", priority=1, unit="razar-web.service",
    artifacts=("app.sh", "conf.d/"), artifact_root=root,
)
engine = PatchEngine(Path(state), _crash_at=step or None)
proposal = Proposal(agent="k2", edits=(
    FileEdit("app.sh", "port=80", "port=81"),
    FileEdit("conf.d/gpu/flush.conf", "", "flush = true\\n"),
))
applied = engine.apply(comp, engine.check(comp, proposal))
if verdict == "keep":
    engine.keep(comp, applied)
elif verdict == "revert":
    engine.revert(comp, applied, "probe still failing")
"""


def tree(root: Path) -> dict[str, Any]:
    """Every entry under ``root`` with its bytes and mode (dirs and temp files included)."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "srv"
    (r / "conf.d").mkdir(parents=True)
    (r / "app.sh").write_bytes(APP)
    (r / "app.sh").chmod(0o755)
    (r / "conf.d" / "main.conf").write_bytes(b"workers = 2\n")
    return r


@pytest.fixture
def comp(root: Path) -> ComponentConfig:
    return ComponentConfig(
        name="web",
        layer="root",
        priority=1,
        unit="razar-web.service",
        artifacts=("app.sh", "conf.d/"),
        artifact_root=str(root),
    )


def run_child(state: Path, root: Path, step: str, verdict: str) -> int:
    """Run the apply in a fresh interpreter; return its exit status (negative: signal)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(state), str(root), step, verdict],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.returncode


def statuses(state: Path) -> list[str]:
    return [r["status"] for r in read_jsonl(state / HISTORY_FILE)]


@pytest.mark.parametrize(
    ("step", "verdict", "history"),
    [
        ("intent", "", ["reverted"]),
        ("first_file", "", ["reverted"]),
        ("files", "", ["reverted"]),
        ("applied", "", ["applied", "reverted"]),
        ("applied", "keep", ["applied", "reverted"]),
    ],
)
def test_killed_before_verification_recovers_to_the_original_bytes(
    tmp_path: Path, root: Path, comp: ComponentConfig, step: str, verdict: str, history: list[str]
) -> None:
    """Killed anywhere between the intent record and keep: recover restores every byte."""
    state = tmp_path / "state"
    before = tree(root)
    assert run_child(state, root, step, verdict) == -signal.SIGKILL
    if step != "intent":
        assert tree(root) != before  # the kill really left files changed
    # What a kill in the middle of one file's write leaves beside it.
    (root / ".app.sh.razar-0123abcd.tmp").write_bytes(b"#!/bin/sh\npo")

    lines = PatchEngine(state).recover([comp])

    assert tree(root) == before  # no patched file, no new file or dir, no temp file left
    assert statuses(state) == history
    last = read_jsonl(state / HISTORY_FILE)[-1]
    assert last["reason"] == RESTART_REASON and last["files"] == ["app.sh", "conf.d/gpu/flush.conf"]
    assert len(lines) == 1 and "was not verified before razard stopped" in lines[0]
    assert not (state / "repair" / "web.pending.json").exists()
    assert PatchEngine(state).recover([comp]) == []  # a second start has nothing to do


def test_killed_after_snapshot_leaves_nothing_to_undo(
    tmp_path: Path, root: Path, comp: ComponentConfig
) -> None:
    """Killed after the snapshot but before the intent record: no file was touched."""
    state = tmp_path / "state"
    before = tree(root)
    assert run_child(state, root, "snapshot", "") == -signal.SIGKILL
    assert PatchEngine(state).recover([comp]) == []
    assert tree(root) == before and statuses(state) == []


def test_killed_mid_revert_finishes_the_revert(
    tmp_path: Path, root: Path, comp: ComponentConfig
) -> None:
    """Killed after deciding to revert: recover completes it with the original reason."""
    state = tmp_path / "state"
    before = tree(root)
    assert run_child(state, root, "reverting", "revert") == -signal.SIGKILL
    lines = PatchEngine(state).recover([comp])
    assert tree(root) == before
    assert statuses(state) == ["applied", "reverted"]
    assert read_jsonl(state / HISTORY_FILE)[-1]["reason"] == "probe still failing"
    assert len(lines) == 1 and "finished reverting" in lines[0]


def test_killed_while_keeping_stays_patched(
    tmp_path: Path, root: Path, comp: ComponentConfig
) -> None:
    """Killed after keep was decided and recorded: recover keeps the patch, once."""
    state = tmp_path / "state"
    assert run_child(state, root, "kept", "keep") == -signal.SIGKILL
    patched = tree(root)
    assert patched[str(Path("conf.d/gpu/flush.conf"))][0] == b"flush = true\n"

    PatchEngine(state).recover([comp])

    assert tree(root) == patched
    assert statuses(state) == ["applied", "kept"]  # the kept record is not written twice
    assert not (state / "repair" / "web.pending.json").exists()


def test_killed_after_keep_recover_does_nothing(
    tmp_path: Path, root: Path, comp: ComponentConfig
) -> None:
    """A patch kept before razard died stays exactly as it was; recover reports nothing."""
    state = tmp_path / "state"
    assert run_child(state, root, "", "keep") == 0
    patched = tree(root)
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=81")
    assert stat.S_IMODE((root / "app.sh").stat().st_mode) == 0o755

    assert PatchEngine(state).recover([comp]) == []
    assert tree(root) == patched and statuses(state) == ["applied", "kept"]


def test_every_crash_step_is_covered() -> None:
    """Each documented crash step is exercised by a test in this file."""
    source = Path(__file__).read_text()
    assert all(f'"{step}"' in source for step in CRASH_STEPS)


def test_unknown_crash_step_is_rejected(tmp_path: Path) -> None:
    """A typo in the test-only hook fails loudly instead of never crashing."""
    with pytest.raises(ValueError, match="unknown crash step"):
        PatchEngine(tmp_path, _crash_at="aplied")
    assert os.listdir(tmp_path) == []

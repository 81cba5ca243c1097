"""The patch engine on real files: refusals, byte-exact apply, revert, rollback, records, lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from razard.config import ComponentConfig
from razard.layout import HISTORY_FILE, PATCHES_FILE
from razard.repair import patch as patch_mod
from razard.repair import snapshots as snapshots_mod
from razard.repair.difftools import (
    DiffError,
    apply_file_patch,
    parse_unified_diff,
    unified_diff,
)
from razard.repair.patch import (
    MAX_FILE_BYTES,
    MAX_PATCH_BYTES,
    PatchEngine,
)
from razard.repair.snapshots import UnsafePath
from razard.repair.types import FileEdit, PatchRefused, Proposal, RepairError
from razard.storage import read_jsonl

APP = b"#!/bin/sh\n# app\nport=80\nexec serve --port $port\n"
CONF = b"[main]\nworkers = 2\n"


def make_comp(
    root: Path, artifacts: tuple[str, ...] = ("app.sh", "conf.d/", "extra.conf")
) -> ComponentConfig:
    """A component whose artifacts live under ``root``."""
    return ComponentConfig(
        name="web",
        layer="root",
        priority=1,
        unit="razar-web.service",
        artifacts=artifacts,
        artifact_root=str(root),
    )


def tree(root: Path) -> dict[str, Any]:
    """Every entry under ``root``: files as (bytes, mode), dirs, symlinks as their target."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        else:
            out[rel] = "special"
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "srv"
    (r / "conf.d").mkdir(parents=True)
    (r / "app.sh").write_bytes(APP)
    (r / "app.sh").chmod(0o750)
    (r / "conf.d" / "main.conf").write_bytes(CONF)
    return r


@pytest.fixture
def comp(root: Path) -> ComponentConfig:
    return make_comp(root)


@pytest.fixture
def engine(tmp_path: Path) -> PatchEngine:
    return PatchEngine(tmp_path / "state")


def edit(path: str, search: str, replace: str, agent: str = "registry") -> Proposal:
    return Proposal(agent=agent, rationale="fix it", edits=(FileEdit(path, search, replace),))


def refusal(engine: PatchEngine, comp: ComponentConfig, proposal: Proposal) -> str:
    """Check ``proposal``, expect a refusal; return its reason after checking the record."""
    with pytest.raises(PatchRefused) as info:
        engine.check(comp, proposal)
    records = read_jsonl(engine.state_dir / PATCHES_FILE)
    last = records[-1]
    assert last["status"] == "refused"
    assert last["reason"] == str(info.value)
    assert last["component"] == comp.name and last["agent"] == proposal.agent
    assert len(last["diff_hash"]) == 64 and last["time"].endswith("+00:00") and last["patch_id"]
    assert not (engine.state_dir / HISTORY_FILE).exists()
    return str(info.value)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside.conf", "'..'"),
        ("conf.d/../../x", "'..'"),
        ("other.conf", "outside web's artifacts"),
        ("conf.d", "outside web's artifacts"),
        ("./app.sh", "not normalised"),
        ("conf.d//main.conf", "not normalised"),
        ("app.sh\0x", "NUL"),
    ],
)
def test_bad_paths_are_refused_and_recorded(
    engine: PatchEngine, comp: ComponentConfig, root: Path, path: str, words: str
) -> None:
    """A path that is absolute, climbs, is unnormalised or outside the artifacts is refused."""
    before = tree(root)
    assert words in refusal(engine, comp, edit(path, "", "pwned\n"))
    assert tree(root) == before


def test_symlink_pointing_out_of_the_root_is_refused(
    engine: PatchEngine, comp: ComponentConfig, root: Path, tmp_path: Path
) -> None:
    """A symlinked artifact is refused even for a whole-file write; its target is untouched."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"secret\n")
    (root / "conf.d" / "evil.conf").symlink_to(victim)
    assert "symlink" in refusal(engine, comp, edit("conf.d/evil.conf", "", "pwned\n"))
    assert victim.read_bytes() == b"secret\n"
    assert read_jsonl(engine.state_dir / PATCHES_FILE)[-1]["files"] == ["conf.d/evil.conf"]


def test_symlink_inside_the_root_is_refused_too(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """Any symlink on the way is refused, even one that stays inside the root."""
    (root / "extra.conf").symlink_to(root / "app.sh")
    assert "symlink" in refusal(engine, comp, edit("extra.conf", "port=80", "port=81"))


def test_symlinked_parent_directory_is_refused(
    engine: PatchEngine, comp: ComponentConfig, root: Path, tmp_path: Path
) -> None:
    """A file reached through a symlinked directory is refused; nothing appears outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "conf.d" / "sub").symlink_to(outside)
    reason = refusal(engine, comp, edit("conf.d/sub/new.conf", "", "x\n"))
    assert "conf.d/sub is a symlink" in reason
    assert list(outside.iterdir()) == []


def test_fifo_target_is_refused_without_blocking(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A fifo in an artifact directory is refused (and never opened, which would block)."""
    os.mkfifo(root / "conf.d" / "pipe.conf")
    assert "is a fifo" in refusal(engine, comp, edit("conf.d/pipe.conf", "", "x\n"))


def test_device_target_is_refused(engine: PatchEngine, comp: ComponentConfig, root: Path) -> None:
    """A device node in an artifact directory is refused."""
    try:
        os.mknod(root / "conf.d" / "null.conf", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    assert "character device" in refusal(engine, comp, edit("conf.d/null.conf", "", "x\n"))


def test_too_big_proposal_is_refused(engine: PatchEngine, comp: ComponentConfig) -> None:
    """A proposal over MAX_PATCH_BYTES is refused before anything is read."""
    big = "x" * (MAX_PATCH_BYTES + 1)
    assert "over the" in refusal(engine, comp, edit("conf.d/big.conf", "", big))


def test_result_over_file_limit_is_refused(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A file that would grow past MAX_FILE_BYTES is refused, naming it."""
    (root / "conf.d" / "big.conf").write_bytes(b"a" * (MAX_FILE_BYTES - 5) + b"\nEND\n")
    reason = refusal(engine, comp, edit("conf.d/big.conf", "END", "END" * 10))
    assert reason.startswith("conf.d/big.conf: the result is")


def test_existing_file_over_limit_is_refused(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """An existing artifact larger than MAX_FILE_BYTES is not read in, let alone patched."""
    (root / "conf.d" / "huge.conf").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    assert "byte limit" in refusal(engine, comp, edit("conf.d/huge.conf", "a", "b"))


def test_missing_search_text_is_refused_naming_the_file(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """A search text that does not occur is refused, naming the file."""
    assert refusal(engine, comp, edit("app.sh", "port=8080", "port=81")) == (
        "app.sh: search text not found"
    )


def test_ambiguous_search_text_is_refused(engine: PatchEngine, comp: ComponentConfig) -> None:
    """A search text occurring more than once is refused: which one is meant is unknown."""
    assert "occurs 3 times" in refusal(engine, comp, edit("app.sh", "port", "p"))


def test_edit_of_a_missing_file_is_refused(engine: PatchEngine, comp: ComponentConfig) -> None:
    """A search/replace edit on a file that does not exist is refused."""
    assert "does not exist" in refusal(engine, comp, edit("extra.conf", "a", "b"))


@pytest.mark.parametrize(
    ("diff", "words"),
    [
        ("just some prose\n", "malformed diff: no '---'/'+++' file sections"),
        ("@@ -1 +1 @@\n-a\n+b\n", "malformed diff"),
        ("--- a/app.sh\n+++ b/app.sh\n@@ -1,5 +1,5 @@\n #!/bin/sh\n", "ends early"),
        ("--- a/app.sh\n+++ b/app.sh\n@@ bogus @@\n", "malformed header"),
        ("--- a/app.sh\n+++ b/app.sh\n@@ -1,2 +1,2 @@\n #!/bin/sh\n*oops\n", "unexpected line"),
    ],
)
def test_malformed_diff_is_refused(
    engine: PatchEngine, comp: ComponentConfig, diff: str, words: str
) -> None:
    """A diff that cannot be read is refused with what is wrong in it."""
    assert words in refusal(engine, comp, Proposal(agent="k2", diff=diff))


def test_diff_whose_context_does_not_match_names_file_and_hunk(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """A hunk whose context is not in the file is refused, naming the file and the hunk."""
    diff = "--- a/app.sh\n+++ b/app.sh\n@@ -3,1 +3,1 @@\n-port=8080\n+port=81\n"
    reason = refusal(engine, comp, Proposal(agent="k2", diff=diff))
    assert (
        reason
        == "diff does not apply: app.sh: hunk 1 (@@ -3,1 +3,1 @@): context does not match the file"
    )


@pytest.mark.parametrize(
    "diff",
    [
        "--- a/app.sh\n+++ /dev/null\n@@ -1 +0,0 @@\n-#!/bin/sh\n",
        "--- a/app.sh\n+++ b/conf.d/app.sh\n@@ -1 +1 @@\n-#!/bin/sh\n+#!/bin/bash\n",
        "--- /dev/null\n+++ b/app.sh\n@@ -0,0 +1 @@\n+new\n",
    ],
)
def test_deletions_renames_and_recreations_are_refused(
    engine: PatchEngine, comp: ComponentConfig, diff: str
) -> None:
    """Deleting, renaming, or 'creating' an existing file through a diff is refused."""
    assert refusal(engine, comp, Proposal(agent="k2", diff=diff)).startswith("diff does not apply")


@pytest.mark.parametrize(
    "proposal",
    [Proposal(agent="k2"), Proposal(agent="k2", diff="  \n"), edit("app.sh", "port=80", "port=80")],
)
def test_empty_change_is_refused(
    engine: PatchEngine, comp: ComponentConfig, proposal: Proposal
) -> None:
    """A proposal with nothing in it, or that leaves the files as they are, is refused."""
    assert refusal(engine, comp, proposal).startswith("no change")


def test_component_without_artifacts_refuses_everything(engine: PatchEngine, root: Path) -> None:
    """A component that declares no artifacts accepts no patch at all."""
    bare = make_comp(root, artifacts=())
    assert "declares no artifacts" in refusal(engine, bare, edit("app.sh", "", "x"))


# --------------------------------------------------------------------------- apply


def test_edits_apply_byte_for_byte_and_keep_the_mode(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """Edits change exactly the searched text; bytes that are not UTF-8 survive; mode is kept."""
    (root / "app.sh").write_bytes(APP + b"# caf\xe9 latin-1\n")
    prepared = engine.check(comp, edit("app.sh", "port=80", "port=8080"))
    applied = engine.apply(comp, prepared)
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=8080") + (
        b"# caf\xe9 latin-1\n"
    )
    assert stat.S_IMODE((root / "app.sh").stat().st_mode) == 0o750
    assert applied.files == ("app.sh",) and applied.component == "web"
    assert applied.diff_hash == prepared.diff_hash


def test_unified_diff_applies_byte_for_byte(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A git-style diff with two hunks and a new file applies exactly."""
    (root / "conf.d" / "main.conf").write_bytes(b"".join(b"line %d\n" % i for i in range(1, 21)))
    diff = (
        "diff --git a/conf.d/main.conf b/conf.d/main.conf\n"
        "index 1111111..2222222 100644\n"
        "--- a/conf.d/main.conf\n"
        "+++ b/conf.d/main.conf\n"
        "@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE 3\n line 4\n"
        "@@ -17,4 +17,5 @@\n line 17\n line 18\n line 19\n line 20\n+line 21\n"
        "--- /dev/null\n"
        "+++ b/conf.d/gpu/extra.conf\n"
        "@@ -0,0 +1,2 @@\n+[gpu]\n+flush = true\n"
    )
    prepared = engine.check(comp, Proposal(agent="k2", diff=diff))
    engine.apply(comp, prepared)
    expected = b"".join(b"line %d\n" % i for i in range(1, 22)).replace(b"line 3\n", b"LINE 3\n")
    assert (root / "conf.d" / "main.conf").read_bytes() == expected
    assert (root / "conf.d" / "gpu" / "extra.conf").read_bytes() == b"[gpu]\nflush = true\n"
    assert stat.S_IMODE((root / "conf.d" / "gpu" / "extra.conf").stat().st_mode) == 0o644


def test_diff_with_bare_paths_and_shifted_lines_applies(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """Bare paths work, and a hunk whose context is found once elsewhere applies there."""
    diff = "--- app.sh\n+++ app.sh\n@@ -10,1 +10,1 @@\n-port=80\n+port=81\n"
    engine.apply(comp, engine.check(comp, Proposal(agent="k2", diff=diff)))
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=81")


def test_diff_tolerates_a_missing_final_newline(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A file without a final newline takes a diff written as if it had one, and vice versa."""
    (root / "extra.conf").write_bytes(b"a\nb")
    diff = "--- a/extra.conf\n+++ b/extra.conf\n@@ -1,2 +1,3 @@\n a\n b\n+c\n"
    engine.apply(comp, engine.check(comp, Proposal(agent="k2", diff=diff)))
    assert (root / "extra.conf").read_bytes() == b"a\nb\nc\n"


def test_diff_and_edits_combine_on_the_same_file(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """The diff applies first, then the edits on its result."""
    diff = "--- a/app.sh\n+++ b/app.sh\n@@ -3 +3 @@\n-port=80\n+port=81\n"
    proposal = Proposal(agent="k2", diff=diff, edits=(FileEdit("app.sh", "port=81", "port=82"),))
    engine.apply(comp, engine.check(comp, proposal))
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=82")


def test_canonical_diff_is_recorded_and_shown(engine: PatchEngine, comp: ComponentConfig) -> None:
    """The stored diff is the canonical one; diff() shows the latest applied patch by default."""
    prepared = engine.check(comp, edit("app.sh", "port=80", "port=81"))
    assert prepared.diff == (
        "--- a/app.sh\n+++ b/app.sh\n@@ -1,4 +1,4 @@\n #!/bin/sh\n # app\n"
        "-port=80\n+port=81\n exec serve --port $port\n"
    )
    applied = engine.apply(comp, prepared)
    assert engine.diff("web") == prepared.diff
    assert engine.diff("web", applied.patch_id) == prepared.diff


def test_diff_of_unknown_patch_is_an_error(engine: PatchEngine) -> None:
    """diff() of nothing, a bad id or an unknown id raises RepairError, never reads elsewhere."""
    with pytest.raises(RepairError, match="no patch has been applied"):
        engine.diff("web")
    with pytest.raises(RepairError, match="is not a patch id"):
        engine.diff("web", "../../etc/passwd")
    with pytest.raises(RepairError, match="no diff stored"):
        engine.diff("web", "20260101T000000Z-abcdef")


def test_refused_proposal_diff_is_kept_for_root_only(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """What an agent proposed and was refused is kept (0600) for root to read, but not
    handed out by default (what D-Bus Diff gives group razar): it is the model's raw text."""
    bad = "--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-root\n+toor\n"
    with pytest.raises(PatchRefused):
        engine.check(comp, Proposal(agent="k2", diff=bad))
    (record,) = engine.patches("web")
    with pytest.raises(RepairError, match="was refused; .* kept for root only"):
        engine.diff("web", record["patch_id"])
    assert engine.diff("web", record["patch_id"], refused=True) == bad
    stored = next((engine.state_dir / "patches" / "web").glob("*.diff"))
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_apply_refuses_a_file_changed_since_check(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A file changed between check and apply is not overwritten; the attempt is refused."""
    prepared = engine.check(comp, edit("app.sh", "port=80", "port=81"))
    (root / "app.sh").write_bytes(b"changed by hand\n")
    with pytest.raises(PatchRefused, match="changed since the patch was checked"):
        engine.apply(comp, prepared)
    assert (root / "app.sh").read_bytes() == b"changed by hand\n"
    assert [r["status"] for r in engine.patches("web")] == ["refused"]


def test_second_apply_while_one_is_pending_is_an_error(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """Only one unverified patch per component at a time."""
    engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    with pytest.raises(RepairError, match="still pending"):
        engine.apply(comp, engine.check(comp, edit("app.sh", "port=81", "port=82")))


def test_failed_write_mid_apply_is_undone_at_once(
    engine: PatchEngine, comp: ComponentConfig, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the second file cannot be written, the first is restored before apply raises."""
    before = tree(root)
    real_write = snapshots_mod.write_atomic
    calls: list[str] = []

    def failing_write(root_fd: int, rel: str, *args: Any) -> None:
        calls.append(rel)
        if len(calls) == 2:
            raise UnsafePath(f"{rel}: cannot write: No space left on device")
        real_write(root_fd, rel, *args)

    monkeypatch.setattr(patch_mod, "write_atomic", failing_write)
    proposal = Proposal(
        agent="k2",
        edits=(FileEdit("app.sh", "port=80", "port=81"), FileEdit("conf.d/n/new.conf", "", "n\n")),
    )
    with pytest.raises(RepairError, match="cannot apply patch .* \\(undone\\): conf.d/n/new.conf"):
        engine.apply(comp, engine.check(comp, proposal))
    assert tree(root) == before
    (record,) = read_jsonl(engine.state_dir / HISTORY_FILE)
    assert record["status"] == "reverted" and record["reason"].startswith("apply failed")


def test_recover_leaves_a_patch_of_an_unconfigured_component_alone(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A pending patch whose component is no longer configured is reported, not guessed at."""
    engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    (line,) = PatchEngine(engine.state_dir).recover([])
    assert line.startswith("web: a patch is pending but the component is not configured")
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=81")


# --------------------------------------------------------------------------- verdicts


def test_revert_restores_byte_for_byte_and_removes_new_files(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """Revert puts back every byte and mode, removes created files and their new directories."""
    before = tree(root)
    proposal = Proposal(
        agent="k2",
        edits=(
            FileEdit("app.sh", "", "#!/bin/sh\nexit 1\n"),
            FileEdit("conf.d/new/deep/x.conf", "", "x\n"),
            FileEdit("extra.conf", "", "y\n"),
        ),
    )
    applied = engine.apply(comp, engine.check(comp, proposal))
    assert tree(root) != before
    engine.revert(comp, applied, "probe still failing")
    assert tree(root) == before
    statuses = [(r["status"], r.get("reason")) for r in read_jsonl(engine.state_dir / HISTORY_FILE)]
    assert statuses == [("applied", None), ("reverted", "probe still failing")]
    assert not (engine.state_dir / "repair" / "web.pending.json").exists()


def test_abort_restores_and_records_aborted(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """An operator abort restores the snapshot and is recorded as aborted."""
    before = tree(root)
    applied = engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    engine.abort(comp, applied)
    assert tree(root) == before
    assert engine.patches("web")[-1]["status"] == "aborted"


def test_keep_records_kept_and_sets_the_baseline(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """A kept patch stays on disk, is recorded kept, and becomes the baseline."""
    applied = engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    engine.keep(comp, applied)
    assert (root / "app.sh").read_bytes() == APP.replace(b"port=80", b"port=81")
    baseline = engine.baseline("web")
    assert baseline is not None and baseline["patch_id"] == applied.patch_id
    with pytest.raises(RepairError, match="not pending"):
        engine.revert(comp, applied, "too late")


def test_records_have_the_documented_fields_once_each(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """patches() merges both logs without duplicates, oldest first, with the documented keys."""
    with pytest.raises(PatchRefused):
        engine.check(comp, edit("/etc/shadow", "", "x"))
    applied = engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    engine.keep(comp, applied)
    records = engine.patches("web")
    assert [r["status"] for r in records] == ["refused", "applied", "kept"]
    for r in records:
        assert {"component", "agent", "patch_id", "snapshot_id", "diff_hash", "files"} <= set(r)
        assert {"status", "time", "unix"} <= set(r)
    assert records[1]["snapshot_id"] == applied.snapshot_id
    assert records[2]["diff_hash"] == applied.diff_hash and records[2]["files"] == ["app.sh"]
    assert engine.patches("other") == []


# --------------------------------------------------------------------------- rollback


def test_rollback_with_nothing_kept_is_a_clear_error(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """Rolling back a component with no kept patch says so."""
    with pytest.raises(RepairError, match=r"^web: nothing to roll back \(no kept patch\)$"):
        engine.rollback(comp)
    with pytest.raises(RepairError, match="no kept patch '20260101T000000Z-abcdef'"):
        engine.rollback(comp, to="20260101T000000Z-abcdef")


def test_rollback_restores_before_the_last_kept_patch(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """Rollback undoes the last kept patch byte for byte and appends reverted by operator."""
    first = engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    engine.keep(comp, first)
    middle = tree(root)
    second = engine.apply(comp, engine.check(comp, edit("conf.d/new.conf", "", "n\n")))
    engine.keep(comp, second)

    record = engine.rollback(comp)
    assert tree(root) == middle
    assert record["status"] == "reverted" and record["by"] == "operator"
    assert record["patch_id"] == second.patch_id
    assert read_jsonl(engine.state_dir / HISTORY_FILE)[-1] == record

    engine.rollback(comp)  # walks one kept patch further back
    assert (root / "app.sh").read_bytes() == APP
    with pytest.raises(RepairError, match="nothing to roll back"):
        engine.rollback(comp)


def test_rollback_to_a_patch_restores_the_state_before_it(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """--to undoes that patch and every kept patch after it, including files they created."""
    before = tree(root)
    first = engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))
    engine.keep(comp, first)
    second = engine.apply(comp, engine.check(comp, edit("conf.d/later/new.conf", "", "n\n")))
    engine.keep(comp, second)
    failed = engine.apply(comp, engine.check(comp, edit("app.sh", "port=81", "port=99")))
    engine.revert(comp, failed, "probe failed")

    record = engine.rollback(comp, to=first.patch_id)
    assert tree(root) == before
    assert record["undone"] == [first.patch_id, second.patch_id]
    with pytest.raises(RepairError, match="already rolled back"):
        engine.rollback(comp, to=second.patch_id)
    with pytest.raises(RepairError, match="no kept patch"):
        engine.rollback(comp, to=failed.patch_id)


def test_rollback_refuses_while_a_patch_is_being_verified(
    engine: PatchEngine, comp: ComponentConfig
) -> None:
    """An operator rollback does not race razard's verify step of an applied patch."""
    engine.keep(comp, engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81"))))
    engine.apply(comp, engine.check(comp, edit("app.sh", "port=81", "port=82")))
    with pytest.raises(RepairError, match="not yet verified"):
        engine.rollback(comp)


# --------------------------------------------------------------------------- reading


def test_read_artifacts_walks_dirs_and_skips_what_is_not_a_regular_file(
    engine: PatchEngine, comp: ComponentConfig, root: Path, tmp_path: Path
) -> None:
    """Agents see every regular artifact file as text, never a symlink's target or a fifo."""
    (tmp_path / "secret").write_text("token=hunter2\n")
    (root / "conf.d" / "leak.conf").symlink_to(tmp_path / "secret")
    (root / "conf.d" / "linked").symlink_to(tmp_path)
    os.mkfifo(root / "conf.d" / "pipe")
    (root / "conf.d" / "sub").mkdir()
    (root / "conf.d" / "sub" / "bin.conf").write_bytes(b"\xff" + b"z" * 100)
    (root / "unrelated.txt").write_text("not an artifact\n")

    seen = engine.read_artifacts(comp, max_bytes=10)
    assert seen == {
        "app.sh": APP[:10].decode(),
        "conf.d/main.conf": CONF[:10].decode(),
        "conf.d/sub/bin.conf": "\ufffd" + "z" * 9,
    }


# --------------------------------------------------------------------------- lock

HOLDER = """
import sys
from pathlib import Path
from razard.repair.patch import PatchEngine
with PatchEngine(Path(sys.argv[1])).lock():
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_rollback_waits_for_the_lock_held_by_another_process(
    engine: PatchEngine, comp: ComponentConfig, root: Path
) -> None:
    """While another process holds the repair lock, rollback waits, then runs once it is freed."""
    engine.keep(comp, engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81"))))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(engine.state_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        done: list[dict[str, Any]] = []
        worker = threading.Thread(target=lambda: done.append(engine.rollback(comp)))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive() and (root / "app.sh").read_bytes() != APP
        assert holder.stdin is not None
        holder.stdin.close()  # the holder reads EOF and releases the lock
        worker.join(10)
        assert not worker.is_alive() and done[0]["by"] == "operator"
        assert (root / "app.sh").read_bytes() == APP
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_reentrant_within_one_engine(engine: PatchEngine, comp: ComponentConfig) -> None:
    """Code holding the lock can call the engine's locking methods without deadlock."""
    with engine.lock():
        engine.apply(comp, engine.check(comp, edit("app.sh", "port=80", "port=81")))


# --------------------------------------------------------------------------- difftools

lines_st = st.lists(
    st.sampled_from(["a", "b", "c", "", " x", "-y", "+z", "\\ q", "\r"]), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(old=lines_st, new=lines_st, old_nl=st.booleans(), new_nl=st.booleans())
def test_canonical_diff_applies_back_to_the_new_text(
    old: list[str], new: list[str], old_nl: bool, new_nl: bool
) -> None:
    """For any two texts, applying unified_diff(old, new) to old yields new exactly."""
    a = "\n".join(old) + ("\n" if old and old_nl else "")
    b = "\n".join(new) + ("\n" if new and new_nl else "")
    if a == b:
        return
    (fp,) = parse_unified_diff(unified_diff("f.txt", a, b))
    assert apply_file_patch(a, fp) == b


def test_new_empty_file_diff_round_trips() -> None:
    """A diff creating an empty file reads back as creating an empty file."""
    (fp,) = parse_unified_diff(unified_diff("empty.conf", None, ""))
    assert fp.old_path is None and apply_file_patch(None, fp) == ""


def test_ambiguous_hunk_is_refused() -> None:
    """A hunk whose context is not at its line and occurs twice elsewhere is refused."""
    (fp,) = parse_unified_diff("--- a/f\n+++ b/f\n@@ -1 +1 @@\n-x\n+y\n")
    with pytest.raises(DiffError, match="matches 2 places"):
        apply_file_patch("a\nx\nx\n", fp)


def test_module_limits_are_the_documented_values() -> None:
    """The size caps are the documented 256 KiB per patch and 1 MiB per file."""
    assert (patch_mod.MAX_PATCH_BYTES, patch_mod.MAX_FILE_BYTES) == (256 * 1024, 1024 * 1024)

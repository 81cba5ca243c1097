"""The patch engine: check a proposal, apply it crash-safely, keep it, or put things back.

    check(comp, proposal) -> PreparedPatch        refuses anything outside the artifacts,
                                                  symlinks, devices, hard links, binary
                                                  content, control characters in paths
                                                  (`razard.repair.proposals`), recording
                                                  each refusal
    apply(comp, prepared) -> AppliedPatch         snapshot, intent record, atomic writes
        keep(...)   | revert(...) | abort(...)    the verdict of razard's verify step
    rollback(comp[, to])                          the operator's undo of kept patches
    recover(comps)                                at razard start: finish or undo what a
                                                  crash interrupted

Crash safety rests on one file per component, ``repair/<component>.pending.json``,
written (atomically) before anything it describes and removed after it:

    stage "applying"     snapshot taken, files being written      -> recover restores
    stage "applied"      all files written, not yet verified      -> recover restores
    stage "kept"         verified; record being written           -> recover finishes
    stage "reverting"    restore decided (revert/abort)           -> recover finishes
    stage "rolling_back" operator rollback decided                -> recover finishes

so after razard dies at any moment the artifacts end up either patched and
verified, or restored byte for byte from the snapshot. Finishing is idempotent:
a record already in the log is not written twice.

Every method that changes files takes `PatchEngine.lock`, an ``flock`` on
``<state_dir>/repair.lock``, so ``razarctl rollback`` with razard stopped can
run beside a starting razard. The methods block (file I/O, the lock): razard
calls them from a worker thread.

Checking a proposal lives in `razard.repair.proposals`; the rest stays one module
(~760 lines) because apply, keep/revert/abort, rollback and recover are one state
machine over the pending file above, and each stage's writer sits beside the code in
`recover` that finishes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from razard import storage
from razard.config import ComponentConfig
from razard.errors import StateError
from razard.layout import (
    DIFF_DIR,
    HISTORY_FILE,
    PATCHES_FILE,
    PENDING_DIR,
    PENDING_SUFFIX,
    REPAIR_LOCK,
    RESTART_SUFFIX,
)
from razard.repair.proposals import (
    MAX_EDITS,
    MAX_FILE_BYTES,
    MAX_PATCH_BYTES,
    PreparedPatch,
    check_artifact_roots,
    prepare,
    proposal_text,
    refuse_hard_links,
)
from razard.repair.scrub import scrub
from razard.repair.snapshots import (
    NEW_FILE_MODE,
    FileState,
    SnapshotStore,
    UnsafePath,
    list_artifact_files,
    missing_dirs,
    open_root,
    read_kind,
    read_regular,
    sha256,
    write_atomic,
)
from razard.repair.types import PatchRefused, Proposal, RepairError
from razard.storage import append_jsonl, make_dirs, read_json, read_jsonl, write_json_atomic

__all__ = [
    "CRASH_STEPS",
    "MAX_EDITS",
    "MAX_FILE_BYTES",
    "MAX_PATCH_BYTES",
    "AppliedPatch",
    "PatchEngine",
    "PreparedPatch",
    "check_artifact_roots",
]

log = logging.getLogger(__name__)

RESTART_REASON: Final = "razard restarted before the patch was verified"
ABORT_REASON: Final = "aborted by the operator before the patch was verified"
# Test-only: the steps at which ``PatchEngine(_crash_at=...)`` SIGKILLs its own process.
CRASH_STEPS: Final = ("snapshot", "intent", "first_file", "files", "applied", "kept", "reverting")

_ID_RE: Final = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$")
_COMPONENT_RE: Final = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_RATIONALE_CHARS: Final = 2000


@dataclass(frozen=True)
class AppliedPatch:
    """A patch on disk, not yet verified: hand it to keep, revert or abort."""

    patch_id: str
    snapshot_id: str
    component: str
    agent: str
    diff_hash: str
    files: tuple[str, ...]


def _now() -> tuple[str, float]:
    t = time.time()
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds"), t


def _new_id() -> str:
    """Sortable by time to the second, unique by its random tail."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


class PatchEngine:
    """Checks, applies, keeps and reverts repair patches under one state directory."""

    def __init__(self, state_dir: Path, *, _crash_at: str | None = None) -> None:
        """``_crash_at`` is for tests only: SIGKILL this process at that step (`CRASH_STEPS`)."""
        if _crash_at is not None and _crash_at not in CRASH_STEPS:
            raise ValueError(f"unknown crash step {_crash_at!r}")
        self.state_dir = Path(state_dir)
        self.snapshots = SnapshotStore(self.state_dir)
        self._crash_at = _crash_at
        self._mutex = threading.RLock()
        self._depth = 0
        self._lock_fd: int | None = None

    # ----------------------------------------------------------------------- lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive repair lock (``flock`` on ``<state_dir>/repair.lock``).

        Re-entrant within one engine (a thread holding it may call apply or
        rollback); other processes and engines wait until it is released.
        """
        with self._mutex:
            if self._depth == 0:
                path = self.state_dir / REPAIR_LOCK
                try:
                    storage.make_dirs(self.state_dir)
                    fd = storage.take_lock(path)  # 0600: nobody else can hold it
                except OSError as exc:
                    raise StateError(f"{path}: cannot lock: {exc.strerror or exc}") from exc
                self._lock_fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    # ----------------------------------------------------------------------- reading

    def read_artifacts(self, comp: ComponentConfig, max_bytes: int = 64 * 1024) -> dict[str, str]:
        """Relative path -> text of each existing artifact file, for the agents' context.

        Declared directories are walked; only regular files reached without a
        symlink are read; text is UTF-8 with replacement, each cut at ``max_bytes``.
        """
        if not comp.artifacts or not comp.artifact_root:
            return {}
        out: dict[str, str] = {}
        try:
            with open_root(comp.artifact_root) as root_fd:
                for rel in list_artifact_files(root_fd, comp.artifacts):
                    try:
                        # a hard link may name a secret elsewhere: never sent to a model.
                        # Checked on the descriptor actually read, not on the name before.
                        state = read_regular(root_fd, rel, head=max_bytes, single_link=True)
                    except UnsafePath as exc:
                        log.warning("%s: not shown to the agents: %s", comp.name, exc)
                        continue
                    if state is not None:
                        out[rel] = state.data.decode("utf-8", "replace")
        except UnsafePath as exc:
            log.warning("%s: cannot read artifacts: %s", comp.name, exc)
        return out

    # ----------------------------------------------------------------------- check

    def check(self, comp: ComponentConfig, proposal: Proposal) -> PreparedPatch:
        """Turn a proposal into the exact bytes it would write, or raise `PatchRefused`.

        The diff (if any) is applied first, then the edits, each on the result
        of the previous. A refusal is recorded in `PATCHES_FILE` with its reason.
        """
        touched: list[str] = []
        try:
            return prepare(comp, proposal, touched, self._digest)
        except PatchRefused as exc:
            self._refused(comp, proposal, str(exc), touched)
            raise

    def _refused(
        self, comp: ComponentConfig, proposal: Proposal, reason: str, files: list[str]
    ) -> None:
        patch_id = _new_id()
        raw = proposal_text(proposal)
        record = self._record(
            "refused",
            comp.name,
            agent=proposal.agent,
            patch_id=patch_id,
            snapshot_id=None,
            diff_hash=sha256(raw.encode("utf-8", "surrogatepass")),
            files=files,
            reason=reason,
            rationale=scrub(proposal.rationale[:_RATIONALE_CHARS]),
        )
        try:
            # Kept so `razarctl diff` can show an operator what was refused.
            self._store_diff(comp.name, patch_id, raw)
            append_jsonl(self.state_dir / PATCHES_FILE, record, mode=storage.PRIVATE_MODE)
        except (StateError, RepairError) as exc:
            log.warning("%s: cannot record refused patch: %s", comp.name, exc)

    # ----------------------------------------------------------------------- apply

    def apply(self, comp: ComponentConfig, prepared: PreparedPatch) -> AppliedPatch:
        """Snapshot the artifacts, write the patch's files atomically, record ``applied``.

        The patch stays pending until `keep`, `revert` or `abort`; a crash
        before then is undone by `recover`. Raises `PatchRefused` if a file
        changed or became unsafe since `check`, `RepairError` if another patch
        of the component is still pending or a write failed (already undone).
        """
        if prepared.component != comp.name:
            raise RepairError(f"{comp.name}: the patch was prepared for {prepared.component}")
        files = tuple(sorted(prepared.changes))
        with self.lock():
            pending = self._pending(comp.name)
            if pending is not None:
                raise RepairError(
                    f"{comp.name}: patch {pending.get('patch_id')} is still pending; "
                    "keep or revert it first"
                )
            with open_root(comp.artifact_root) as root_fd:
                try:
                    pending, old = self._stage(comp, prepared, files, root_fd)
                except UnsafePath as exc:
                    # Nothing on disk was changed yet: this is a refusal like check's.
                    proposal = Proposal(
                        agent=prepared.agent, rationale=prepared.rationale, diff=prepared.diff
                    )
                    self._refused(comp, proposal, str(exc), list(files))
                    raise PatchRefused(str(exc)) from None
                self._write_files(comp, prepared, pending, old, root_fd)
        return AppliedPatch(
            patch_id=pending["patch_id"],
            snapshot_id=pending["snapshot_id"],
            component=comp.name,
            agent=prepared.agent,
            diff_hash=prepared.diff_hash,
            files=files,
        )

    def _stage(
        self, comp: ComponentConfig, prepared: PreparedPatch, files: tuple[str, ...], root_fd: int
    ) -> tuple[dict[str, Any], dict[str, FileState | None]]:
        """Check the files are as checked, snapshot, store the diff, write the intent record."""
        for rel in files:
            refuse_hard_links(root_fd, rel)
        old = {rel: read_regular(root_fd, rel, MAX_FILE_BYTES) for rel in files}
        for rel, state in old.items():
            digest = self._digest(None if state is None else state.data)
            if rel in prepared.base and prepared.base[rel] != digest:
                raise UnsafePath(f"{rel} changed since the patch was checked")
        patch_id = _new_id()
        snapshot_id = patch_id  # one snapshot per apply: the same id keeps them easy to match
        absent_dirs = {d for rel in files for d in missing_dirs(root_fd, rel)}
        self.snapshots.take(
            root_fd, comp.name, snapshot_id, self._snapshot_files(comp, root_fd, files), absent_dirs
        )
        self._store_diff(comp.name, patch_id, prepared.diff)
        self._crash("snapshot")
        pending: dict[str, Any] = {
            "component": comp.name,
            "agent": prepared.agent,
            "patch_id": patch_id,
            "snapshot_id": snapshot_id,
            "diff_hash": prepared.diff_hash,
            "files": list(files),
            "stage": "applying",
            "time": _now()[0],
        }
        self._write_pending(comp.name, pending)
        self._crash("intent")
        return pending, old

    def _write_files(
        self,
        comp: ComponentConfig,
        prepared: PreparedPatch,
        pending: dict[str, Any],
        old: Mapping[str, FileState | None],
        root_fd: int,
    ) -> None:
        files: list[str] = pending["files"]
        try:
            for k, rel in enumerate(files):
                state = old[rel]
                mode = NEW_FILE_MODE if state is None else state.mode
                owner = None if state is None else (state.uid, state.gid)
                write_atomic(root_fd, rel, prepared.changes[rel], mode, owner)
                if k == 0:
                    self._crash("first_file")
        except UnsafePath as exc:
            self._undo_now(comp, pending, "reverted", f"apply failed: {exc}", by="razard")
            raise RepairError(
                f"{comp.name}: cannot apply patch {pending['patch_id']} (undone): {exc}"
            ) from None
        self._crash("files")
        pending["stage"] = "applied"
        self._write_pending(comp.name, pending)
        record = self._record(
            "applied",
            comp.name,
            rationale=scrub(prepared.rationale[:_RATIONALE_CHARS]),
            **_ident(pending),
        )
        self._append(record)
        self._crash("applied")

    def _snapshot_files(
        self, comp: ComponentConfig, root_fd: int, files: Sequence[str]
    ) -> list[str]:
        # Everything the component declares, so that a rollback to this snapshot
        # restores all of it; declared files that are absent are recorded as absent.
        paths = set(list_artifact_files(root_fd, comp.artifacts)) | set(files)
        for entry in comp.artifacts:
            if not entry.endswith("/"):
                rel = posixpath.normpath(entry)
                with contextlib.suppress(UnsafePath):
                    if read_kind(root_fd, rel) in ("file", "absent"):
                        paths.add(rel)
        return sorted(paths)

    # ----------------------------------------------------------------------- verdicts

    def keep(self, comp: ComponentConfig, applied: AppliedPatch) -> None:
        """The patch verified healthy: record ``kept``; it becomes the component's baseline."""
        with self.lock():
            pending = self._expect_pending(comp, applied)
            pending["stage"] = "kept"
            pending["record"] = self._record("kept", comp.name, **_ident(pending))
            self._write_pending(comp.name, pending)
            self._finish(comp, pending)

    def revert(self, comp: ComponentConfig, applied: AppliedPatch, reason: str) -> None:
        """The patch did not help: restore its snapshot byte for byte, record ``reverted``."""
        with self.lock():
            pending = self._expect_pending(comp, applied)
            self._undo_now(comp, pending, "reverted", reason, by="razard")

    def abort(self, comp: ComponentConfig, applied: AppliedPatch) -> None:
        """The operator interrupted (long task): restore the snapshot, record ``aborted``."""
        with self.lock():
            pending = self._expect_pending(comp, applied)
            self._undo_now(comp, pending, "aborted", ABORT_REASON, by="operator")

    def _undo_now(
        self, comp: ComponentConfig, pending: dict[str, Any], status: str, reason: str, by: str
    ) -> list[str]:
        pending["stage"] = "reverting"
        pending["record"] = self._record(status, comp.name, reason=reason, by=by, **_ident(pending))
        self._write_pending(comp.name, pending)
        self._crash("reverting")
        return self._finish(comp, pending)

    # ----------------------------------------------------------------------- rollback

    def rollback(self, comp: ComponentConfig, to: str | None = None) -> dict[str, Any]:
        """Restore the artifacts as they were before the last kept patch, or before ``to``.

        Rolling back to before ``to`` undoes every kept patch after it too.
        Each call walks one kept patch further back. Appends a ``reverted``
        record with ``by: "operator"`` and returns it.

        Raises:
            RepairError: nothing to roll back, ``to`` is not a kept patch of the
                component, or a patch is applied and still being verified.
        """
        with self.lock():
            pending = self._pending(comp.name)
            if pending is not None:
                if pending.get("stage") in ("applying", "applied"):
                    raise RepairError(
                        f"{comp.name}: patch {pending.get('patch_id')} is applied and not yet "
                        "verified; roll back after razard has kept or reverted it"
                    )
                self._finish(comp, pending)  # a decided step a crash interrupted
            history = [
                r
                for r in read_jsonl(self.state_dir / HISTORY_FILE)
                if r.get("component") == comp.name
            ]
            undone = {
                pid
                for r in history
                if r.get("status") == "reverted" and r.get("by") == "operator"
                for pid in r.get("undone", [r.get("patch_id")])
            }
            kept = [r for r in history if r.get("status") == "kept"]
            live = [r for r in kept if r.get("patch_id") not in undone]
            if to is None:
                if not live:
                    raise RepairError(f"{comp.name}: nothing to roll back (no kept patch)")
                target = live[-1]
            else:
                if not any(r.get("patch_id") == to for r in kept):
                    raise RepairError(f"{comp.name}: nothing to roll back: no kept patch {to!r}")
                if to in undone:
                    raise RepairError(f"{comp.name}: patch {to} was already rolled back")
                target = next(r for r in live if r.get("patch_id") == to)
            undo = live[live.index(target) :]
            manifest = self.snapshots.load(comp.name, str(target["snapshot_id"]))
            # Files and directories the undone patches created are absent in their
            # own snapshots but not listed in the target's: remove them as well.
            also_absent: set[str] = set()
            also_absent_dirs: set[str] = set()
            for r in undo:
                later = self.snapshots.load(comp.name, str(r["snapshot_id"]))
                also_absent |= {
                    rel
                    for rel, d in later["files"].items()
                    if d is None and rel not in manifest["files"]
                }
                also_absent_dirs |= set(later.get("absent_dirs", []))
            undone_ids = [str(r["patch_id"]) for r in undo]
            reason = f"operator rollback to before patch {target['patch_id']}"
            if len(undone_ids) > 1:
                reason += f" (also undoes {', '.join(undone_ids[1:])})"
            files = sorted({f for r in undo for f in r.get("files", [])} | also_absent)
            record = self._record(
                "reverted",
                comp.name,
                agent=str(target.get("agent", "")),
                patch_id=str(target["patch_id"]),
                snapshot_id=str(target["snapshot_id"]),
                diff_hash=str(target.get("diff_hash", "")),
                files=files,
                reason=reason,
                by="operator",
                undone=undone_ids,
            )
            pending = {
                "component": comp.name,
                "patch_id": target["patch_id"],
                "snapshot_id": target["snapshot_id"],
                "also_absent": sorted(also_absent),
                "also_absent_dirs": sorted(also_absent_dirs),
                "stage": "rolling_back",
                "record": record,
                "time": record["time"],
            }
            self._write_pending(comp.name, pending)
            self._finish(comp, pending)
            return record

    # ----------------------------------------------------------------------- recover

    def recover(self, comps: Sequence[ComponentConfig]) -> list[str]:
        """At razard start: undo patches never verified, finish decided steps; say what was done.

        A patch interrupted mid-apply or applied but never kept/reverted is
        restored from its snapshot and recorded ``reverted`` with the reason
        `RESTART_REASON`. A keep, revert or rollback cut short is completed.
        """
        lines: list[str] = []
        with self.lock():
            known = {c.name for c in comps}
            for comp in comps:
                pending = self._pending(comp.name)
                if pending is None:
                    continue
                pid, stage = pending.get("patch_id"), pending.get("stage")
                try:
                    if stage in ("applying", "applied"):
                        changed = self._undo_now(
                            comp, pending, "reverted", RESTART_REASON, by="razard"
                        )
                        lines.append(
                            f"{comp.name}: patch {pid} by {pending.get('agent')} was not verified "
                            f"before razard stopped; restored {len(changed)} file(s) from "
                            f"snapshot {pending.get('snapshot_id')}"
                        )
                    elif stage in ("kept", "reverting", "rolling_back"):
                        self._finish(comp, pending)
                        verb = {"kept": "keeping", "reverting": "reverting"}.get(
                            str(stage), "rolling back"
                        )
                        lines.append(f"{comp.name}: finished {verb} patch {pid}")
                    else:
                        lines.append(
                            f"{comp.name}: pending patch {pid} has unknown stage {stage!r}"
                        )
                except RepairError as exc:
                    lines.append(f"{comp.name}: could not recover patch {pid}: {exc}")
            pending_dir = self.state_dir / PENDING_DIR
            if pending_dir.is_dir():
                for p in sorted(pending_dir.glob("*" + PENDING_SUFFIX)):
                    name = p.name.removesuffix(PENDING_SUFFIX)
                    if name not in known:
                        lines.append(
                            f"{name}: a patch is pending but the component is not configured; "
                            f"left as is ({p})"
                        )
        for line in lines:
            log.warning("%s", line)
        return lines

    # ----------------------------------------------------------------------- queries

    def patches(self, component: str) -> list[dict[str, Any]]:
        """Every record about ``component`` from both logs, oldest first, without duplicates."""
        seen: set[str] = set()
        out: list[dict[str, Any]] = []
        for name in (PATCHES_FILE, HISTORY_FILE):
            for r in read_jsonl(self.state_dir / name):
                if r.get("component") != component:
                    continue
                key = json.dumps(r, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    out.append(r)
        out.sort(key=lambda r: float(r.get("unix", 0.0)))
        return out

    def diff(self, component: str, patch_id: str | None = None, *, refused: bool = False) -> str:
        """The stored diff of ``patch_id`` (the latest applied patch if None).

        A refused proposal's text is whatever the model wrote (a secret it echoed, words
        aimed at the operator): shown only with ``refused`` (root's own reading, never
        over the bus to group razar); its file is 0600."""
        if not _COMPONENT_RE.match(component):
            raise RepairError(f"{component!r}: not a component name")
        if patch_id is None:
            applied = [r for r in self.patches(component) if r.get("status") == "applied"]
            if not applied:
                raise RepairError(f"{component}: no patch has been applied")
            patch_id = str(applied[-1]["patch_id"])
        if not _ID_RE.match(patch_id):
            raise RepairError(f"{component}: {patch_id!r} is not a patch id")
        path = self.state_dir / DIFF_DIR / component / f"{patch_id}.diff"
        if not refused:
            statuses = {
                r.get("status") for r in self.patches(component) if r.get("patch_id") == patch_id
            }
            if "refused" in statuses and "applied" not in statuses:
                raise RepairError(
                    f"{component}: patch {patch_id} was refused; the proposal as the agent "
                    f"wrote it is kept for root only, in {path}"
                )
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RepairError(f"{component}: no diff stored for patch {patch_id}") from None
        except OSError as exc:
            raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from exc

    def baseline(self, component: str) -> dict[str, Any] | None:
        """The snapshot taken after the last keep or rollback of ``component``, if any."""
        value = read_json(self.snapshots.base / component / "baseline.json")
        return value if isinstance(value, dict) else None

    # ----------------------------------------------------------------------- internals

    def _digest(self, data: bytes | None) -> str | None:
        """The keyed hash of a file's bytes (None: absent), as the pending record keeps it."""
        return None if data is None else self.snapshots.digest(data)

    def _finish(self, comp: ComponentConfig, pending: dict[str, Any]) -> list[str]:
        """Carry out a decided stage; safe to repeat after a crash part way through."""
        stage = pending["stage"]
        record: dict[str, Any] = pending["record"]
        changed: list[str] = []
        if stage in ("reverting", "rolling_back"):
            manifest = self.snapshots.load(comp.name, str(pending["snapshot_id"]))
            try:
                with open_root(comp.artifact_root) as root_fd:
                    changed = self.snapshots.restore(
                        root_fd,
                        manifest,
                        pending.get("also_absent", []),
                        pending.get("also_absent_dirs", []),
                    )
            except UnsafePath as exc:  # the root was swapped: write nothing anywhere
                raise RepairError(f"{comp.name}: not restoring: {exc}") from exc
        self._append(record, once=True)
        if stage in ("kept", "rolling_back"):
            self._set_baseline(comp, record)
        if stage == "kept":
            self._crash("kept")
        self._remove_pending(comp.name)
        return changed

    def _set_baseline(self, comp: ComponentConfig, record: Mapping[str, Any]) -> None:
        snapshot_id = _new_id()
        try:
            with open_root(comp.artifact_root) as root_fd:
                self.snapshots.take(
                    root_fd, comp.name, snapshot_id, self._snapshot_files(comp, root_fd, ())
                )
        except (RepairError, StateError) as exc:
            # The verdict is already recorded; a missing baseline must not undo it.
            log.warning("%s: cannot snapshot the new baseline: %s", comp.name, exc)
            return
        write_json_atomic(
            self.snapshots.base / comp.name / "baseline.json",
            {
                "snapshot_id": snapshot_id,
                "patch_id": record.get("patch_id"),
                "status": record.get("status"),
                "time": record.get("time"),
            },
        )

    def _expect_pending(self, comp: ComponentConfig, applied: AppliedPatch) -> dict[str, Any]:
        pending = self._pending(comp.name)
        if pending is None or pending.get("patch_id") != applied.patch_id:
            raise RepairError(
                f"{comp.name}: patch {applied.patch_id} is not pending (already kept or reverted)"
            )
        if pending.get("stage") != "applied":
            raise RepairError(
                f"{comp.name}: patch {applied.patch_id} is at stage {pending.get('stage')!r}"
            )
        return pending

    def _pending_path(self, component: str) -> Path:
        return self.state_dir / PENDING_DIR / (component + PENDING_SUFFIX)

    # ---------------------------------------------------------- restart owed

    def _restart_path(self, component: str) -> Path:
        return self.state_dir / PENDING_DIR / (component + RESTART_SUFFIX)

    def owe_restart(self, component: str, why: str) -> None:
        """Write down that ``component``'s process may still run code its files no longer
        hold (a patch undone at start): it is restarted, even if razard is killed before."""
        write_json_atomic(self._restart_path(component), {"component": component, "why": why})

    def restarts_owed(self) -> set[str]:
        """Components with a restart written down and not yet done."""
        d = self.state_dir / PENDING_DIR
        if not d.is_dir():
            return set()
        return {p.name.removesuffix(RESTART_SUFFIX) for p in d.glob("*" + RESTART_SUFFIX)}

    def restart_done(self, component: str) -> None:
        """The component's process was started again from its current files."""
        with contextlib.suppress(FileNotFoundError):
            self._restart_path(component).unlink()

    def _pending(self, component: str) -> dict[str, Any] | None:
        # asked for every component at start: most have none, and a Path per component
        # would intern each name
        name = component + PENDING_SUFFIX
        if not os.path.exists(os.path.join(self.state_dir, PENDING_DIR, name)):
            return None
        value = read_json(self._pending_path(component))
        return value if isinstance(value, dict) else None

    def _write_pending(self, component: str, pending: Mapping[str, Any]) -> None:
        write_json_atomic(self._pending_path(component), pending)

    def _remove_pending(self, component: str) -> None:
        path = self._pending_path(component)
        try:
            path.unlink(missing_ok=True)
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(f"{path}: cannot remove: {exc.strerror or exc}") from exc

    def _record(
        self,
        status: str,
        component: str,
        *,
        agent: str,
        patch_id: str,
        snapshot_id: str | None,
        diff_hash: str,
        files: Sequence[str],
        reason: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        iso, unix = _now()
        record: dict[str, Any] = {
            "component": component,
            "agent": agent,
            "patch_id": patch_id,
            "snapshot_id": snapshot_id,
            "diff_hash": diff_hash,
            "files": list(files),
            "status": status,
        }
        if reason:
            record["reason"] = reason
        record.update(extra)
        record["time"] = iso
        record["unix"] = unix
        return record

    def _append(self, record: Mapping[str, Any], *, once: bool = False) -> None:
        """Append to both logs; with ``once``, skip a log that already holds the record."""
        for name in (HISTORY_FILE, PATCHES_FILE):
            path = self.state_dir / name
            if once and any(r == record for r in read_jsonl(path)):
                continue
            # razar_ai_patches.json is root's (agents' words); patch_history.jsonl operators'
            mode = storage.PRIVATE_MODE if name == PATCHES_FILE else storage.FILE_MODE
            append_jsonl(path, record, mode=mode)

    def _store_diff(self, component: str, patch_id: str, text: str) -> None:
        directory = self.state_dir / DIFF_DIR / component
        path = directory / f"{patch_id}.diff"
        try:
            make_dirs(directory)
            # 0600: a diff holds artifact content, which may include secrets.
            # small: <= MAX_PATCH_BYTES
            data = text.encode("utf-8", "surrogatepass")
            storage.write_atomic(path, data, mode=storage.PRIVATE_MODE)
        except OSError as exc:
            raise StateError(f"{path}: cannot write: {exc.strerror or exc}") from exc

    def _crash(self, step: str) -> None:
        # Test-only hook (see CRASH_STEPS): die as abruptly as a kill -9 would.
        if self._crash_at == step:
            os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- helpers


def _ident(pending: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "agent": pending.get("agent", ""),
        "patch_id": pending["patch_id"],
        "snapshot_id": pending["snapshot_id"],
        "diff_hash": pending.get("diff_hash", ""),
        "files": pending.get("files", []),
    }

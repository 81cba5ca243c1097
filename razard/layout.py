"""Where razard keeps things: its config file, its state directory and every name in it.

Each file name is spelled here once; every module that reads or writes one imports it from
here. This module is the bottom layer: it imports nothing of razard or agents.

The state directory (``[razard] state_dir``, default ``/var/lib/razard``)::

    razar_state.json              STATE_FILE        component states, restarts, holds
    razard.lock                   STATE_LOCK        held by the one razard using the directory
    razar.log                     LOG_FILE          razard's JSON-lines event log
    quarantine/<name>.json        QUARANTINE_DIR    one file per quarantined component
    quarantine_log.md             QUARANTINE_LOG    the operator's readable quarantine log
    razar_ai_invocations.json     INVOCATIONS_FILE  every AI repair agent run (JSON lines)
    razar_long_task.json          LONG_TASK_FILE    repairs handed over as long tasks
    razar_ai_patches.json         PATCHES_FILE      every patch attempt, refused ones too
    patch_history.jsonl           HISTORY_FILE      applied, kept, reverted, aborted patches
    repair.lock                   REPAIR_LOCK       held while a patch is applied or undone
    repair/<name>.pending.json    PENDING_DIR       a patch not yet verified (crash safety)
    repair/<name>.restart                           a restart owed after an undo
    patches/<name>/<id>.diff      DIFF_DIR          each patch's diff
    snapshots/blobs/              SNAPSHOTS_DIR     artifact snapshots a rollback restores
    operator_escalations.jsonl    ESCALATIONS_FILE  alerts raised and resolved
    escalation/                   ESCALATION_DIR    the escalation notifier's own state
    chakra_healing.log            HEALING_LOG       every layer heal (JSON lines)
    healers/<healer>/             HEALERS_DIR       a layer healer's own state
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: razard.toml, where razard, razarctl and the helper scripts look without ``--config``.
DEFAULT_CONFIG: Final = Path("/etc/razard/razard.toml")
#: ``[razard] state_dir`` when the config does not set it (also the healers' default).
DEFAULT_STATE_DIR: Final = "/var/lib/razard"
#: ``[chakra] runtime_dir`` on the system bus (heartbeats, healer output).
DEFAULT_RUNTIME_DIR: Final = "/run/razard"

# ---------------------------------------------------------------- the supervisor
STATE_FILE: Final = "razar_state.json"
STATE_LOCK: Final = "razard.lock"
LOG_FILE: Final = "razar.log"
QUARANTINE_DIR: Final = "quarantine"
QUARANTINE_LOG: Final = "quarantine_log.md"

# ---------------------------------------------------------------- AI repair
INVOCATIONS_FILE: Final = "razar_ai_invocations.json"  # JSON lines, despite the name
LONG_TASK_FILE: Final = "razar_long_task.json"
PATCHES_FILE: Final = "razar_ai_patches.json"  # JSON lines: every attempt, refused ones too
HISTORY_FILE: Final = "patch_history.jsonl"  # JSON lines: applied, kept, reverted, aborted
REPAIR_LOCK: Final = "repair.lock"
PENDING_DIR: Final = "repair"
PENDING_SUFFIX: Final = ".pending.json"
RESTART_SUFFIX: Final = ".restart"
DIFF_DIR: Final = "patches"
SNAPSHOTS_DIR: Final = "snapshots"
SNAPSHOT_BLOBS_DIR: Final = "blobs"  # inside SNAPSHOTS_DIR

# ---------------------------------------------------------------- escalation
ESCALATIONS_FILE: Final = "operator_escalations.jsonl"
ESCALATION_DIR: Final = "escalation"
# inside ESCALATION_DIR:
NOTIFIER_LOCK: Final = "notifier.lock"
JOURNAL_CURSOR: Final = "journal.cursor"
JOURNAL_SINCE: Final = "journal.since"
FIRING_FILE: Final = "firing.json"
#: razard's events journald did not take, for the notifier (`razard.escalation.spool`)
UNJOURNALED_FILE: Final = "unjournaled.jsonl"
UNJOURNALED_POS: Final = "unjournaled.pos"
OUTBOX_DIR: Final = "outbox"

# ---------------------------------------------------------------- layer healing
HEALING_LOG: Final = "chakra_healing.log"
HEALERS_DIR: Final = "healers"

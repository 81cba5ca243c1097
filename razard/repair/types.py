"""Types shared by the repair agents, the patch engine and the handover.

RepairError                 (a RazarError)
├── AgentSkipped            the agent cannot run here (no endpoint, no binary); not a failure
├── AgentFailed             the agent ran and gave no usable proposal (HTTP error, bad reply)
└── PatchRefused            a proposal breaks the rules (outside artifacts, too big, ...)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from razard.errors import RazarError


class RepairError(RazarError):
    """Root of the repair rung's errors."""


class AgentSkipped(RepairError):
    """The agent is not usable here (endpoint not configured, binary missing); not an attempt."""


class AgentFailed(RepairError):
    """The agent was asked and did not produce a usable proposal."""


class PatchRefused(RepairError):
    """A proposal was refused by the patch engine; counts as a failed attempt for that agent."""


@dataclass(frozen=True)
class FileEdit:
    """Replace ``search`` by ``replace`` in ``path`` (relative to the component's artifact root).

    ``search == ""`` means: the file's whole new content is ``replace`` (create or overwrite).
    """

    path: str
    search: str
    replace: str


@dataclass(frozen=True)
class Proposal:
    """What an agent proposes: a unified diff and/or search/replace edits, and why."""

    agent: str
    rationale: str = ""
    diff: str = ""  # unified diff with paths relative to the artifact root (a/ b/ prefixes ok)
    edits: tuple[FileEdit, ...] = ()
    raw: str = ""  # the agent's reply as received (for the records; never contains tokens)


@dataclass(frozen=True)
class RepairContext:
    """Everything an agent is told about a failure."""

    component: str
    unit: str
    layer: str
    error: str
    probe_output: str = ""
    exit_status: int | None = None
    unit_result: str = ""
    journal: tuple[str, ...] = ()  # the unit's last journal lines
    history: tuple[dict[str, Any], ...] = ()  # earlier records from razar_ai_invocations.json
    artifacts: dict[str, str] = field(default_factory=dict)  # relative path -> current text
    attempt: int = 1
    cycle_started: float | None = None  # unix time this failure cycle began

    def prompt(self) -> str:
        """The context as one plain-text message for a model."""
        parts = [
            f"Component {self.component} (systemd unit {self.unit}, layer {self.layer}) failed.",
            f"Error: {self.error}",
        ]
        if self.unit_result:
            parts.append(f"systemd Result: {self.unit_result}")
        if self.exit_status is not None:
            parts.append(f"Exit status: {self.exit_status}")
        if self.probe_output:
            parts.append(f"Health probe output:\n{self.probe_output}")
        if self.journal:
            parts.append("Last journal lines:\n" + "\n".join(self.journal))
        if self.history:
            lines = [
                f"- attempt {h.get('attempt')} by {h.get('agent')}: {h.get('status')}"
                + (
                    f" ({h.get('reason') or h.get('error')})"
                    if h.get("reason") or h.get("error")
                    else ""
                )
                for h in self.history
            ]
            parts.append(
                "Earlier repair attempts (do not repeat what failed):\n" + "\n".join(lines)
            )
        for path, text in sorted(self.artifacts.items()):
            parts.append(f"--- file {path} ---\n{text}")
        parts.append(
            "You may change only the files listed above. Reply with a JSON object: "
            '{"rationale": "...", "edits": [{"path": "...", "search": "...", "replace": "..."}]} '
            'or {"rationale": "...", "diff": "<unified diff>"}.'
        )
        return "\n\n".join(parts)


class RepairAgent(Protocol):
    """One rung of the repair roster."""

    name: str
    kind: str
    max_attempts: int

    async def propose(self, ctx: RepairContext) -> Proposal:
        """Return a proposal, or raise AgentSkipped / AgentFailed."""
        ...

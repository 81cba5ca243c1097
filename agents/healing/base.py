"""What every healer shares: its context from the environment, its result, its rate limit.

A healer is a function ``heal(ctx) -> HealResult`` (sync or async); `main`
turns it into an executable that keeps the contract: it reads the environment
and ``--dry-run``, prints exactly one JSON object and exits 0 (healed),
1 (not healed) or 2 (not applicable here). An unexpected exception is a
"not healed" with the error in the JSON, never a traceback on stdout.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from razard import storage
from razard.layout import DEFAULT_STATE_DIR, HEALERS_DIR

EXIT_HEALED: Final = 0
EXIT_NOT_HEALED: Final = 1
EXIT_NOT_APPLICABLE: Final = 2

Outcome = Literal["healed", "not_healed", "not_applicable"]
EXIT_CODES: Final[dict[Outcome, int]] = {
    "healed": EXIT_HEALED,
    "not_healed": EXIT_NOT_HEALED,
    "not_applicable": EXIT_NOT_APPLICABLE,
}


class HealerError(Exception):
    """A setting is wrong or a step failed in a way the healer cannot go on from."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class HealContext:
    """Who is being healed and how, as razard (or an operator) passed it in the environment."""

    layer: str
    component: str = ""
    unit: str = ""
    dry_run: bool = False
    restore: bool = False  # RAZAR_HEAL_MODE=restore: the layer is back, undo runtime changes
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    bus: str = "system"
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, layer: str, env: Mapping[str, str], *, dry_run: bool = False) -> HealContext:
        mode = env.get("RAZAR_HEAL_MODE", "heal").strip().lower()
        if mode not in ("heal", "restore"):
            raise HealerError(f'RAZAR_HEAL_MODE: must be "heal" or "restore", got {mode!r}')
        bus = env.get("RAZAR_BUS", "system").strip() or "system"
        if bus not in ("system", "user"):
            raise HealerError(f'RAZAR_BUS: must be "system" or "user", got {bus!r}')
        return cls(
            layer=env.get("RAZAR_LAYER", layer) or layer,
            component=env.get("RAZAR_COMPONENT", ""),
            unit=env.get("RAZAR_UNIT", ""),
            dry_run=dry_run or _truthy(env.get("RAZAR_DRY_RUN")),
            restore=mode == "restore",
            state_dir=Path(env.get("RAZAR_STATE_DIR") or DEFAULT_STATE_DIR),
            bus=bus,
            env=dict(env),
        )

    # ------------------------------------------------------------ settings

    def get(self, name: str, default: str = "") -> str:
        return self.env.get(name, default).strip() or default

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise HealerError(f"{name}: expected a number, got {raw!r}") from None
        if value < minimum or value != value:
            raise HealerError(f"{name}: must be >= {minimum:g}, got {raw!r}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise HealerError(f"{name}: expected an integer, got {raw!r}") from None
        if value < minimum:
            raise HealerError(f"{name}: must be >= {minimum}, got {raw!r}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        raw = self.env.get(name, "").strip()
        return default if not raw else _truthy(raw)

    def healer_state(self, healer: str) -> Path:
        """A directory for this healer's own state (rate-limit records, values to restore)."""
        return self.state_dir / HEALERS_DIR / healer


@dataclass
class Step:
    """One thing a healer checked or did, in order."""

    step: str
    ok: bool
    detail: str = ""
    changed: bool = False  # did this step change anything on the node

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "detail": self.detail, "changed": self.changed}


@dataclass
class HealResult:
    """What a healer reports: the outcome, why, the steps taken (or planned, in a dry run)."""

    healer: str
    layer: str
    outcome: Outcome
    reason: str
    steps: list[Step] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)  # dry run: what would be done
    dry_run: bool = False
    healed_by: str | None = None  # the step that worked
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "healer": self.healer,
            "layer": self.layer,
            "result": self.outcome,
            "healed": self.outcome == "healed",
            "reason": self.reason,
            "healed_by": self.healed_by,
            "dry_run": self.dry_run,
            "steps": [s.as_dict() for s in self.steps],
            "plan": self.plan,
            **({"details": self.details} if self.details else {}),
        }


Heal = Callable[[HealContext], "HealResult | Awaitable[HealResult]"]


def main(
    healer: str,
    layer: str,
    heal: Heal,
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    description: str = "",
) -> int:
    """Run ``heal`` as an executable: parse ``--dry-run``, print one JSON object; the exit code.

    ``--help`` prints the healer's usage (``description``) and exits 0; a usage
    error exits 2, as "not applicable" does: the healer did nothing.
    """
    # here, not at the top: razard imports this module (HealResult) and does not load click
    import click

    from razard import clirun

    @click.command(
        name=healer,
        help=description or __doc__,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.option("--dry-run", is_flag=True, help="Print the plan as JSON and change nothing.")
    @click.pass_context
    def command(ctx: click.Context, dry_run: bool) -> None:
        ctx.exit(_run(healer, layer, heal, os.environ if env is None else env, dry_run))

    return clirun.run(command, argv, prog_name=healer)


def _run(healer: str, layer: str, heal: Heal, environ: Mapping[str, str], dry_run: bool) -> int:
    """Run ``heal`` once, print its one JSON object; the exit code."""
    try:
        ctx = HealContext.from_env(layer, environ, dry_run=dry_run)
        out = heal(ctx)
        result = asyncio.run(out) if inspect.isawaitable(out) else out  # type: ignore[arg-type]
        assert isinstance(result, HealResult)
    except HealerError as e:
        result = HealResult(healer, layer, "not_healed", f"cannot run: {e}")
    except Exception as e:  # the contract: one JSON object, whatever happened
        result = HealResult(healer, layer, "not_healed", f"internal error: {type(e).__name__}: {e}")
    # a dry run is one, whatever stopped it (systemd out of reach, a bad setting)
    result.dry_run = bool(dry_run or _truthy(environ.get("RAZAR_DRY_RUN")))
    sys.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False) + "\n")
    sys.stdout.flush()
    return result.exit_code


class RateLimit:
    """At most ``limit`` actions per ``period`` seconds, counted in a file that outlives the healer.

    The file holds the times of the actions taken; it is read and rewritten under
    an exclusive lock, atomically, so two healers running at once cannot both
    take the last slot.
    """

    def __init__(self, path: Path, limit: int, period: float = 3600.0) -> None:
        self.path = path
        self.limit = limit
        self.period = period

    def _read(self, now: float) -> list[float]:
        try:
            raw = json.loads(self.path.read_text())
            times = [float(t) for t in raw.get("times", [])]
        except (OSError, ValueError, TypeError, AttributeError):
            times = []  # missing or damaged: start counting afresh
        return [t for t in times if now - self.period < t <= now]

    def used(self, now: float | None = None) -> int:
        return len(self._read(time.time() if now is None else now))

    def take(self, now: float | None = None) -> bool:
        """Record one action if the limit allows it; False, recording nothing, when it does not."""
        now = time.time() if now is None else now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with storage.locked(self.path.with_suffix(".lock")):
            times = self._read(now)
            if len(times) >= self.limit:
                return False
            times.append(now)
            doc = {"limit": self.limit, "period": self.period, "times": times}
            storage.write_atomic(self.path, json.dumps(doc).encode(), mode=0o644)
            return True

    def describe(self, now: float | None = None) -> str:
        return f"{self.used(now)}/{self.limit} in the last {self.period / 3600:g}h"

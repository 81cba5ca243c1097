"""From config files to a ready roster: load the agents file, the error registry, the thresholds.

Every problem in either file (and in the threshold variables) is reported
together as one `ConfigError`, as for ``razard.toml``, so ``razard check-config``
shows them all at once.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from razard.config import ComponentConfig, Config
from razard.errors import ConfigError, ConfigProblem
from razard.repair.handover import RosterEntry
from razard.repair.roster import (
    RSTAR_AGENT,
    AgentSpec,
    Roster,
    Thresholds,
    availability,
    load_roster,
    read_token,
    resolve_endpoint,
    thresholds,
)
from razard.repair.types import RepairAgent

if TYPE_CHECKING:  # the agents' modules load when they are needed: the daemon stays small
    from razard.repair.openai_agent import OpenAIAgent
    from razard.repair.registry import KillUnit, RegistryEntry, RunHealer

AGENTS_FILE: Final = "razar_ai_agents.json"
REGISTRY_FILE: Final = "error_registry.toml"


@dataclass(frozen=True)
class RepairSetup:
    """Everything the repair rung needs from configuration."""

    roster: Roster | None
    registry: tuple[RegistryEntry, ...]
    thresholds: Thresholds


def repair_files(config: Config) -> tuple[Path | None, Path | None]:
    """The agents file and the error registry beside the config file, where they exist."""
    agents = config.source.parent / AGENTS_FILE
    registry = config.source.parent / REGISTRY_FILE
    return (agents if agents.exists() else None, registry if registry.exists() else None)


def load_repair(config: Config, env: Mapping[str, str]) -> RepairSetup:
    """Load the roster, the registry and the thresholds; one ConfigError lists every problem."""
    problems: list[ConfigProblem] = []
    agents_path, registry_path = repair_files(config)
    roster = registry = None
    limits = Thresholds(rstar=9, escalation_warning=None)
    if agents_path is not None:
        try:
            roster = load_roster(agents_path)
        except ConfigError as e:
            problems += e.problems
    if registry_path is not None:
        from razard.repair.registry import load_registry

        try:
            registry = load_registry(registry_path)
        except ConfigError as e:
            problems += e.problems
    try:
        limits = thresholds(env)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    return RepairSetup(roster=roster, registry=registry or (), thresholds=limits)


Factory = Callable[[ComponentConfig], RepairAgent]


def _factory(
    spec: AgentSpec,
    setup: RepairSetup,
    env: Mapping[str, str],
    on_retry: Callable[[str], None],
    run_healer: RunHealer | None = None,
    kill_unit: KillUnit | None = None,
) -> Factory:
    if spec.kind == "registry":
        from razard.repair.registry import RegistryAgent

        registry = RegistryAgent(
            setup.registry,
            max_attempts=spec.max_attempts,
            run_healer=run_healer,
            kill_unit=kill_unit,
        )
        return lambda comp: registry
    if spec.kind == "openai":
        endpoint = resolve_endpoint(spec, env)
        token = read_token(spec, env) if spec.auth == "bearer" else None
        agents: dict[str, OpenAIAgent] = {}

        def openai_for(comp: ComponentConfig) -> RepairAgent:
            # one client per component so retries are counted against the right one
            from razard.repair.openai_agent import OpenAIAgent

            if comp.name not in agents:
                agents[comp.name] = OpenAIAgent(
                    spec, endpoint, token, on_retry=lambda: on_retry(comp.name)
                )
            return agents[comp.name]

        return openai_for
    config = dict(spec.config)
    endpoint = resolve_endpoint(spec, env)
    model = spec.model
    if endpoint and "provider" not in config:
        # point opencode at the configured OpenAI-compatible endpoint
        options = {"baseURL": endpoint}
        token = read_token(spec, env) if spec.auth == "bearer" else None
        if token:
            options["apiKey"] = token
        config["provider"] = {
            "razar": {
                "npm": "@ai-sdk/openai-compatible",
                "options": options,
                "models": {spec.model or "default": {}},
            }
        }
        model = f"razar/{spec.model or 'default'}"
    binary = shutil.which("opencode") or "opencode"

    def opencode_for(comp: ComponentConfig) -> RepairAgent:
        from razard.repair.opencode_agent import OpencodeAgent

        return OpencodeAgent(
            spec.name,
            Path(comp.artifact_root),
            comp.artifacts,
            binary=binary,
            model=model,
            deadline=spec.timeout,
            max_attempts=spec.max_attempts,
            config=config,
            # the operator's explicit opencode/npm settings; nothing else of razard's environment
            env={k: v for k, v in env.items() if k.startswith(("OPENCODE_", "npm_config_"))},
        )

    return opencode_for


def build_roster(
    setup: RepairSetup,
    env: Mapping[str, str],
    *,
    on_retry: Callable[[str], None] = lambda component: None,
    run_healer: RunHealer | None = None,
    kill_unit: KillUnit | None = None,
) -> list[RosterEntry]:
    """The rungs in ladder order, each with an agent factory or the reason it is skipped."""
    if setup.roster is None:
        return []
    entries = []
    for spec, reason in availability(setup.roster, env):
        if spec not in setup.roster.from_active():
            continue
        entries.append(
            RosterEntry(
                name=spec.name,
                kind=spec.kind,
                factory=None
                if reason
                else _factory(spec, setup, env, on_retry, run_healer, kill_unit),
                skip_reason=reason,
                remote=spec.kind != "registry",
                takes_over_after=setup.thresholds.rstar if spec.name == RSTAR_AGENT else None,
                max_attempts=spec.max_attempts,
            )
        )
    return entries

"""``razard``: run the supervisor, or check a config without starting anything.

    razard [--config FILE] [--retries N]     run (what razard.service starts)
    razard check-config FILE                 validate; print every problem; exit 0 or 1
    razard demo [--keep]                     the embedded demo on a private systemd

Exit codes: 0 ok, 1 runtime error, 2 invalid config or arguments.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from razard import __version__
from razard.errors import ConfigError, RazarError

DEFAULT_CONFIG = Path("/etc/razard/razard.toml")


def _fail(message: str, code: int) -> None:
    click.secho(f"razard: {message}", fg="red", err=True)
    sys.exit(code)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="razard.toml to run with.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 10000),
    default=None,
    help="Restart attempts per component before the ladder escalates "
    "(overrides every component's restart.attempts).",
)
@click.option(
    "--remote-attempts",
    type=click.IntRange(0, 10000),
    default=None,
    help="At most N remote repair-agent attempts per component and repair cycle.",
)
@click.option(
    "--long-task",
    is_flag=True,
    help="Keep asking the repair agents until the component is healthy or razard is "
    "stopped (every attempt goes to razar_long_task.json).",
)
@click.version_option(__version__, prog_name="razard")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: Path,
    retries: int | None,
    remote_attempts: int | None,
    long_task: bool,
) -> None:
    """Self-healing supervisor for GPU/AI nodes."""
    if ctx.invoked_subcommand is not None:
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from razard.daemon import run

    try:
        code = asyncio.run(
            run(config_path, retries, remote_attempts=remote_attempts, long_task=long_task)
        )
    except ConfigError as e:
        _fail(f"invalid config, not starting:\n{e}", 2)
    except RazarError as e:
        _fail(str(e), 1)
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


@cli.command("check-config")
@click.argument("file", type=click.Path(path_type=Path))
def check_config(file: Path) -> None:
    """Validate FILE; print every problem with its key; exit 0 when valid."""
    from razard.config import load_config
    from razard.repair.patch import check_artifact_roots
    from razard.repair.setup import load_repair, repair_files

    try:
        cfg = load_config(file)
        load_repair(cfg, os.environ)
        check_artifact_roots(cfg)
    except ConfigError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        click.secho(f"{file}: {len(e.problems)} problem(s)", fg="red", err=True)
        sys.exit(1)
    click.echo(
        f"{file}: ok, {len(cfg.components)} component(s), bus={cfg.daemon.bus}, "
        f"state_dir={cfg.daemon.state_dir}"
    )
    for comp in cfg.components:
        root = Path(comp.artifact_root) if comp.artifact_root else None
        if comp.artifacts and root is not None and root.exists() and not os.access(root, os.W_OK):
            click.secho(
                f"warning: {comp.name}: artifact_root {root} is not writable here; repairs "
                "cannot patch it (under razard.service add ReadWritePaths= for it)",
                fg="yellow",
                err=True,
            )
    agents, registry = repair_files(cfg)
    click.echo(f"repair roster: {agents or 'none (no razar_ai_agents.json beside the config)'}")
    click.echo(f"error registry: {registry or 'none (no error_registry.toml beside the config)'}")


@cli.command()
@click.option(
    "--keep",
    is_flag=True,
    help="Leave the private systemd and razard running; prints how to stop them.",
)
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the demo to settle.",
)
def demo(keep: bool, wait_s: float) -> None:
    """Run razard on a private systemd user manager with example components."""
    from razard.demo import run_demo

    try:
        sys.exit(run_demo(keep=keep, wait=wait_s))
    except RazarError as e:
        _fail(str(e), 1)


def main() -> None:
    cli()

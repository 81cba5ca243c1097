"""``razard``: run the supervisor, or check a config without starting anything.

    razard [--config FILE] [--retries N]     run (what razard.service starts)
    razard --debug ...  (or RAZARD_DEBUG=1)  log at DEBUG, libraries included
    razard check-config [--host] FILE        validate (and, as root, check this node); exit 0 or 1
    razard check-config --online FILE        ... and ask the fleet's etcd whether it answers
    razard demo [--keep]                     the embedded demo on a private systemd

Exit codes: 0 ok, 1 runtime error, 2 invalid config or arguments.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from razard import __version__
from razard.errors import ConfigError, RazarError
from razard.layout import DEFAULT_CONFIG

if TYPE_CHECKING:
    from razard.config import Config


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
@click.option(
    "--debug",
    is_flag=True,
    envvar="RAZARD_DEBUG",
    help="Log at DEBUG, libraries (httpx, dbus-fast, asyncio...) included; also RAZARD_DEBUG=1.",
)
@click.version_option(__version__, prog_name="razard")
@click.pass_context
def cli(
    ctx: click.Context,
    config_path: Path,
    retries: int | None,
    remote_attempts: int | None,
    long_task: bool,
    debug: bool,
) -> None:
    """Self-healing supervisor for GPU/AI nodes."""
    if ctx.invoked_subcommand is not None:
        return
    # (`razard` itself runs this without click when its arguments are plain: razard.launch)
    from razard.daemon import run_main

    sys.exit(
        run_main(
            config_path, retries, remote_attempts=remote_attempts, long_task=long_task, debug=debug
        )
    )


@cli.command("check-config")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--host/--no-host",
    "host",
    default=None,
    help="Also check this node: users, programs, `unit =` units (asked of systemd), "
    "directories, token files and the metrics port. Default: on when run as root.",
)
@click.option(
    "--online",
    is_flag=True,
    help="Also ask the etcd of [fleet] whether it answers (with the configured credentials).",
)
def check_config(file: Path, host: bool | None, online: bool) -> None:
    """Validate FILE; print every problem with its key; exit 0 when valid.

    With --host (the default as root), then check FILE against this node: what it
    lacks is an error (exit 1), what may be fine (the metrics port held by the
    running razard, an unwritable artifact_root, an unreachable bus) a warning.
    """
    from razard.config import load_config
    from razard.hostcheck import check_host, summary
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
        f"{file}: valid, {len(cfg.components)} component(s), bus={cfg.daemon.bus}, "
        f"state_dir={cfg.daemon.state_dir}"
    )
    agents, registry = repair_files(cfg)
    click.echo(f"repair roster: {agents or 'none (no razar_ai_agents.json beside the config)'}")
    click.echo(f"error registry: {registry or 'none (no error_registry.toml beside the config)'}")
    if cfg.fleet.enabled:
        click.echo(
            f"fleet: node {cfg.fleet.node_name}, prefix {cfg.fleet.prefix}, "
            f"etcd {', '.join(cfg.fleet.endpoints)} "
            "(read at start: a change to [fleet] takes effect when razard restarts)"
        )
    if online:
        _check_online(cfg)
    if host is None:
        host = os.geteuid() == 0
    if not host:
        click.echo(f"{file}: ok (this node not checked: --host checks it)")
        return
    from agents.healing.units import host_support

    for layer, actions in host_support().items():  # what the healers can do on this host
        for action, said in sorted(actions.items()):
            if said.startswith("no:") and cfg.chakra.layer(layer).configured:
                click.echo(f"note: [chakra.{layer}] {action} not supported here{said[2:]}")
    findings = check_host(cfg)
    for f in findings:
        click.secho(str(f), fg="red" if f.error else "yellow", err=True)
    if any(f.error for f in findings):
        click.secho(f"{file}: {summary(findings)}", fg="red", err=True)
        sys.exit(1)
    click.echo(f"{file}: {summary(findings)}")


def _check_online(cfg: Config) -> None:
    """--online: does the fleet's etcd answer? Exit 1 when it does not."""
    if not cfg.fleet.enabled:
        click.echo("fleet: none configured (no [fleet] table): nothing to ask online")
        return
    from razard.fleet.core import probe

    reach = asyncio.run(probe(cfg.fleet))
    if not reach.reachable:
        click.secho(f"fleet: etcd does not answer: {reach.detail}", fg="red", err=True)
        sys.exit(1)
    click.echo(f"fleet: {reach.detail}")


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

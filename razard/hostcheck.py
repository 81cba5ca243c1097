"""Check a valid config against the node it is meant for (``razard check-config --host``).

`razard.config` only knows whether the file makes sense; this module looks at the
machine: the users, programs, units, directories, token files and ports the
config names. Each `Finding` is an ERROR (razard would fail with it: a missing
user, program, unit, directory) or a WARNING (it may work, or is expected: the
metrics port held by the running razard, an artifact root razard cannot write,
a systemd manager that cannot be reached to ask about units).

Findings name the file and the key the way config problems do
(``component[1] (inference).user``), so an operator reads both the same way.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from razard.config import ComponentConfig, Config
from razard.configreader import METRICS_PORT_ENV, join_key
from razard.errors import SystemdError, UnitNotFound
from razard.listener import where
from razard.unitfile import default_unit_dir, read_fingerprint

Severity = Literal["error", "warning"]

#: The PATH systemd gives services (razard.service included) when no Environment= sets one;
#: on a merged-/usr system /sbin and /bin are the same directories as /usr/sbin and /usr/bin.
SYSTEMD_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UNIT_CHECK_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Finding:
    """One thing on this node that does not match the config."""

    severity: Severity
    file: str
    key: str
    reason: str

    @property
    def error(self) -> bool:
        return self.severity == "error"

    def __str__(self) -> str:
        # errors read like config problems; warnings start with "warning:" as before
        text = f"{self.file}: {self.key}: {self.reason}"
        return text if self.error else f"warning: {text}"


class _Findings:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[Finding] = []

    def error(self, key: str, reason: str) -> None:
        self.items.append(Finding("error", self.file, key, reason))

    def warning(self, key: str, reason: str) -> None:
        self.items.append(Finding("warning", self.file, key, reason))


def summary(findings: list[Finding]) -> str:
    """The last line of check-config --host: ``ok on this node`` (``, 1 warning``) or
    ``2 errors, 1 warning on this node``."""
    errors = sum(f.error for f in findings)
    warnings = len(findings) - errors
    if errors:
        return f"{_count(errors, 'error')}, {_count(warnings, 'warning')} on this node"
    return "ok on this node" + (f", {_count(warnings, 'warning')}" if warnings else "")


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def component_key(index: int, comp: ComponentConfig) -> str:
    """How config problems name a component: ``component[2] (scheduler)``."""
    return f"component[{index}] ({comp.name})"


# --------------------------------------------------------------------------- the checks


def check_host(
    cfg: Config, env: Mapping[str, str] | None = None, *, units: bool = True
) -> list[Finding]:
    """Everything this node lacks for ``cfg``; ``units``: also ask systemd about ``unit =``
    components (over the config's bus, as razard would)."""
    env = os.environ if env is None else env
    out = _Findings(str(cfg.source))
    # razard runs probes itself: under razard.service with systemd's PATH, by hand with its own
    probe_path = SYSTEMD_DEFAULT_PATH if cfg.daemon.bus == "system" else env.get("PATH", "")
    for i, comp in enumerate(cfg.components):
        _check_component(out, component_key(i, comp), comp, probe_path)
    _check_daemon(out, cfg, env)
    _check_healers(out, cfg)
    _check_tokens(out, cfg)
    wanted = [(i, c) for i, c in enumerate(cfg.components) if not c.owned]
    if units and wanted:
        out.items.extend(asyncio.run(_check_units(cfg, wanted)))
    return out.items


def _check_component(out: _Findings, prefix: str, comp: ComponentConfig, probe_path: str) -> None:
    account: pwd.struct_passwd | None = None
    if comp.user:
        try:
            account = pwd.getpwnam(comp.user)
        except KeyError:
            out.error(
                join_key(prefix, "user"),
                f"no user {comp.user!r} on this node (expected an existing account, e.g. "
                f"`useradd --system {comp.user}`); systemd would fail the unit with 217/USER",
            )
    if comp.command:
        problem = program_problem(comp.command[0], account=account)
        if problem:
            out.error(
                join_key(prefix, "command"), problem + "; systemd would fail the unit with 203/EXEC"
            )
    if comp.working_directory:
        problem = directory_problem(comp.working_directory)
        if problem:
            out.error(
                join_key(prefix, "working_directory"),
                problem + "; systemd would fail the unit with 200/CHDIR",
            )
    if comp.probe is not None and comp.probe.kind == "exec" and comp.probe.command:
        program = comp.probe.command[0]
        found, problem = resolve_program(program, probe_path, comp.working_directory or "/")
        if problem:
            out.error(join_key(prefix, "probe.command"), problem + "; every probe would fail")
        elif found is not None and (problem := program_problem(str(found))):
            out.error(join_key(prefix, "probe.command"), problem + "; every probe would fail")
    if comp.artifact_root:
        key = join_key(prefix, "artifact_root")
        problem = directory_problem(comp.artifact_root)
        # an artifact_root taken from working_directory is already reported there
        if problem and comp.artifact_root != comp.working_directory:
            out.error(key, problem + "; repairs patch the artifacts in it")
        elif not problem and comp.artifacts and not os.access(comp.artifact_root, os.W_OK):
            out.warning(
                key,
                f"{comp.artifact_root} is not writable here; repairs cannot patch it "
                "(under razard.service add ReadWritePaths= for it)",
            )


def _check_daemon(out: _Findings, cfg: Config, env: Mapping[str, str]) -> None:
    d = cfg.daemon
    if d.state_dir.exists() and not d.state_dir.is_dir():
        out.error("razard.state_dir", f"{d.state_dir} exists and is not a directory")
    unit_dir = d.unit_dir or default_unit_dir(d.bus, dict(env))
    if any(c.owned for c in cfg.components):
        if unit_dir.exists() and not unit_dir.is_dir():
            out.error("razard.unit_dir", f"{unit_dir} exists and is not a directory")
        for i, comp in enumerate(cfg.components):
            path = unit_dir / comp.unit
            if comp.owned and path.exists() and read_fingerprint(path) is None:
                out.error(
                    component_key(i, comp),
                    f"{path} exists and was not written by razard; razard refuses to "
                    f'overwrite it (rename the component, or use `unit = "{comp.unit}"`)',
                )
    problem = bind_problem(d.metrics_address, d.metrics_port)
    if problem is not None:
        severity, reason = problem
        key = f"${METRICS_PORT_ENV}" if METRICS_PORT_ENV in env else "razard.metrics_port"
        (out.error if severity == "error" else out.warning)(key, reason)


def _check_healers(out: _Findings, cfg: Config) -> None:
    # healers run in transient units: systemd resolves their program on its own PATH
    for layer in cfg.chakra.layers:
        if layer.enabled and layer.healer:
            key = f"chakra.{layer.layer}.healer"
            found, problem = resolve_program(layer.healer[0], SYSTEMD_DEFAULT_PATH, "/")
            if problem is None and found is not None:
                problem = program_problem(str(found))
            if problem:
                out.error(key, problem + "; the layer's healer could never run")


def _check_tokens(out: _Findings, cfg: Config) -> None:
    if not cfg.escalation.enabled:
        return
    for target in cfg.escalation.targets:
        path = target.token_file
        if path is None:
            continue
        key = f"escalation.{target.kind}.token_file"
        if not path.is_file():
            out.error(key, f"{path} does not exist or is not a file (expected the token)")
        elif not os.access(path, os.R_OK):
            out.error(key, f"{path} is not readable here (expected the token)")


# --------------------------------------------------------------------------- one thing each


def directory_problem(path: str) -> str | None:
    """Why ``path`` is not an existing directory, or None."""
    p = Path(path)
    if not p.exists():
        return f"{path} does not exist (expected a directory)"
    if not p.is_dir():
        return f"{path} is not a directory"
    return None


def resolve_program(program: str, search_path: str, cwd: str) -> tuple[Path | None, str | None]:
    """Where ``program`` (argv[0]) is found as exec does it: a name with a ``/`` as a path
    (relative to ``cwd``), a bare name on ``search_path``. Returns (path, None) or (None, why)."""
    if "/" in program:
        return Path(cwd, program), None
    dirs = [d for d in search_path.split(":") if d]
    for d in dirs:
        candidate = Path(d, program)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate, None
    return None, f"{program!r} is not found on PATH {':'.join(dirs) or '(empty)'}"


def program_problem(path: str, *, account: pwd.struct_passwd | None = None) -> str | None:
    """Why ``path`` cannot be executed (by ``account``, when given), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} does not exist (expected an executable program)"
    except OSError as e:
        return f"{path}: cannot look at it: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (expected an executable program)"
    if not os.access(path, os.X_OK):
        return f"{path} is not executable (chmod +x?)"
    if account is None or account.pw_uid == 0:
        return None
    groups = _groups(account)
    if not _may(st, account, groups, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
        return (
            f"{path} is not executable by user {account.pw_name} "
            f"(mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}, gid {st.st_gid})"
        )
    for parent in Path(path).parents:
        try:
            pst = os.stat(parent)
        except OSError:
            continue
        if not _may(pst, account, groups, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
            return (
                f"{path}: user {account.pw_name} cannot enter {parent} "
                f"(mode {stat.filemode(pst.st_mode)}, owner uid {pst.st_uid}, gid {pst.st_gid})"
            )
    return None


def _groups(account: pwd.struct_passwd) -> set[int]:
    try:
        return set(os.getgrouplist(account.pw_name, account.pw_gid))
    except OSError:
        return {account.pw_gid}


def _may(
    st: os.stat_result, account: pwd.struct_passwd, groups: set[int], u: int, g: int, o: int
) -> bool:
    """The mode bits (``u``/``g``/``o``) that apply to ``account``, as the kernel picks them."""
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & u)
    if st.st_gid in groups:
        return bool(st.st_mode & g)
    return bool(st.st_mode & o)


def bind_problem(address: str, port: int) -> tuple[Severity, str] | None:
    """Whether razard could listen on ``address:port`` now (as its metrics server does, with
    SO_REUSEADDR). Port 0 (any free port) always can."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as e:
            at = where(address, port)
            if e.errno == errno.EADDRINUSE:
                return (
                    "warning",
                    f"{at} is in use: fine if it is the running razard with this config "
                    "(`razarctl status`); otherwise razard starts without its metrics page "
                    "until the port is free (set metrics_port or RAZAR_METRICS_PORT)",
                )
            if e.errno == errno.EADDRNOTAVAIL:
                return "error", f"{at}: {address} is not an address of this node"
            return "error", f"cannot listen on {at}: {e.strerror or e}"
    return None


async def _check_units(cfg: Config, wanted: list[tuple[int, ComponentConfig]]) -> list[Finding]:
    """Ask the config's systemd manager about each ``unit =``: not-found, masked or broken
    is an error; a manager that cannot be reached is one warning (units not checked)."""
    from razard.systemd import UNIT_IFACE, Systemd

    out = _Findings(str(cfg.source))
    bus = cfg.daemon.bus
    sd = Systemd(bus=bus, call_timeout=UNIT_CHECK_TIMEOUT)
    try:
        await sd.connect()
    except SystemdError as e:
        names = ", ".join(c.unit for _, c in wanted)
        out.warning(
            "razard.bus",
            f"cannot ask the {bus} manager about units ({e}); not checked: {names}",
        )
        return out.items
    manager = f"the {bus} manager"
    try:
        for i, comp in wanted:
            key = join_key(component_key(i, comp), "unit")
            try:
                props = await sd.properties(comp.unit, UNIT_IFACE)
            except UnitNotFound as e:
                out.error(key, f"{manager} has no unit {comp.unit} ({e})")
                continue
            except SystemdError as e:
                out.warning(key, f"could not ask {manager} about {comp.unit}: {e}")
                continue
            load = str(props.get("LoadState", ""))
            if load == "loaded":
                continue
            if load == "not-found":
                out.error(
                    key,
                    f"{manager} has no unit {comp.unit} (LoadState=not-found): install it, "
                    "or fix the name",
                )
            elif load == "masked":
                out.error(key, f"{comp.unit} is masked: razard cannot start it")
            else:
                detail = props.get("LoadError")
                why = ""
                if isinstance(detail, list | tuple) and len(detail) == 2 and detail[1]:
                    why = f": {detail[1]}"
                out.error(key, f"{comp.unit} did not load (LoadState={load or '?'}){why}")
    finally:
        await sd.close()
    return out.items

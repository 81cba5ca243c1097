"""Unit files razard writes and owns for ``command`` components.

razard owns restarts itself (backoff, the ladder), so its units say
``Restart=no`` and turn systemd's start limit off: two restart policies on one
unit would fight. Each file carries a fingerprint of the component's config so
razard can tell, after its own restart or a reload, whether the running unit
still matches the config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Final

from razard import storage
from razard.config import BusKind, ComponentConfig
from razard.errors import StateError

FINGERPRINT_PREFIX: Final = "# razar-fingerprint: "
HEADER: Final = "# Written by razard; edits are overwritten. Change razard.toml instead.\n"


def default_unit_dir(bus: BusKind, env: dict[str, str] | None = None) -> Path:
    """Where razard writes unit files when ``[razard].unit_dir`` is not set."""
    env = dict(os.environ) if env is None else env
    if bus == "system":
        return Path("/etc/systemd/system")
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "/root")) / ".config")
    return Path(base) / "systemd" / "user"


def fingerprint(component: ComponentConfig) -> str:
    """A short stable hash of everything about a component that lives in its unit."""
    fields = asdict(component)
    for k in ("probe", "restart", "artifacts", "priority", "start_timeout"):
        fields.pop(k, None)  # razard-side settings: changing them needs no restart
    if not component.heartbeat:
        fields.pop("heartbeat", None)  # units written before heartbeats existed stay current
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _quote(arg: str, *, exec_line: bool = True) -> str:
    # systemd unquotes C-style, expands %specifiers and (in Exec lines only) $VARS
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if exec_line:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def unit_file(unit_dir: str | os.PathLike[str], unit: str) -> str:
    """The path of ``unit``'s file in ``unit_dir``.

    A string, not a `Path`: a `Path` interns each of its parts for good, and one name per
    component pushed razard's table of interned strings over a doubling (0.5 MiB at 500
    components) for paths that are only opened and compared."""
    return os.path.join(unit_dir, unit)


def env_file(unit_dir: str | os.PathLike[str], unit: str) -> str:
    """Where a component's ``environment`` is kept (mode 0600): not in its unit file, which
    anyone may read (as anyone may ``systemctl show`` its ``Environment=``)."""
    return os.path.join(unit_dir, f".{unit}.env")


def render_env_file(component: ComponentConfig) -> str:
    """The ``EnvironmentFile=`` text of the component's ``environment``."""
    out = ["# Written by razard from razard.toml; edits are overwritten."]
    for key, value in component.environment:
        # double quotes: systemd takes \, \", \$ and \` as the character itself
        escaped = "".join("\\" + ch if ch in '\\"$`' else ch for ch in value)
        out.append(f'{key}="{escaped}"')
    return "\n".join(out) + "\n"


def render_unit(
    component: ComponentConfig, heartbeat_file: str = "", environment_file: str = ""
) -> str:
    """The unit file text for a ``command`` component; its ``environment`` is read from
    ``environment_file`` when one is given (see `env_file`), else written inline."""
    desc = f"razar component {component.name} ({component.layer})"
    if component.description:
        desc += f": {component.description}"
    # no control characters, no trailing backslash (a line continuation in unit files)
    desc = "".join(ch if ch >= " " else " " for ch in desc).replace("%", "%%").rstrip("\\")
    lines = [
        HEADER.rstrip("\n"),
        f"{FINGERPRINT_PREFIX}{fingerprint(component)}",
        "[Unit]",
        f"Description={desc}",
        "# razard restarts with its own backoff and ladder; systemd's start limit would fight it",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=exec",
        "ExecStart=" + " ".join(_quote(a) for a in component.command),
        "Restart=no",
        "TimeoutStopSec=10",
        # `journalctl -t razar-<name>` and `razarctl logs <name>` find the output anywhere;
        # the extra field joins it with razard's own records where journald supports it
        f"SyslogIdentifier={component.unit.removesuffix('.service')}",
        f"LogExtraFields=RAZAR_COMPONENT={component.name}",
    ]
    if component.environment and environment_file:
        lines.append(f"EnvironmentFile={environment_file.replace('%', '%%')}")
    else:
        for key, value in component.environment:
            lines.append("Environment=" + _quote(f"{key}={value}", exec_line=False))
    if heartbeat_file:
        # where the component beats (touch or write it): see the [chakra] docs
        lines.append(
            "Environment=" + _quote(f"RAZAR_HEARTBEAT_FILE={heartbeat_file}", exec_line=False)
        )
    if component.working_directory:
        lines.append(f"WorkingDirectory={component.working_directory.replace('%', '%%')}")
    if component.user:
        lines.append(f"User={component.user}")
    for line in lines:
        # a trailing backslash continues the line: it would swallow the next setting
        # (User=, and the unit would run as root). The config refuses such values.
        if line.endswith("\\") and not line.startswith("#"):
            raise StateError(
                f"{component.unit}: a line would continue onto the next: {line[:80]!r}"
            )
    return "\n".join(lines) + "\n"


def _fingerprint_in(lines: Iterable[str]) -> str | None:
    for line in lines:
        if line.startswith(FINGERPRINT_PREFIX):
            return line[len(FINGERPRINT_PREFIX) :].strip()
    return None


def read_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The fingerprint recorded in a unit file razard wrote, or None."""
    try:
        with open(path, encoding="utf-8") as f:
            return _fingerprint_in(f)
    except OSError:
        return None


def write_unit(unit_dir: Path, component: ComponentConfig, heartbeat_file: str = "") -> bool:
    """Write the component's unit atomically; returns True when the file changed.

    Its ``environment`` goes to a 0600 file beside it (`env_file`), written first."""
    return sync_unit(unit_dir, component, heartbeat_file)[0]


def sync_unit(
    unit_dir: Path, component: ComponentConfig, heartbeat_file: str = ""
) -> tuple[bool, bool]:
    """`write_unit`, reading the file there once: (whether the unit or its environment
    changed, whether the file there was written for another config of the component: a
    process it started may run the old one)."""
    envs = env_file(unit_dir, component.unit)
    text = render_unit(component, heartbeat_file, envs if component.environment else "")
    path = unit_file(unit_dir, component.unit)
    try:
        old = _read_text(path)
        was = None if old is None else _fingerprint_in(old.splitlines())
        if old is not None and was is None:
            raise StateError(
                f"{path}: exists and was not written by razard; refusing to overwrite it "
                f'(rename the component, or use `unit = "{component.unit}"` to supervise it)'
            )
        predates = was is not None and was != _fingerprint_in(text.splitlines())
        changed = _write_env(unit_dir, envs, component)
        if old == text:
            return changed, predates
        unit_dir.mkdir(parents=True, exist_ok=True)
        # 0644, as systemd unit files are (the environment, which may hold secrets, is apart)
        _write_in(unit_dir, path, text.encode("utf-8"), 0o644)
    except OSError as e:
        raise StateError(f"{path}: cannot write unit file: {e.strerror or e}") from e
    return True, predates


def _read_text(path: str) -> str | None:
    """The file's text, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_in(directory: Path, path: str, data: bytes, mode: int) -> None:
    """`storage.write_atomic` of ``path``, a file directly in ``directory``, by its name in
    that directory (`storage.write_atomic` would make a `Path` of it: see `unit_file`)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        storage.write_atomic(os.path.basename(path), data, mode=mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def _write_env(unit_dir: Path, path: str, component: ComponentConfig) -> bool:
    """Write (or remove) the component's environment file, mode 0600; True when it changed."""
    if not component.environment:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    data = render_env_file(component).encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data and (os.fstat(f.fileno()).st_mode & 0o077) == 0:
                return False
    except FileNotFoundError:
        pass
    unit_dir.mkdir(parents=True, exist_ok=True)
    _write_in(unit_dir, path, data, storage.PRIVATE_MODE)
    return True


def remove_unit(unit_dir: Path, unit: str) -> bool:
    """Remove a unit file razard owns (and its environment file); True when one was removed."""
    path = unit_file(unit_dir, unit)
    if read_fingerprint(path) is None:
        return False  # never delete a unit file razard did not write
    with contextlib.suppress(OSError):
        os.unlink(env_file(unit_dir, unit))
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StateError(f"{path}: cannot remove unit file: {e.strerror or e}") from e
    return True

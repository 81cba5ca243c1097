"""The ``[escalation]`` table of razard.toml: when to tell a person, and where.

::

    [escalation]
    threshold = 5             # a failure signature seen this many times ...
    window = 300.0            # ... within this many seconds raises an alert
    repeat_interval = 3600.0  # a still-firing alert is sent again after this long
    poll_interval = 5.0       # how often razard reads new journal entries
    outbox_max = 1000         # undelivered alerts kept on disk; the oldest is dropped past it
    retry_base = 5.0          # first retry after this long, doubling ...
    retry_cap = 600.0         # ... up to this
    timeout = 10.0            # each HTTP request's deadline
    host = ""                 # the host label (default: this machine's name)
    journal_args = []         # extra journalctl options, e.g. ["--directory=/var/log/journal"]

    [escalation.alertmanager] # each target optional
    url = "http://127.0.0.1:9093"
    token_env = "RAZAR_ALERTMANAGER_TOKEN"   # or token_file = "/etc/razard/am.token"

    [escalation.operator]     # the operator console: POST <url>/operator/command
    url = "http://127.0.0.1:8080"
    operator = "razar"
    agent = "razar"

    [escalation.webhook]      # POST <url>, a JSON body per alert
    url = "https://hooks.example.com/razar"

A token is never written in the file itself: ``token_env`` names an
environment variable and ``token_file`` a file holding it; either is read when
an alert is sent, and goes out only as ``Authorization: Bearer``.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from razard.configreader import ENV_NAME_RE, Reader, has_control, join_key, resolve_key, typename

TargetKind = Literal["alertmanager", "operator", "webhook"]
TARGET_KINDS: Final[tuple[TargetKind, ...]] = ("alertmanager", "operator", "webhook")

DEFAULT_THRESHOLD: Final = 5
DEFAULT_WINDOW: Final = 300.0
DEFAULT_REPEAT_INTERVAL: Final = 3600.0
DEFAULT_POLL_INTERVAL: Final = 5.0
DEFAULT_OUTBOX_MAX: Final = 1000
DEFAULT_RETRY_BASE: Final = 5.0
DEFAULT_RETRY_CAP: Final = 600.0
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_OPERATOR: Final = "razar"
DEFAULT_AGENT: Final = "razar"

_KEYS: Final = {
    "enabled",
    "threshold",
    "window",
    "repeat_interval",
    "poll_interval",
    "outbox_max",
    "retry_base",
    "retry_cap",
    "timeout",
    "host",
    "journal_args",
    *TARGET_KINDS,
}
_TARGET_KEYS: Final = {"url", "token_env", "token_file"}
_OPERATOR_KEYS: Final = _TARGET_KEYS | {"operator", "agent"}
_URL_RE: Final = re.compile(r"^https?://[^/\s]+\S*$")


@dataclass(frozen=True)
class TargetConfig:
    """One place alerts go: its URL and where its token comes from (never the token)."""

    kind: TargetKind
    url: str
    token_env: str = ""
    token_file: Path | None = None
    operator: str = DEFAULT_OPERATOR  # operator console only
    agent: str = DEFAULT_AGENT  # operator console only


@dataclass(frozen=True)
class EscalationConfig:
    """The ``[escalation]`` table; ``enabled`` is False when the file has none."""

    enabled: bool = False
    threshold: int = DEFAULT_THRESHOLD
    window: float = DEFAULT_WINDOW
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    poll_interval: float = DEFAULT_POLL_INTERVAL
    outbox_max: int = DEFAULT_OUTBOX_MAX
    retry_base: float = DEFAULT_RETRY_BASE
    retry_cap: float = DEFAULT_RETRY_CAP
    timeout: float = DEFAULT_TIMEOUT
    host: str = ""
    journal_args: tuple[str, ...] = ()
    targets: tuple[TargetConfig, ...] = ()

    @property
    def hostname(self) -> str:
        """The host label: ``host``, or this machine's name."""
        return self.host or socket.gethostname()


def parse_escalation(r: Reader, raw: Any, base: Path) -> EscalationConfig:
    """Parse the ``[escalation]`` table (``raw`` is None when the file has none)."""
    if raw is None:
        return EscalationConfig()
    t = r.table(raw, "escalation")
    if t is None:
        return EscalationConfig()
    p = "escalation"
    r.unknown(t, p, _KEYS)
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        r.problem(join_key(p, "enabled"), f"expected true or false, got {typename(enabled)}")
        enabled = True
    threshold = r.integer(t, p, "threshold", DEFAULT_THRESHOLD, 1, 1_000_000)
    window = r.number(t, p, "window", DEFAULT_WINDOW, 0.0, 7 * 86400.0, lo_open=True)
    repeat = r.number(t, p, "repeat_interval", DEFAULT_REPEAT_INTERVAL, 0.0, 30 * 86400.0)
    poll = r.number(t, p, "poll_interval", DEFAULT_POLL_INTERVAL, 0.0, 3600.0, lo_open=True)
    outbox_max = r.integer(t, p, "outbox_max", DEFAULT_OUTBOX_MAX, 1, 1_000_000)
    retry_base = r.number(t, p, "retry_base", DEFAULT_RETRY_BASE, 0.0, 86400.0, lo_open=True)
    retry_cap = r.number(t, p, "retry_cap", DEFAULT_RETRY_CAP, 0.0, 7 * 86400.0, lo_open=True)
    if retry_cap < retry_base:
        r.problem(join_key(p, "retry_cap"), f"must be >= retry_base ({retry_base:g})")
        retry_cap = retry_base
    timeout = r.number(t, p, "timeout", DEFAULT_TIMEOUT, 0.0, 600.0, lo_open=True)
    host = r.string(t, p, "host", "") or ""
    if has_control(host) or " " in host:
        r.problem(join_key(p, "host"), "a host name cannot contain spaces or control characters")
        host = ""
    journal_args: tuple[str, ...] = ()
    if "journal_args" in t:
        args = t["journal_args"]
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            r.problem(join_key(p, "journal_args"), "expected a list of strings")
        elif any(not a.startswith("-") or has_control(a) for a in args):
            r.problem(
                join_key(p, "journal_args"),
                'expected journalctl options such as "--directory=/var/log/journal"',
            )
        else:
            journal_args = tuple(args)
    targets = tuple(
        target
        for kind in TARGET_KINDS
        if kind in t and (target := _parse_target(r, t[kind], kind, base)) is not None
    )
    return EscalationConfig(
        enabled=enabled,
        threshold=threshold or DEFAULT_THRESHOLD,
        window=window,
        repeat_interval=repeat,
        poll_interval=poll,
        outbox_max=outbox_max or DEFAULT_OUTBOX_MAX,
        retry_base=retry_base,
        retry_cap=retry_cap,
        timeout=timeout,
        host=host,
        journal_args=journal_args,
        targets=targets,
    )


def _parse_target(r: Reader, raw: Any, kind: TargetKind, base: Path) -> TargetConfig | None:
    p = f"escalation.{kind}"
    t = r.table(raw, p)
    if t is None:
        return None
    if "token" in t:
        r.problem(
            join_key(p, "token"),
            "a token is not kept in the config file: set token_env (the name of an "
            "environment variable holding it) or token_file (a file holding it)",
        )
    r.unknown({k: v for k, v in t.items() if k != "token"}, p, _target_keys(kind))
    n_before = len(r.problems)
    url = r.string(t, p, "url") or ""
    if url and (not _URL_RE.match(url) or has_control(url)):
        r.problem(join_key(p, "url"), f"expected an http:// or https:// URL, got {url!r}")
    if url and "@" in urlsplit(url).netloc:
        r.problem(join_key(p, "url"), "credentials in the URL are not allowed: use token_env")
    token_env = r.string(t, p, "token_env", "") or ""
    if token_env and not ENV_NAME_RE.fullmatch(token_env):
        r.problem(join_key(p, "token_env"), f"{token_env!r} is not an environment variable name")
    token_file_raw = r.string(t, p, "token_file", "") or ""
    if token_env and token_file_raw:
        r.problem(p, "set token_env or token_file, not both")
    token_file: Path | None = None
    if token_file_raw:
        if has_control(token_file_raw):
            r.problem(join_key(p, "token_file"), "cannot contain control characters")
        else:
            token_file = resolve_key(r, base, token_file_raw, join_key(p, "token_file"))
    operator = _name(r, t, p, "operator", DEFAULT_OPERATOR)
    agent = _name(r, t, p, "agent", DEFAULT_AGENT)
    if len(r.problems) > n_before:
        return None
    return TargetConfig(kind, url, token_env, token_file, operator, agent)


def _target_keys(kind: TargetKind) -> set[str]:
    return set(_OPERATOR_KEYS if kind == "operator" else _TARGET_KEYS)


def _name(r: Reader, t: Mapping[str, Any], p: str, key: str, default: str) -> str:
    value = r.string(t, p, key, default) or default
    if has_control(value):
        r.problem(join_key(p, key), "cannot contain control characters")
        return default
    return value

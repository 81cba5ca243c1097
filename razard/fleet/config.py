"""The ``[fleet]`` table of razard.toml: this node's place in a fleet sharing one etcd.

::

    [fleet]
    endpoints = ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]  # etcd client URLs
    prefix = "/razar/"          # every key razar writes starts with it
    node = ""                   # this node's name (default: the host name)
    budget = 1                  # disruptive actions at once, fleet-wide; or "10%" of live nodes
    breaker_threshold = 3       # more than this many nodes acting within ...
    breaker_window = 600.0      # ... this many seconds trips the breaker
    lease_ttl = 60.0            # a dead node's record and slots vanish after this long
                                # (renewed every lease_ttl/3: 3 requests a minute)
    slot_wait = 60.0            # how long a gated action waits for a free slot
    timeout = 5.0               # each etcd call's deadline
    gated = ["sacral_gpu_reset", "sacral_gpu_flush", "root_network_restart",
             "crown_full_restart", "patch_apply"]
    fail_open = []              # gated actions allowed (without a slot) while etcd is away
    fix_failures = 3            # a shared fix that failed on this many nodes is withdrawn
    ca_file = "/etc/razard/etcd-ca.pem"   # TLS (https:// endpoints)
    cert_file = "/etc/razard/etcd.pem"    # client certificate and key, optional
    key_file = "/etc/razard/etcd.key"
    username = "razar"                    # etcd auth, optional: the password is read
    password_file = "/etc/razard/etcd.pw" # from this file when razard connects

Absent, razard needs no etcd and behaves as without a fleet. The password is
never in the file itself and never logged.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from razard.configreader import Reader, has_control, join_key, resolve_key, typename

#: What a fleet gates by default: the actions that disrupt a node, never a plain restart.
DEFAULT_GATED: Final = (
    "sacral_gpu_reset",
    "sacral_gpu_flush",
    "root_network_restart",
    "crown_full_restart",
    "patch_apply",
)
DEFAULT_PREFIX: Final = "/razar/"
DEFAULT_BUDGET: Final = 1
DEFAULT_BREAKER_THRESHOLD: Final = 3
DEFAULT_BREAKER_WINDOW: Final = 600.0
DEFAULT_LEASE_TTL: Final = 60.0
DEFAULT_SLOT_WAIT: Final = 60.0
DEFAULT_TIMEOUT: Final = 5.0
DEFAULT_FIX_FAILURES: Final = 3

_KEYS: Final = {
    "endpoints",
    "prefix",
    "node",
    "budget",
    "breaker_threshold",
    "breaker_window",
    "lease_ttl",
    "slot_wait",
    "timeout",
    "gated",
    "fail_open",
    "fix_failures",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password_file",
}
ACTION_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
NODE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")
_PREFIX_RE: Final = re.compile(r"^/[A-Za-z0-9_./-]*/$")
_PERCENT_RE: Final = re.compile(r"^([0-9]{1,3})%$")


@dataclass(frozen=True)
class Budget:
    """How many disruptive actions may run at once: a count, or a share of live nodes."""

    count: int = DEFAULT_BUDGET
    percent: int = 0  # when > 0, the budget is ceil(percent% of live nodes), at least 1

    def slots(self, live_nodes: int) -> int:
        if self.percent <= 0:
            return self.count
        return max(1, math.ceil(live_nodes * self.percent / 100))

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent > 0 else str(self.count)


@dataclass(frozen=True)
class FleetConfig:
    """The ``[fleet]`` table; ``enabled`` is False when the file has none."""

    enabled: bool = False
    endpoints: tuple[str, ...] = ()
    prefix: str = DEFAULT_PREFIX
    node: str = ""
    budget: Budget = field(default_factory=Budget)
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD
    breaker_window: float = DEFAULT_BREAKER_WINDOW
    lease_ttl: float = DEFAULT_LEASE_TTL
    slot_wait: float = DEFAULT_SLOT_WAIT
    timeout: float = DEFAULT_TIMEOUT
    gated: frozenset[str] = frozenset(DEFAULT_GATED)
    fail_open: frozenset[str] = frozenset()
    fix_failures: int = DEFAULT_FIX_FAILURES
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str = ""
    password_file: Path | None = None

    @property
    def node_name(self) -> str:
        """This node's name: ``node``, or the host name."""
        return self.node or socket.gethostname()

    def fail_closed(self, action: str) -> bool:
        """True when ``action`` is denied while etcd cannot be reached (the default)."""
        return action not in self.fail_open


def _names(r: Reader, t: Mapping[str, Any], key: str, default: tuple[str, ...]) -> frozenset[str]:
    if key not in t:
        return frozenset(default)
    value = t[key]
    k = join_key("fleet", key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.problem(k, f"expected a list of action names, got {typename(value)}")
        return frozenset(default)
    bad = [v for v in value if not ACTION_RE.fullmatch(v)]
    if bad:
        r.problem(k, f"{bad[0]!r} is not an action name (lower-case letters, digits, _ and -)")
        return frozenset(default)
    return frozenset(value)


def _file(r: Reader, t: Mapping[str, Any], key: str, base: Path) -> Path | None:
    raw = r.string(t, "fleet", key, "")
    if not raw:
        return None
    if has_control(raw):
        r.problem(join_key("fleet", key), "cannot contain control characters")
        return None
    return resolve_key(r, base, raw, join_key("fleet", key))


def _budget(r: Reader, t: Mapping[str, Any]) -> Budget:
    if "budget" not in t:
        return Budget()
    value = t["budget"]
    if isinstance(value, str):
        m = _PERCENT_RE.fullmatch(value)
        if m and 1 <= int(m.group(1)) <= 100:
            return Budget(count=0, percent=int(m.group(1)))
        r.problem("fleet.budget", f'expected a count or a percentage like "10%", got {value!r}')
        return Budget()
    count = r.integer(t, "fleet", "budget", DEFAULT_BUDGET, 1, 100_000)
    return Budget(count=count or DEFAULT_BUDGET)


def parse_fleet(r: Reader, raw: Any, base: Path) -> FleetConfig:
    """Parse the ``[fleet]`` table (``raw`` is None when the file has none)."""
    if raw is None:
        return FleetConfig()
    t = r.table(raw, "fleet")
    if t is None:
        return FleetConfig()
    r.unknown(t, "fleet", _KEYS)
    endpoints: list[str] = []
    value = t.get("endpoints")
    if value is None:
        r.problem("fleet.endpoints", 'required: etcd client URLs, e.g. ["http://127.0.0.1:2379"]')
    elif not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        r.problem("fleet.endpoints", "expected a non-empty list of URL strings")
    else:
        for url in value:
            parts = urlsplit(url) if not has_control(url) else None
            ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
            if ok and parts is not None:
                try:
                    _ = parts.port  # raises on a port that is not a number 0-65535
                except ValueError:
                    ok = False
            if not ok or (parts is not None and (parts.username or parts.password)):
                r.problem(
                    "fleet.endpoints",
                    f"{url!r} is not an etcd client URL like http://127.0.0.1:2379 "
                    "(no credentials in it: use username and password_file)",
                )
            else:
                endpoints.append(url.rstrip("/"))
    prefix = r.string(t, "fleet", "prefix", DEFAULT_PREFIX) or DEFAULT_PREFIX
    if not _PREFIX_RE.fullmatch(prefix) or "//" in prefix:
        r.problem(
            "fleet.prefix",
            f'expected a key prefix like "/razar/" (starts and ends with /), got {prefix!r}',
        )
        prefix = DEFAULT_PREFIX
    node = r.string(t, "fleet", "node", "") or ""
    if node and not NODE_RE.fullmatch(node):
        r.problem("fleet.node", f"{node!r} is not a node name (letters, digits, _ . -)")
        node = ""
    budget = _budget(r, t)
    threshold = r.integer(t, "fleet", "breaker_threshold", DEFAULT_BREAKER_THRESHOLD, 1, 100_000)
    window = r.number(t, "fleet", "breaker_window", DEFAULT_BREAKER_WINDOW, 1.0, 30 * 86400.0)
    ttl = r.number(t, "fleet", "lease_ttl", DEFAULT_LEASE_TTL, 2.0, 3600.0)
    slot_wait = r.number(t, "fleet", "slot_wait", DEFAULT_SLOT_WAIT, 0.0, 86400.0)
    timeout = r.number(t, "fleet", "timeout", DEFAULT_TIMEOUT, 0.0, 300.0, lo_open=True)
    gated = _names(r, t, "gated", DEFAULT_GATED)
    fail_open = _names(r, t, "fail_open", ())
    fix_failures = r.integer(t, "fleet", "fix_failures", DEFAULT_FIX_FAILURES, 1, 100_000)
    ca = _file(r, t, "ca_file", base)
    cert = _file(r, t, "cert_file", base)
    key = _file(r, t, "key_file", base)
    if (cert is None) != (key is None):
        r.problem("fleet.cert_file", "cert_file and key_file go together")
    if (ca or cert) and endpoints and not all(e.startswith("https://") for e in endpoints):
        r.problem("fleet.endpoints", "TLS files are set: every endpoint must be https://")
    username = r.string(t, "fleet", "username", "") or ""
    if has_control(username) or ":" in username:
        r.problem("fleet.username", "cannot contain control characters or ':'")
        username = ""
    password_file = _file(r, t, "password_file", base)
    if bool(username) != (password_file is not None):
        r.problem("fleet.password_file", "username and password_file go together")
    return FleetConfig(
        enabled=True,
        endpoints=tuple(endpoints),
        prefix=prefix,
        node=node,
        budget=budget,
        breaker_threshold=threshold or DEFAULT_BREAKER_THRESHOLD,
        breaker_window=window,
        lease_ttl=ttl,
        slot_wait=slot_wait,
        timeout=timeout,
        gated=gated,
        fail_open=fail_open,
        fix_failures=fix_failures or DEFAULT_FIX_FAILURES,
        ca_file=ca,
        cert_file=cert,
        key_file=key,
        username=username,
        password_file=password_file,
    )

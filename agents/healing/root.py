"""The root layer's healer: bring one network link back (carrier, address, reachability).

It climbs a short ladder and stops at the first rung after which the link is
healthy again, re-checking after each one:

1. *confirm*: the link has carrier, a global address and (when a target is
   set) the target answers a ping: healed, nothing changed;
2. *renew*: ask the link's network manager to configure it again
   (``networkctl reconfigure``, ``nmcli device reapply``); skipped with none;
3. *bounce*: ``ip link set dev IF down`` then ``up``: this brings back a link
   an administrator (or a test) set down;
4. *restart*: restart the network manager's service (systemd-networkd or
   NetworkManager); skipped with none.

Settings (environment)::

    RAZAR_ROOT_INTERFACE            the link to heal (required)
    RAZAR_ROOT_TARGET               address or host to ping (optional)
    RAZAR_ROOT_NETNS                network namespace every ip/ping/networkctl/nmcli runs in
    RAZAR_ROOT_NETWORK_MANAGER      auto | networkd | networkmanager | none (auto)
    RAZAR_ROOT_MAX_RESETS_PER_HOUR  runs that may change anything per hour (6)
    RAZAR_ROOT_PING_COUNT           pings per reachability check (2)
    RAZAR_ROOT_PING_TIMEOUT         seconds to wait for each reply (1)
    RAZAR_ROOT_SETTLE               seconds to wait for the link after a step (5)

Only the configured link is ever touched; commands run from an argv list,
never through a shell, each with a timeout. A dry run does the read-only
checks and reports the steps it would take in the plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from agents.healing.base import (
    HealContext,
    HealerError,
    HealResult,
    Outcome,
    RateLimit,
    Step,
    main,
)

HEALER: Final = "root_restore_network"
LAYER: Final = "root"

Manager = Literal["networkd", "networkmanager", "none"]
MANAGERS: Final = ("auto", "networkd", "networkmanager", "none")
SERVICES: Final[dict[str, str]] = {
    "networkd": "systemd-networkd.service",
    "networkmanager": "NetworkManager.service",
}

_DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_IP_TIMEOUT: Final = 10.0  # seconds for one `ip` command
_MANAGER_TIMEOUT: Final = 30.0  # networkctl / nmcli
_RESTART_TIMEOUT: Final = 90.0  # systemctl restart of the network service
_POLL: Final = 0.2  # seconds between checks while a link settles
_HOUR: Final = 3600.0
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


# ---------------------------------------------------------------- settings


def _check_name(variable: str, value: str, *, max_len: int) -> str:
    """A link or namespace name as the kernel and ``ip`` accept it, or a HealerError."""
    if (
        len(value) > max_len
        or value in (".", "..")
        or value.startswith("-")
        or any(c in value for c in "/:\0")
        or any(c.isspace() for c in value)
    ):
        raise HealerError(f"{variable}: not a valid name: {value!r}")
    return value


def _check_target(value: str) -> str:
    """An IP address or a host name for ping; never something ping would read as an option."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise HealerError(f"RAZAR_ROOT_TARGET: not an address or host name: {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The healer's settings, read from the environment (see the module docstring)."""

    interface: str
    target: str | None = None
    netns: str | None = None
    manager: str = "auto"
    max_resets: int = 6
    ping_count: int = 2
    ping_timeout: float = 1.0
    settle: float = 5.0

    @classmethod
    def from_ctx(cls, ctx: HealContext) -> Settings:
        """Read and check every setting; a wrong one is a HealerError naming its variable."""
        interface = ctx.get("RAZAR_ROOT_INTERFACE")
        if interface:
            _check_name("RAZAR_ROOT_INTERFACE", interface, max_len=15)
        target = ctx.get("RAZAR_ROOT_TARGET") or None
        netns = ctx.get("RAZAR_ROOT_NETNS") or None
        if netns:
            _check_name("RAZAR_ROOT_NETNS", netns, max_len=255)
        manager = ctx.get("RAZAR_ROOT_NETWORK_MANAGER", "auto").lower()
        if manager not in MANAGERS:
            raise HealerError(
                f"RAZAR_ROOT_NETWORK_MANAGER: must be one of {', '.join(MANAGERS)}, got {manager!r}"
            )
        return cls(
            interface=interface,
            target=_check_target(target) if target else None,
            netns=netns,
            manager=manager,
            max_resets=ctx.integer("RAZAR_ROOT_MAX_RESETS_PER_HOUR", 6, minimum=0),
            ping_count=ctx.integer("RAZAR_ROOT_PING_COUNT", 2, minimum=1),
            ping_timeout=ctx.number("RAZAR_ROOT_PING_TIMEOUT", 1.0, minimum=0.001),
            settle=ctx.number("RAZAR_ROOT_SETTLE", 5.0, minimum=0.0),
        )


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Ran:
    """What one command did: exit status (127 not found, 124 timed out) and its output."""

    argv: tuple[str, ...]
    rc: int
    out: str = ""
    err: str = ""

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def describe(self) -> str:
        """``ip link set dev x up: ok`` or ``...: exit 2: <first line of stderr>``."""
        what = " ".join(self.argv)
        if self.ok:
            return f"{what}: ok"
        first = (self.err.strip() or self.out.strip()).splitlines()
        tail = f": {first[0][:200]}" if first else ""
        if self.rc == 124:
            return f"{what}: timed out{tail}"
        if self.rc == 127:
            return f"{what}: not found{tail}"
        return f"{what}: exit {self.rc}{tail}"


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``netns``: ``ip -n NS ...`` for ip, ``ip netns exec NS ...`` else."""
    if not netns:
        return list(argv)
    if argv[0] == "ip":
        return ["ip", "-n", netns, *argv[1:]]
    return ["ip", "netns", "exec", netns, *argv]


class Runner:
    """Runs commands (argv, no shell), each within a time limit, in the configured namespace."""

    def __init__(self, netns: str | None, env: dict[str, str]) -> None:
        self.netns = netns
        self.env = env
        self.path = env.get("PATH") or _DEFAULT_PATH

    def which(self, program: str) -> str | None:
        return shutil.which(program, path=self.path)

    async def __call__(self, argv: Sequence[str], limit: float, *, netns: bool = True) -> Ran:
        """Run ``argv`` (inside the namespace unless ``netns`` is False); never raises."""
        full = in_netns(self.netns, argv) if netns else list(argv)
        shown = tuple(full)
        exe = self.which(full[0])
        if exe is None:
            return Ran(shown, 127, err=f"{full[0]} not found on PATH")
        try:
            proc = await asyncio.create_subprocess_exec(
                exe,
                *full[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
            )
        except OSError as e:
            return Ran(shown, 126, err=str(e))
        try:
            out, err = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return Ran(shown, 124, err=f"no answer within {limit:g}s")
        return Ran(
            shown,
            proc.returncode if proc.returncode is not None else 1,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
        )


# ---------------------------------------------------------------- parsing


@dataclass(frozen=True)
class LinkInfo:
    """A link's state from ``ip -j link show``: set up by an admin, has carrier, operstate."""

    admin_up: bool
    carrier: bool
    operstate: str


def parse_link(text: str) -> LinkInfo:
    """Parse ``ip -j link show dev IF``; carrier is the LOWER_UP flag."""
    data = json.loads(text)
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ValueError("no link in the output of ip -j link show")
    link = data[0]
    flags = [str(f) for f in link.get("flags", [])]
    return LinkInfo(
        admin_up="UP" in flags,
        carrier="UP" in flags and "LOWER_UP" in flags,
        operstate=str(link.get("operstate", "UNKNOWN")),
    )


def parse_addresses(text: str) -> list[str]:
    """Global-scope addresses (``10.0.0.1/24``) from ``ip -j addr show dev IF``.

    Link-local, host-scope and addresses whose duplicate detection failed do
    not count: they do not make the link usable for the node's traffic.
    """
    data = json.loads(text)
    found: list[str] = []
    for link in data if isinstance(data, list) else []:
        if not isinstance(link, dict):
            continue
        for a in link.get("addr_info", []):
            if not isinstance(a, dict) or a.get("scope") != "global" or a.get("dadfailed"):
                continue
            if "local" in a:
                found.append(f"{a['local']}/{a.get('prefixlen', '')}".rstrip("/"))
    return found


def networkd_manages(text: str, interface: str) -> bool:
    """From ``networkctl list --no-legend IF``: is the link's SETUP anything but unmanaged?"""
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 5 and cols[1] == interface:
            return cols[4] not in ("unmanaged", "n/a")
    return False


def nm_manages(text: str, interface: str) -> bool:
    """From ``nmcli -t -f DEVICE,STATE device status``: is the device anything but unmanaged?"""
    for line in text.splitlines():
        device, sep, state = line.rpartition(":")
        if sep and device.replace("\\:", ":") == interface:
            return state.strip() not in ("unmanaged", "unavailable")
    return False


# ---------------------------------------------------------------- checks


@dataclass
class Check:
    """One look at the link: what ``confirm`` and every re-check find."""

    interface: str
    exists: bool = True
    admin_up: bool = False
    carrier: bool = False
    operstate: str = "UNKNOWN"
    addresses: list[str] = field(default_factory=list)
    target: str | None = None
    reachable: bool | None = None  # None: not checked (no target, or no carrier/address)
    error: str = ""

    @property
    def healthy(self) -> bool:
        return (
            self.exists
            and self.carrier
            and bool(self.addresses)
            and (self.target is None or self.reachable is True)
        )

    def describe(self) -> str:
        """``link up, address 10.0.0.1/24, target 10.0.0.2 unreachable``."""
        if self.error:
            return self.error
        if not self.admin_up:
            link = "link down (admin down)"
        elif not self.carrier:
            link = f"link up, no carrier (operstate {self.operstate})"
        else:
            link = "link up"
        if not self.addresses:
            addr = "no global address"
        elif len(self.addresses) == 1:
            addr = f"address {self.addresses[0]}"
        else:
            addr = f"addresses {', '.join(self.addresses)}"
        parts = [link, addr]
        if self.target is not None:
            state = {True: "reachable", False: "unreachable", None: "not checked"}
            parts.append(f"target {self.target} {state[self.reachable]}")
        return ", ".join(parts)


class LinkNotFound(Exception):
    """The link (or the namespace it should be in) does not exist: not applicable here."""


async def look(run: Runner, s: Settings, *, ping: bool = True) -> Check:
    """Carrier, addresses and (with ``ping``) reachability of the link, read-only."""
    check = Check(s.interface, target=s.target)
    link = await run(["ip", "-j", "link", "show", "dev", s.interface], _IP_TIMEOUT)
    if not link.ok:
        err = link.err.strip()
        if "does not exist" in err or "Cannot find device" in err:
            raise LinkNotFound(f"no such link {s.interface}")
        if "network namespace" in err and s.netns:
            raise LinkNotFound(f"no such network namespace {s.netns} (RAZAR_ROOT_NETNS)")
        check.exists = False
        check.error = f"cannot read the link: {link.describe()}"
        return check
    try:
        info = parse_link(link.out)
    except ValueError as e:
        check.error = f"cannot read the link: {e}"
        return check
    check.admin_up, check.carrier, check.operstate = info.admin_up, info.carrier, info.operstate
    addr = await run(["ip", "-j", "addr", "show", "dev", s.interface], _IP_TIMEOUT)
    if addr.ok:
        try:
            check.addresses = parse_addresses(addr.out)
        except ValueError:
            check.addresses = []
    if ping and s.target is not None and check.carrier and check.addresses:
        check.reachable = await reachable(run, s)
    return check


async def reachable(run: Runner, s: Settings) -> bool:
    """Does the target answer ``ping -c N -W T -I IF TARGET``?"""
    argv = ["ping", "-n", "-q", "-c", str(s.ping_count), "-W", f"{s.ping_timeout:g}"]
    argv += ["-I", s.interface, "--", str(s.target)]
    limit = s.ping_count * (1.0 + s.ping_timeout) + 5.0
    return (await run(argv, limit)).ok


async def settle(run: Runner, s: Settings) -> Check:
    """Re-check after a step, polling for up to RAZAR_ROOT_SETTLE seconds until healthy."""
    deadline = time.monotonic() + s.settle
    while True:
        check = await look(run, s)
        if check.healthy or time.monotonic() >= deadline:
            return check
        await asyncio.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))


async def detect_manager(run: Runner, s: Settings) -> Manager:
    """The manager configured, or (auto) the one that manages the link: networkd, NM or none."""
    if s.manager != "auto":
        return s.manager  # type: ignore[return-value]
    if run.which("networkctl"):
        ran = await run(
            ["networkctl", "list", "--no-pager", "--no-legend", s.interface], _MANAGER_TIMEOUT
        )
        if ran.ok and networkd_manages(ran.out, s.interface):
            return "networkd"
    if run.which("nmcli"):
        ran = await run(["nmcli", "-t", "-f", "RUNNING", "general"], _MANAGER_TIMEOUT)
        if ran.ok and ran.out.strip() == "running":
            ran = await run(
                ["nmcli", "-t", "-f", "DEVICE,STATE", "device", "status"], _MANAGER_TIMEOUT
            )
            if ran.ok and nm_manages(ran.out, s.interface):
                return "networkmanager"
    return "none"


# ---------------------------------------------------------------- the ladder


def renew_commands(manager: Manager, interface: str) -> list[list[str]]:
    """What ``renew`` tries, in order, until one succeeds (empty: the step is skipped)."""
    if manager == "networkd":
        return [["networkctl", "reconfigure", interface], ["networkctl", "renew", interface]]
    if manager == "networkmanager":
        return [
            ["nmcli", "device", "reapply", interface],
            ["nmcli", "device", "connect", interface],
        ]
    return []


def plan_steps(manager: Manager, s: Settings) -> list[str]:
    """The changing steps a run would take after a failed confirm, as the dry-run plan says."""
    plan: list[str] = []
    renew = renew_commands(manager, s.interface)
    if renew:
        alternatives = " || ".join(" ".join(in_netns(s.netns, c)) for c in renew)
        plan.append(f"renew: {alternatives}")
    down = " ".join(in_netns(s.netns, ["ip", "link", "set", "dev", s.interface, "down"]))
    up = " ".join(in_netns(s.netns, ["ip", "link", "set", "dev", s.interface, "up"]))
    plan.append(f"bounce: {down}; {up}")
    if manager in SERVICES:
        plan.append(f"restart: systemctl restart {SERVICES[manager]}")
    return plan


def _skipped(manager: Manager) -> str:
    return f"skipped: no network manager (RAZAR_ROOT_NETWORK_MANAGER resolved to {manager})"


async def _renew(run: Runner, manager: Manager, s: Settings) -> Step:
    tried: list[str] = []
    for argv in renew_commands(manager, s.interface):
        ran = await run(argv, _MANAGER_TIMEOUT)
        tried.append(ran.describe())
        if ran.ok:
            return Step("renew", True, "; ".join(tried), changed=True)
    return Step("renew", False, "; ".join(tried), changed=True)


async def _bounce(run: Runner, s: Settings) -> Step:
    down = await run(["ip", "link", "set", "dev", s.interface, "down"], _IP_TIMEOUT)
    # up even when down failed: the step must never leave the link down
    up = await run(["ip", "link", "set", "dev", s.interface, "up"], _IP_TIMEOUT)
    return Step("bounce", down.ok and up.ok, f"{down.describe()}; {up.describe()}", changed=True)


async def _restart(run: Runner, manager: Manager) -> Step:
    ran = await run(["systemctl", "restart", SERVICES[manager]], _RESTART_TIMEOUT, netns=False)
    return Step("restart", ran.ok, ran.describe(), changed=True)


def _subprocess_env(ctx: HealContext) -> dict[str, str]:
    env = dict(ctx.env) if ctx.env else dict(os.environ)
    env.setdefault("PATH", _DEFAULT_PATH)
    env["LC_ALL"] = "C"  # parse the tools' words, not a translation
    return env


def _details(s: Settings, manager: str, check: Check | None, rate: RateLimit) -> dict[str, Any]:
    return {
        "interface": s.interface,
        "netns": s.netns,
        "manager": manager,
        "carrier": check.carrier if check else None,
        "operstate": check.operstate if check else None,
        "addresses": check.addresses if check else [],
        "target": s.target,
        "reachable": check.reachable if check else None,
        "rate_limit": rate.describe(),
    }


async def heal(ctx: HealContext) -> HealResult:
    """Confirm the link, then renew / bounce / restart until it is healthy again."""
    s = Settings.from_ctx(ctx)
    dry = ctx.dry_run

    def result(outcome: Outcome, reason: str, **kw: Any) -> HealResult:
        return HealResult(HEALER, LAYER, outcome, reason, dry_run=dry, **kw)

    if not s.interface:
        return result("not_applicable", "no interface configured (RAZAR_ROOT_INTERFACE)")
    rate = RateLimit(ctx.healer_state(HEALER) / "resets.json", s.max_resets, _HOUR)
    if ctx.restore:
        step = Step("restore", True, "nothing to undo: this healer leaves no runtime settings")
        return result(
            "healed",
            "restore: nothing to undo",
            steps=[step],
            details=_details(s, s.manager, None, rate),
        )
    run = Runner(s.netns, _subprocess_env(ctx))
    if run.which("ip") is None:
        raise HealerError("ip (iproute2) not found on PATH")
    try:
        check = await look(run, s)
    except LinkNotFound as e:
        return result("not_applicable", str(e), details=_details(s, s.manager, None, rate))
    manager = await detect_manager(run, s)
    steps = [Step("confirm", check.healthy, check.describe())]

    def details() -> dict[str, Any]:
        return _details(s, manager, check, rate)

    if check.healthy:
        return result(
            "healed", check.describe(), steps=steps, healed_by="confirm", details=details()
        )
    if dry:
        plan = plan_steps(manager, s)
        reason = (
            f"dry run: {check.describe()}; would run {', '.join(p.split(':')[0] for p in plan)}"
        )
        if rate.used() >= s.max_resets:
            reason += f" (now {_limited(rate)})"
        return result("not_healed", reason, steps=steps, plan=plan, details=details())

    ladder = ["renew", "bounce", "restart"]
    took_slot = False
    for name in ladder:
        if name == "renew" and not renew_commands(manager, s.interface):
            steps.append(Step("renew", True, _skipped(manager)))
            continue
        if name == "restart" and manager not in SERVICES:
            steps.append(Step("restart", True, _skipped(manager)))
            continue
        if not took_slot:
            if not rate.take():
                reason = f"{_limited(rate)}; {check.describe()}"
                steps.append(Step("rate_limit", False, _limited(rate)))
                return result("not_healed", reason, steps=steps, details=details())
            took_slot = True
            steps.append(Step("rate_limit", True, f"took a slot: {rate.describe()}"))
        try:
            if name == "renew":
                steps.append(await _renew(run, manager, s))
            elif name == "bounce":
                steps.append(await _bounce(run, s))
            else:
                steps.append(await _restart(run, manager))
            check = await settle(run, s)
        except LinkNotFound as e:  # the link went away under us
            steps.append(Step("check", False, str(e)))
            return result("not_healed", f"{e} after {name}", steps=steps, details=details())
        steps.append(Step("check", check.healthy, check.describe()))
        if check.healthy:
            return result(
                "healed",
                f"{name}: {check.describe()}",
                steps=steps,
                healed_by=name,
                details=details(),
            )
    return result("not_healed", check.describe(), steps=steps, details=details())


def _limited(rate: RateLimit) -> str:
    return f"rate limited: {rate.used()}/{rate.limit} resets in the last {rate.period / _HOUR:g}h"


def run(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """The healer as an executable (``python -m agents.healing.root [--dry-run]``)."""
    return main(
        HEALER,
        LAYER,
        heal,
        argv,
        env,
        description="Bring the root layer's network link back: confirm, renew, bounce, restart.",
    )


if __name__ == "__main__":
    raise SystemExit(run())

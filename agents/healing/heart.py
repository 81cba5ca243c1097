"""heart (memory) healer: under memory pressure, rein in the unit holding the most memory.

The node is under memory pressure when the kernel's memory PSI (``some
avg10``) is at or over the threshold (as the heart sensor judges it), or
when MemAvailable has fallen below a fraction of MemTotal (the only signal
on a kernel without PSI). Then the
candidate unit holding the most memory is found and, by ``RAZAR_MEMORY_ACTION``:

- ``memory_high`` (default): its ``MemoryHigh`` is set at runtime to
  ``RAZAR_MEMORY_HIGH_RATIO`` of what it holds now, so the kernel reclaims from
  it (and throttles it) before anything is OOM-killed. The value it had is saved
  and put back once the pressure is gone, or with ``RAZAR_HEAL_MODE=restore``.
  A unit already limited here is not lowered again on the next run.
- ``restart``: the unit is restarted through systemd and must be active again
  within ``RAZAR_MEMORY_RESTART_TIMEOUT`` seconds.

The configured action is tried first, then the other. An action is "not
applicable here" (said in the steps, with the reason) when the host cannot
carry it out: ``MemoryHigh`` needs the cgroup v2 memory controller for the
unit's group, which a cgroup v1 or hybrid host does not have. An action in
``RAZAR_HEAL_SKIP`` (razard saw it not hold in this outage) is not tried again.

Settings (environment):

    RAZAR_MEMORY_PRESSURE_FILE        PSI file (default /proc/pressure/memory)
    RAZAR_MEMORY_PRESSURE_THRESHOLD   some avg10 percentage at or over which to act (default 20)
    RAZAR_MEMINFO_FILE                meminfo file (default /proc/meminfo)
    RAZAR_MEMORY_MIN_AVAILABLE_RATIO  MemAvailable/MemTotal below which to act (default 0.05)
    RAZAR_MEMORY_ACTION               memory_high | restart (default memory_high)
    RAZAR_MEMORY_HIGH_RATIO           MemoryHigh as a fraction of the unit's memory (default 0.9)
    RAZAR_MEMORY_RESTART_TIMEOUT      seconds for a restarted unit to be active (default 90)
    RAZAR_MEMORY_UNITS                comma list of candidate units (default: the components in
                                      RAZAR_CONFIG when set, else every active service)
    RAZAR_MEMORY_PROTECT              comma list of units never touched (razard.service always is)
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from agents.healing.base import HealContext, HealerError, HealResult, Step, main
from agents.healing.units import (
    NOT_SET,
    SavedValues,
    candidate_units,
    controller_support,
    describe_bytes,
    describe_value,
    read_pressure_setting,
    restore_property,
    run_property_healer,
    skipped,
    unit_interface,
    usage_of,
)
from agents.pressure import MEMINFO, MEMORY_PRESSURE, PressureError, memory_available
from razard.errors import SystemdError
from razard.systemd import SERVICE_IFACE, Systemd

HEALER: Final = "heart_memory_repair"
LAYER: Final = "heart"
PROP: Final = "MemoryHigh"
ACTIONS: Final = ("memory_high", "restart")


def _settings(ctx: HealContext) -> dict[str, Any]:
    threshold = ctx.number("RAZAR_MEMORY_PRESSURE_THRESHOLD", 20.0)
    if threshold > 100:
        raise HealerError(f"RAZAR_MEMORY_PRESSURE_THRESHOLD: a percentage 0-100, got {threshold:g}")
    min_ratio = ctx.number("RAZAR_MEMORY_MIN_AVAILABLE_RATIO", 0.05)
    if min_ratio > 1:
        raise HealerError(f"RAZAR_MEMORY_MIN_AVAILABLE_RATIO: a fraction 0-1, got {min_ratio:g}")
    high_ratio = ctx.number("RAZAR_MEMORY_HIGH_RATIO", 0.9, minimum=0.01)
    if high_ratio > 1:
        raise HealerError(f"RAZAR_MEMORY_HIGH_RATIO: a fraction 0.01-1, got {high_ratio:g}")
    action = ctx.get("RAZAR_MEMORY_ACTION", "memory_high").lower()
    if action not in ACTIONS:
        raise HealerError(
            f'RAZAR_MEMORY_ACTION: must be "memory_high" or "restart", got {action!r}'
        )
    return {
        "threshold": threshold,
        "min_ratio": min_ratio,
        "high_ratio": high_ratio,
        "action": action,
        "restart_timeout": ctx.number("RAZAR_MEMORY_RESTART_TIMEOUT", 90.0, minimum=0.1),
    }


async def heal(ctx: HealContext) -> HealResult:
    """Limit (or restart) the biggest unit under memory pressure; lift the limit once it is gone."""
    return await run_property_healer(ctx, HEALER, LAYER, _settings(ctx), _heal)


def _check(ctx: HealContext, settings: dict[str, Any], result: HealResult) -> tuple[bool, str]:
    """Whether the node is under memory pressure, and the reading in words."""
    psi_path = ctx.get("RAZAR_MEMORY_PRESSURE_FILE", MEMORY_PRESSURE)
    psi = read_pressure_setting(ctx, "RAZAR_MEMORY_PRESSURE_FILE", MEMORY_PRESSURE)
    info_path = ctx.get("RAZAR_MEMINFO_FILE", MEMINFO)
    try:
        available, total = memory_available(info_path)
    except PressureError as e:
        raise HealerError(f"RAZAR_MEMINFO_FILE: {e}") from None
    ratio = available / total
    result.details["pressure"] = {
        "file": psi_path,
        "some_avg10": None if psi is None else psi.some.avg10,
        "threshold": settings["threshold"],
        "meminfo_file": info_path,
        "available_bytes": available,
        "total_bytes": total,
        "available_ratio": round(ratio, 4),
        "min_available_ratio": settings["min_ratio"],
    }
    if psi is None:
        words = [f"no PSI ({psi_path} missing): going by MemAvailable alone"]
        over_psi = False
    else:
        words = [
            f"memory pressure some avg10={psi.some.avg10:.2f}% "
            f"(threshold {settings['threshold']:g}%)"
        ]
        over_psi = psi.some.avg10 >= settings["threshold"]
    words.append(
        f"MemAvailable {describe_bytes(available)} of {describe_bytes(total)} "
        f"({ratio:.1%}, minimum {settings['min_ratio']:.1%})"
    )
    under = over_psi or ratio < settings["min_ratio"]
    what = "; ".join(words)
    result.steps.append(Step("check_pressure", True, what))
    return under, what


async def _heal(
    ctx: HealContext,
    sd: Systemd,
    store: SavedValues,
    settings: dict[str, Any],
    result: HealResult,
) -> None:
    if ctx.restore:
        await restore_property(ctx, sd, store, PROP, result, "restore mode")
        return
    under, what = _check(ctx, settings, result)
    if not under:
        if store.values(PROP):
            await restore_property(
                ctx, sd, store, PROP, result, f"no memory pressure any more: {what}"
            )
            return
        result.outcome, result.healed_by = "healed", "check_pressure"
        result.reason = f"no memory pressure: {what}"
        return

    candidates, protected = await candidate_units(
        ctx, sd, "RAZAR_MEMORY_UNITS", "RAZAR_MEMORY_PROTECT"
    )
    result.details["candidates"] = candidates
    result.details["protected"] = protected
    usage = await usage_of(sd, candidates, result.steps)
    ranked = sorted(usage.values(), key=lambda u: (-u.memory_bytes, u.unit))
    result.details["usage"] = [
        {"unit": u.unit, "memory_bytes": u.memory_bytes, "source": u.memory_source} for u in ranked
    ]
    result.steps.append(
        Step(
            "read_usage",
            True,
            ", ".join(f"{u.unit} {describe_bytes(u.memory_bytes)}" for u in ranked)
            or "no readable candidate unit",
        )
    )
    if not ranked or ranked[0].memory_bytes <= 0:
        result.reason = f"memory pressure ({what}), but no candidate unit holds memory"
        return
    top = ranked[0]
    result.details["unit"] = top.unit
    result.details["memory_bytes"] = top.memory_bytes
    skip = skipped(ctx)
    order = [settings["action"], *(a for a in ACTIONS if a != settings["action"])]
    not_here: list[str] = []
    for action in order:
        if action in skip:
            result.steps.append(Step(action, True, "skipped: it did not hold in this outage"))
            continue
        if action == "memory_high":
            props = await sd.properties(top.unit, unit_interface(top.unit) or SERVICE_IFACE)
            ok, why = controller_support(PROP, str(props.get("ControlGroup", "")))
            if not ok:
                result.steps.append(Step(action, True, f"not applicable here: {why}"))
                not_here.append(f"{action}: {why}")
                continue
        result.details["action"] = action
        if action == "restart":
            await _restart(ctx, sd, top.unit, settings, result, what)
        else:
            await _limit(ctx, sd, store, top.unit, top.memory_bytes, settings, result, what)
        return
    result.details["not_applicable"] = not_here
    tried = [a for a in order if a in skip]
    if not tried:
        result.outcome = "not_applicable"
    result.reason = f"memory pressure ({what}); no action left for {top.unit}: " + "; ".join(
        [*(f"{a} did not hold" for a in tried), *(f"not applicable here: {n}" for n in not_here)]
    )


async def _limit(
    ctx: HealContext,
    sd: Systemd,
    store: SavedValues,
    unit: str,
    memory: int,
    settings: dict[str, Any],
    result: HealResult,
    what: str,
) -> None:
    props = await sd.properties(unit, unit_interface(unit) or SERVICE_IFACE)
    current = int(props.get(PROP, NOT_SET))
    saved = store.get(unit, PROP)
    limit = max(int(memory * settings["high_ratio"]), 4096)
    result.details["old_memory_high"] = current if saved is None else saved.original
    if saved is not None and current == saved.applied:
        result.details["new_memory_high"] = current
        result.steps.append(
            Step("memory_high", True, f"{unit}: {PROP} is already {current} (set here earlier)")
        )
        result.outcome, result.healed_by = "healed", "memory_high"
        result.reason = (
            f"memory pressure ({what}); {unit} is already limited to "
            f"{PROP}={describe_bytes(current)}"
        )
        return
    if current != NOT_SET and current <= limit:
        result.steps.append(
            Step(
                "memory_high",
                False,
                f"{unit}: {PROP} is already {describe_bytes(current)}, not above "
                f"{describe_bytes(limit)}: nothing to lower",
            )
        )
        result.reason = (
            f"memory pressure ({what}); {unit} already has {PROP}={describe_bytes(current)} "
            "(RAZAR_MEMORY_ACTION=restart would restart it)"
        )
        return
    result.details["new_memory_high"] = limit
    change = (
        f"{unit}: {PROP} {describe_value(current)} -> {limit} "
        f"({settings['high_ratio']:g} of its {describe_bytes(memory)})"
    )
    if ctx.dry_run:
        result.plan.append(f"set {PROP}={limit} on {unit} (runtime; now {describe_value(current)})")
        result.reason = f"dry run: memory pressure ({what}); would set {PROP}={limit} on {unit}"
        return
    store.remember(unit, PROP, current, limit)  # first: a crash after the change can still undo it
    try:
        await sd.set_properties(unit, {PROP: ("t", limit)}, runtime=True)
    except SystemdError as e:
        if saved is None:
            store.forget(unit, PROP)
        result.steps.append(Step("memory_high", False, f"{unit}: {e}"))
        result.reason = f"memory pressure ({what}); could not set {PROP} on {unit}: {e}"
        return
    result.steps.append(Step("memory_high", True, change, changed=True))
    result.outcome, result.healed_by = "healed", "memory_high"
    result.reason = f"memory pressure ({what}); set {PROP}={describe_bytes(limit)} on {unit}"


async def _restart(
    ctx: HealContext,
    sd: Systemd,
    unit: str,
    settings: dict[str, Any],
    result: HealResult,
    what: str,
) -> None:
    before = await sd.status(unit)
    result.details["old_main_pid"] = before.main_pid
    if ctx.dry_run:
        result.plan.append(f"restart {unit} (main pid {before.main_pid}) and wait for it active")
        result.reason = f"dry run: memory pressure ({what}); would restart {unit}"
        return
    timeout = settings["restart_timeout"]
    await sd.reset_failed(unit)  # a unit that hit its start limit could not be restarted
    job = await sd.restart(unit, job_timeout=timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    after = await sd.status(unit)
    while after.active_state != "active" and not after.dead and loop.time() < deadline:
        await asyncio.sleep(0.1)
        after = await sd.status(unit)
    result.details["new_main_pid"] = after.main_pid
    if job != "done" or after.active_state != "active":
        result.steps.append(
            Step("restart", False, f"{unit}: restart job {job}, now {after.describe()}", True)
        )
        result.reason = (
            f"memory pressure ({what}); restarted {unit} but it is not active "
            f"within {timeout:g}s: {after.describe()}"
        )
        return
    result.steps.append(
        Step(
            "restart",
            True,
            f"{unit}: restarted (main pid {before.main_pid} -> {after.main_pid})",
            changed=True,
        )
    )
    result.outcome, result.healed_by = "healed", "restart"
    result.reason = f"memory pressure ({what}); restarted {unit}"


def run(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """The healer executable: one JSON object on stdout, exit 0/1/2."""
    return main(HEALER, LAYER, heal, argv, env, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(run())

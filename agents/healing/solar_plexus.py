"""solar_plexus (CPU) healer: under CPU pressure, lower the CPU weight of the busiest units.

When the kernel's CPU pressure (PSI ``some avg10``) is at or over the threshold,
the candidate units' CPU use is read twice, ``RAZAR_CPU_SAMPLE`` seconds
apart, and the ``RAZAR_CPU_TOP`` busiest get ``CPUWeight=RAZAR_CPU_THROTTLE_WEIGHT``
at runtime (``systemctl set-property --runtime``: gone at reboot, never written
to a unit file). The weights they had are saved first; once the pressure is
gone, or with ``RAZAR_HEAL_MODE=restore``, they are put back. A unit whose
cgroup has no cpu controller (cgroup v2 cpu, or the v1 cpu hierarchy holding
it) cannot be throttled: that is "not applicable here", with the reason; so is
a throttle that razard saw not hold in this outage (``RAZAR_HEAL_SKIP``).

Settings (environment):

    RAZAR_CPU_PRESSURE_FILE       PSI file (default /proc/pressure/cpu)
    RAZAR_CPU_PRESSURE_THRESHOLD  some avg10 percentage at or over which to act (default 40)
    RAZAR_CPU_THROTTLE_WEIGHT     CPUWeight given to the busiest units, 1-10000 (default 20)
    RAZAR_CPU_TOP                 how many units to throttle (default 1)
    RAZAR_CPU_SAMPLE              seconds between the two usage readings (default 1)
    RAZAR_CPU_UNITS               comma list of candidate units (default: the components in
                                  RAZAR_CONFIG when set, else every active service)
    RAZAR_CPU_PROTECT             comma list of units never throttled (razard.service always is)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from agents.healing.base import HealContext, HealerError, HealResult, Step, main
from agents.healing.units import (
    NOT_SET,
    SavedValues,
    candidate_units,
    controller_support,
    describe_value,
    read_pressure_setting,
    restore_property,
    run_property_healer,
    skipped,
    unit_interface,
    usage_of,
)
from agents.pressure import CPU_PRESSURE
from razard.errors import SystemdError
from razard.systemd import SERVICE_IFACE, Systemd

HEALER: Final = "solar_plexus_cpu_throttle"
LAYER: Final = "solar_plexus"
PROP: Final = "CPUWeight"
MAX_WEIGHT: Final = 10000


def _settings(ctx: HealContext) -> dict[str, Any]:
    threshold = ctx.number("RAZAR_CPU_PRESSURE_THRESHOLD", 40.0)
    if threshold > 100:
        raise HealerError(f"RAZAR_CPU_PRESSURE_THRESHOLD: a percentage 0-100, got {threshold:g}")
    weight = ctx.integer("RAZAR_CPU_THROTTLE_WEIGHT", 20, minimum=1)
    if weight > MAX_WEIGHT:
        raise HealerError(f"RAZAR_CPU_THROTTLE_WEIGHT: must be 1-{MAX_WEIGHT}, got {weight}")
    return {
        "threshold": threshold,
        "weight": weight,
        "top": ctx.integer("RAZAR_CPU_TOP", 1, minimum=1),
        "sample": ctx.number("RAZAR_CPU_SAMPLE", 1.0, minimum=0.01),
    }


async def heal(ctx: HealContext) -> HealResult:
    """Throttle the busiest units under CPU pressure; put their weights back once it is gone."""
    return await run_property_healer(ctx, HEALER, LAYER, _settings(ctx), _heal)


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

    path = ctx.get("RAZAR_CPU_PRESSURE_FILE", CPU_PRESSURE)
    pressure = read_pressure_setting(ctx, "RAZAR_CPU_PRESSURE_FILE", CPU_PRESSURE)
    if pressure is None:
        result.steps.append(Step("check_pressure", False, f"{path}: no PSI on this kernel"))
        result.outcome = "not_applicable"
        result.reason = f"CPU pressure cannot be read: {path} is missing (kernel without PSI)"
        return
    avg10, threshold = pressure.some.avg10, settings["threshold"]
    result.details["pressure"] = {"file": path, "some_avg10": avg10, "threshold": threshold}
    what = f"CPU pressure some avg10={avg10:.2f}% (threshold {threshold:g}%)"
    result.steps.append(Step("check_pressure", True, what))

    if avg10 < threshold:  # as the solar_plexus sensor judges it
        if store.values(PROP):
            await restore_property(
                ctx, sd, store, PROP, result, f"no CPU pressure any more: {what}"
            )
            return
        result.outcome, result.healed_by = "healed", "check_pressure"
        result.reason = f"no CPU pressure: {what}"
        return

    candidates, protected = await candidate_units(ctx, sd, "RAZAR_CPU_UNITS", "RAZAR_CPU_PROTECT")
    result.details["candidates"] = candidates
    result.details["protected"] = protected
    if not candidates:
        result.reason = f"{what}, but there is no candidate unit to throttle"
        return

    # two readings: CPU time is a counter, its rate is what tells the busiest unit
    first = await usage_of(sd, candidates, result.steps)
    t0 = time.monotonic()
    await asyncio.sleep(settings["sample"])
    second = await usage_of(sd, list(first), result.steps)
    elapsed = max(time.monotonic() - t0, 1e-6)
    rates = {
        u: max(second[u].cpu_seconds - first[u].cpu_seconds, 0.0) / elapsed * 100.0 for u in second
    }
    ranked = sorted(rates, key=lambda u: (-rates[u], u))
    result.details["usage"] = [
        {"unit": u, "cpu_percent": round(rates[u], 1), "source": second[u].cpu_source}
        for u in ranked
    ]
    result.steps.append(
        Step(
            "sample_usage",
            True,
            f"over {elapsed:.2f}s: "
            + (", ".join(f"{u} {rates[u]:.1f}%" for u in ranked) or "no readable unit"),
        )
    )
    busiest = [u for u in ranked if rates[u] > 0][: settings["top"]]
    if not busiest:
        result.reason = f"{what}, but none of the candidate units is using CPU"
        return

    if "throttle" in skipped(ctx):
        result.steps.append(Step("throttle", True, "skipped: it did not hold in this outage"))
        result.outcome = "not_applicable"
        result.reason = (
            f"{what}; throttling did not hold in this outage and there is no other action"
        )
        return
    weight = settings["weight"]
    throttled: list[dict[str, Any]] = []
    failed: list[str] = []
    not_here: list[str] = []
    for unit in busiest:
        props = await sd.properties(unit, unit_interface(unit) or SERVICE_IFACE)
        ok, why = controller_support(PROP, str(props.get("ControlGroup", "")))
        if not ok:
            result.steps.append(Step("throttle", True, f"{unit}: not applicable here: {why}"))
            not_here.append(f"{unit}: {why}")
            continue
        current = int(props.get(PROP, NOT_SET))
        saved = store.get(unit, PROP)
        entry = {
            "unit": unit,
            "cpu_percent": round(rates[unit], 1),
            "old_weight": current if saved is None else saved.original,
            "new_weight": weight,
        }
        if ctx.dry_run:
            result.plan.append(
                f"set {PROP}={weight} on {unit} (runtime; now {describe_value(current)}, "
                f"using {rates[unit]:.1f}% of a CPU)"
            )
            throttled.append(entry)
            continue
        if saved is not None and current == weight:
            result.steps.append(
                Step("throttle", True, f"{unit}: {PROP} is already {weight} (set here earlier)")
            )
            throttled.append(entry)
            continue
        # saved before the change: a crash right after it still knows what to put back
        store.remember(unit, PROP, current, weight)
        try:
            await sd.set_properties(unit, {PROP: ("t", weight)}, runtime=True)
        except SystemdError as e:
            if saved is None:
                store.forget(unit, PROP)
            result.steps.append(Step("throttle", False, f"{unit}: {e}"))
            failed.append(unit)
            continue
        result.steps.append(
            Step(
                "throttle",
                True,
                f"{unit}: {PROP} {describe_value(current)} -> {weight} "
                f"(using {rates[unit]:.1f}% of a CPU)",
                changed=True,
            )
        )
        throttled.append(entry)
    result.details["throttled"] = throttled
    if not_here and not throttled and not failed:
        result.outcome = "not_applicable"
        result.reason = f"{what}; not applicable here: {'; '.join(not_here)}"
        return
    if failed:
        result.reason = f"{what}; could not throttle {', '.join(failed)}"
        return
    names = ", ".join(f"{t['unit']} ({t['cpu_percent']:.1f}%)" for t in throttled)
    if ctx.dry_run:  # not healed yet: the plan says what a real run would do
        result.reason = f"dry run: {what}; would set {PROP}={weight} on {names}"
        return
    result.outcome, result.healed_by = "healed", "throttle"
    result.reason = f"{what}; set {PROP}={weight} on {names}"


def run(argv: list[str] | None = None, env: dict[str, str] | None = None) -> int:
    """The healer executable: one JSON object on stdout, exit 0/1/2."""
    return main(HEALER, LAYER, heal, argv, env, description=__doc__)


if __name__ == "__main__":
    raise SystemExit(run())

"""throat, third_eye and crown healers: restart a whole layer, in priority order, probe by probe.

The upper layers (APIs, inference, orchestration) have no node resource to
repair: what heals them is a clean restart of every component of the layer,
lowest priority number first, each one healthy again before the next starts
(its probe passes within its ``start_timeout``; a component without a probe
must be active). The first component that does not come back stops the run:
the result is "not healed" and names it, and the components after it are not
touched.

One module, three healers, each with its own entry point:

- ``throat_api_stabilize`` (`run_throat`): restart the throat layer;
- ``third_eye_inference_flush`` (`run_third_eye`): first send
  ``RAZAR_FLUSH_SIGNAL`` to the main process of each inference unit and wait
  ``RAZAR_FLUSH_GRACE`` seconds so it can drop its queues, then restart;
- ``crown_full_restart`` (`run_crown`): restart the crown layer.

``python -m agents.healing.restart LAYER [--dry-run]`` runs the one for LAYER.
The components come from razard's config (``RAZAR_CONFIG``, required: without
it, or without components in the layer, the healer is not applicable).
``RAZAR_UNIT``/``RAZAR_COMPONENT`` name the component that failed; they are
reported, but the whole layer is restarted: that is a layer healer's job.

Settings (environment, third_eye only):

    RAZAR_FLUSH_SIGNAL   signal name or number sent before the restart (default SIGUSR1)
    RAZAR_FLUSH_GRACE    seconds to wait after it (default 5)

Every layer (its "all healthy" is checked again): RAZAR_RESTART_SETTLE, seconds
after the last restart at which each unit must still be up as the same process
(default 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Final

from agents.healing.base import HealContext, HealerError, HealResult, Step, main
from agents.healing.units import connect, layer_components
from razard.config import ComponentConfig, ProbeConfig
from razard.errors import SystemdError
from razard.probes import Prober
from razard.systemd import Systemd

#: The layers this module heals, and the healer of each.
HEALERS: Final = {
    "throat": "throat_api_stabilize",
    "third_eye": "third_eye_inference_flush",
    "crown": "crown_full_restart",
}
FLUSH_LAYER: Final = "third_eye"
DEFAULT_FLUSH_SIGNAL: Final = "SIGUSR1"
DEFAULT_FLUSH_GRACE: Final = 5.0
_POLL: Final = 0.2  # seconds between health checks of a restarted unit
#: Seconds after the last restart at which every restarted unit is looked at again.
DEFAULT_RESTART_SETTLE: Final = 1.0


def flush_signal(ctx: HealContext) -> signal.Signals:
    """``RAZAR_FLUSH_SIGNAL`` as a signal: a name (``SIGUSR1``, ``usr1``) or a number (``10``).

    Raises `HealerError` naming the variable when it is neither.
    """
    raw = ctx.get("RAZAR_FLUSH_SIGNAL", DEFAULT_FLUSH_SIGNAL)
    try:
        if raw.isdigit():
            return signal.Signals(int(raw))
        name = raw.upper()
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise HealerError(
            f"RAZAR_FLUSH_SIGNAL: {raw!r} is not a signal name or number (e.g. SIGUSR1 or 10)"
        ) from None


def _describe_probe(probe: ProbeConfig | None) -> str:
    if probe is None:
        return "no probe: until the unit is active"
    target = {
        "http": probe.url,
        "tcp": f"{probe.host}:{probe.port}",
        "exec": " ".join(probe.command),
    }.get(probe.kind, "")
    return f"until its {probe.kind} probe {target} passes"


async def heal_layer(ctx: HealContext, layer: str) -> HealResult:
    """Restart ``layer``'s components in priority order (third_eye: flush them first)."""
    if layer not in HEALERS:
        raise HealerError(f"no restart healer for layer {layer!r}; one of {', '.join(HEALERS)}")
    healer = HEALERS[layer]
    result = HealResult(healer, layer, "not_healed", "", dry_run=ctx.dry_run)
    flushing = layer == FLUSH_LAYER
    signum = flush_signal(ctx) if flushing else None
    grace = ctx.number("RAZAR_FLUSH_GRACE", DEFAULT_FLUSH_GRACE) if flushing else 0.0
    if ctx.component or ctx.unit:
        result.details["trigger"] = {"component": ctx.component, "unit": ctx.unit}

    config = ctx.get("RAZAR_CONFIG")
    if not config:
        result.outcome = "not_applicable"
        result.reason = f"RAZAR_CONFIG is not set: no {layer} components known to restart"
        return result
    comps = layer_components(ctx, layer) or []
    result.details["config"] = config
    if not comps:
        result.outcome = "not_applicable"
        result.reason = f"no components in the {layer} layer in {config}"
        return result
    result.details["order"] = [{"component": c.name, "unit": c.unit} for c in comps]
    result.steps.append(
        Step(
            "read_config",
            True,
            f"{len(comps)} {layer} components: "
            + ", ".join(f"{c.name} ({c.unit}, priority {c.priority})" for c in comps),
        )
    )
    if signum is not None:
        result.details["flush"] = {"signal": signum.name, "grace": grace, "signalled": []}

    if ctx.dry_run:
        if signum is not None:
            result.plan += [f"send {signum.name} to the main process of {c.unit}" for c in comps]
            result.plan.append(f"wait {grace:g}s for them to drop their queues")
        result.plan += [
            f"restart {c.unit} ({c.name}) and wait up to {c.start_timeout:g}s, "
            f"{_describe_probe(c.probe)}"
            for c in comps
        ]
        result.reason = f"dry run: would restart {', '.join(c.name for c in comps)} in this order"
        return result

    sd = await connect(ctx)
    try:
        if signum is not None:
            await _flush(sd, comps, signum, grace, result)
        await _restart_all(ctx, sd, comps, result)
    except SystemdError as e:
        result.outcome, result.reason = "not_healed", f"systemd: {e}"
    finally:
        await sd.close()
    return result


async def _flush(
    sd: Systemd,
    comps: Sequence[ComponentConfig],
    signum: signal.Signals,
    grace: float,
    result: HealResult,
) -> None:
    signalled: list[str] = result.details["flush"]["signalled"]
    for c in comps:
        try:
            st = await sd.status(c.unit)
            if not st.main_pid:
                result.steps.append(
                    Step("flush", True, f"{c.unit}: no main process ({st.describe()}); no signal")
                )
                continue
            await sd.kill(c.unit, int(signum), who="main")
        except SystemdError as e:  # the restart that follows is the cure; go on to it
            result.steps.append(Step("flush", False, f"{c.unit}: cannot send {signum.name}: {e}"))
            continue
        signalled.append(c.unit)
        result.steps.append(
            Step("flush", True, f"{c.unit}: sent {signum.name} to pid {st.main_pid}", True)
        )
    if signalled and grace > 0:
        await asyncio.sleep(grace)
        result.steps.append(Step("flush_grace", True, f"waited {grace:g}s"))


async def _restart_all(
    ctx: HealContext, sd: Systemd, comps: Sequence[ComponentConfig], result: HealResult
) -> None:
    restarted: list[str] = []
    result.details["restarted"] = restarted
    async with Prober(env=ctx.env) as prober:
        for i, c in enumerate(comps):
            changed = True
            try:
                ok, detail = await _restart_one(sd, prober, c)
            except SystemdError as e:  # no such unit, or systemd refused the restart
                msg = str(e)
                detail = msg.removeprefix(f"{c.unit}: ")
                ok, changed = False, False
            result.steps.append(Step(f"restart:{c.name}", ok, f"{c.unit}: {detail}", changed))
            if not ok:
                later = [x.name for x in comps[i + 1 :]]
                result.details["failed"] = {"component": c.name, "unit": c.unit, "detail": detail}
                result.details["not_restarted"] = later
                result.reason = f"{c.name} ({c.unit}) did not come back: {detail}" + (
                    f"; not restarted: {', '.join(later)}" if later else ""
                )
                return
            restarted.append(c.name)
    # a unit that came up and died at once is not healthy: look again, a moment later
    settle = ctx.number("RAZAR_RESTART_SETTLE", DEFAULT_RESTART_SETTLE)
    pids = {c.unit: (await sd.status(c.unit)).main_pid for c in comps}
    if settle > 0:
        await asyncio.sleep(settle)
    gone = []
    for c in comps:
        st = await sd.status(c.unit)
        if st.dead:
            gone.append(f"{c.name} ({c.unit}: {st.describe()})")
        elif st.main_pid != pids[c.unit]:
            gone.append(f"{c.name} ({c.unit}: restarted, main pid {pids[c.unit]} -> {st.main_pid})")
    if gone:
        result.steps.append(
            Step("recheck", False, f"{settle:g}s after the restarts: down again: {'; '.join(gone)}")
        )
        result.reason = f"restarted {', '.join(restarted)}, but down again: {'; '.join(gone)}"
        return
    result.steps.append(
        Step(
            "restart_layer",
            True,
            f"restarted and healthy, in order: {', '.join(restarted)}; all still up "
            f"{settle:g}s later",
        )
    )
    result.outcome, result.healed_by = "healed", "restart_layer"
    result.reason = (
        f"restarted {', '.join(restarted)} in priority order; all healthy and still up "
        f"{settle:g}s later"
    )


async def _restart_one(sd: Systemd, prober: Prober, c: ComponentConfig) -> tuple[bool, str]:
    """Restart ``c``'s unit and wait until it is healthy; ``(ok, what happened)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + c.start_timeout
    await sd.reset_failed(c.unit)  # a unit that hit its start limit could not be restarted
    job = await sd.restart(c.unit, job_timeout=c.start_timeout)
    if job != "done":
        st = await sd.status(c.unit)
        return False, f"restart job {job}; now {st.describe()}"
    last = ""
    while True:
        st = await sd.status(c.unit)
        if st.dead:
            return False, f"down again after the restart: {st.describe()}"
        if c.probe is None:
            if st.active_state == "active":
                return True, f"restarted; active (main pid {st.main_pid})"
            last = st.describe()
        else:
            r = await prober.run(c.probe, cwd=c.working_directory or None)
            if r.ok:
                return True, f"restarted; {c.probe.kind} probe passed ({r.detail})"
            last = f"{c.probe.kind} probe: {r.detail}"
        left = deadline - loop.time()
        if left <= 0:
            return False, f"not healthy within {c.start_timeout:g}s (last: {last})"
        await asyncio.sleep(min(_POLL, left))


def run(
    argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None, *, layer: str
) -> int:
    """The healer of ``layer`` (throat, third_eye or crown) as an executable: JSON, exit code."""
    if layer not in HEALERS:
        raise ValueError(f"no restart healer for layer {layer!r}; one of {', '.join(HEALERS)}")

    async def heal(ctx: HealContext) -> HealResult:
        return await heal_layer(ctx, layer)

    return main(HEALERS[layer], layer, heal, argv, env, description=__doc__)


def run_throat(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``throat_api_stabilize``: restart the throat (API) layer."""
    return run(argv, env, layer="throat")


def run_third_eye(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``third_eye_inference_flush``: signal the inference units to flush, then restart them."""
    return run(argv, env, layer="third_eye")


def run_crown(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``crown_full_restart``: restart the crown (orchestration) layer."""
    return run(argv, env, layer="crown")


def cli(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """``python -m agents.healing.restart LAYER [--dry-run]``; LAYER may also come from
    ``RAZAR_LAYER``. Without a known layer: one JSON object saying so, exit 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    if args and args[0] in HEALERS:
        return run(args[1:], env, layer=args[0])
    layer = environ.get("RAZAR_LAYER", "")
    if layer in HEALERS:
        return run(args, env, layer=layer)
    reason = (
        f"usage: python -m agents.healing.restart {{{','.join(HEALERS)}}} [--dry-run] "
        f"(or RAZAR_LAYER); got {args[:1] or 'no layer'}"
    )
    out = HealResult("restart", layer, "not_healed", reason).as_dict()
    sys.stdout.write(json.dumps(out) + "\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(cli())

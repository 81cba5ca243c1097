"""What the unit-level healers share: per-unit CPU and memory use, the layer's components
from razard's config, and a store of the property values a healer changed, to put back.

Usage is read from systemd first (``CPUUsageNSec``, ``MemoryCurrent``). Where
systemd has no accounting for a unit (the value is 2**64-1, as under cgroup v1
or with accounting off) it is summed over the unit's processes instead: every
pid in the unit's control group and its sub-groups (``cgroup.procs`` under
``/sys/fs/cgroup`` on cgroup v2, ``/sys/fs/cgroup/unified`` or
``/sys/fs/cgroup/systemd`` on hybrid and legacy hierarchies), CPU time
including reaped children, resident memory.

`SavedValues` remembers, per unit and property, the value a healer found
before it changed it and the value it set. It only ever keeps the first
original: a healer that runs twice never mistakes its own lowered value for
the one to restore, and a restore leaves a value alone that someone else has
changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agents.healing.base import HealContext, HealerError, HealResult, Step
from agents.pressure import Pressure, PressureError, PSIUnavailable, read_psi
from razard import storage
from razard.config import UNIT_RE, ComponentConfig, Config, load_config
from razard.errors import ConfigError, RazarError, SystemdError, UnitNotFound
from razard.storage import write_json_atomic
from razard.systemd import SERVICE_IFACE, Systemd

#: systemd's "not set" / "no value" for uint64 properties (CPUWeight, MemoryHigh, CPUUsageNSec...).
NOT_SET: Final = 2**64 - 1
#: Where a unit's ``ControlGroup`` is looked up, first match wins (v2, hybrid v2, v1 name=systemd).
CGROUP_ROOTS: Final = (
    Path("/sys/fs/cgroup"),
    Path("/sys/fs/cgroup/unified"),
    Path("/sys/fs/cgroup/systemd"),
)
#: Units no resource healer ever throttles, limits or restarts.
ALWAYS_PROTECTED: Final = frozenset({"razard.service"})
#: Unit types that have a control group (and so CPU and memory use).
_CGROUP_TYPES: Final = ("service", "scope", "slice", "socket", "mount", "swap")
SAVED_FILE: Final = "saved.json"


def unit_interface(unit: str) -> str | None:
    """The D-Bus interface with ``unit``'s cgroup properties; None for types without a cgroup."""
    kind = unit.rsplit(".", 1)[-1]
    return f"org.freedesktop.systemd1.{kind.capitalize()}" if kind in _CGROUP_TYPES else None


def describe_value(value: int) -> str:
    """A property value as an operator reads it (``not set`` for 2**64-1)."""
    return "not set" if value == NOT_SET else str(value)


def describe_bytes(n: int) -> str:
    """``157286400`` -> ``150.0 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- systemd


async def connect(ctx: HealContext) -> Systemd:
    """A connected `Systemd` on the bus the context names (RAZAR_BUS).

    The bus address comes from the context's own environment
    (``DBUS_SESSION_BUS_ADDRESS`` / ``DBUS_SYSTEM_BUS_ADDRESS``) when it has one.
    """
    var = "DBUS_SESSION_BUS_ADDRESS" if ctx.bus == "user" else "DBUS_SYSTEM_BUS_ADDRESS"
    sd = Systemd(bus=ctx.bus, address=ctx.env.get(var) or None)
    try:
        await sd.connect()
    except SystemdError as e:
        raise HealerError(f"RAZAR_BUS={ctx.bus}: cannot reach systemd: {e}") from None
    return sd


# --------------------------------------------------------------------------- usage


@dataclass(frozen=True)
class UnitUsage:
    """How much CPU time a unit has used so far and how much memory it holds now.

    ``cpu_source``/``memory_source``: ``systemd`` (its accounting) or
    ``processes`` (summed over ``pids``, the unit's processes).
    """

    unit: str
    cpu_seconds: float
    memory_bytes: int
    cpu_source: str = "systemd"
    memory_source: str = "systemd"
    pids: tuple[int, ...] = ()


def cgroup_pids(control_group: str, roots: Iterable[Path] = CGROUP_ROOTS) -> set[int]:
    """The pids in ``control_group`` and every group below it, from the first root holding it.

    An empty or root group (an inactive unit, or ``/``) has no pids of its own here.
    """
    rel = control_group.strip("/")
    if not rel:
        return set()
    for root in roots:
        top = root / rel
        if not (top / "cgroup.procs").is_file():
            continue
        pids: set[int] = set()
        for procs in [top / "cgroup.procs", *top.rglob("*/cgroup.procs")]:
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in procs.read_text().split())
        return {p for p in pids if p > 0}
    return set()


def process_usage(pids: Iterable[int]) -> tuple[float, int]:
    """``(cpu seconds, resident bytes)`` summed over ``pids``; CPU includes reaped children.

    A process that is gone by the time it is read counts as nothing.
    """
    import psutil  # type: ignore[import-untyped]  # only the healers read processes

    cpu = 0.0
    rss = 0
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                t = p.cpu_times()
                cpu += t.user + t.system + t.children_user + t.children_system
                rss += int(p.memory_info().rss)
        except psutil.Error:
            continue
    return cpu, rss


async def unit_usage(sd: Systemd, unit: str, *, roots: Iterable[Path] = CGROUP_ROOTS) -> UnitUsage:
    """CPU seconds used and memory bytes held by ``unit``: systemd's numbers where it keeps
    them, else the sum over the unit's processes (see the module's docstring).

    Raises `UnitNotFound` / `SystemdError` from systemd.
    """
    iface = unit_interface(unit)
    props: Mapping[str, Any] = await sd.properties(unit, iface) if iface else {}
    cpu_ns = int(props.get("CPUUsageNSec", NOT_SET))
    mem = int(props.get("MemoryCurrent", NOT_SET))
    if cpu_ns != NOT_SET and mem != NOT_SET:
        return UnitUsage(unit, cpu_ns / 1e9, mem)
    pids = await asyncio.to_thread(cgroup_pids, str(props.get("ControlGroup", "")), tuple(roots))
    p_cpu, p_mem = await asyncio.to_thread(process_usage, sorted(pids))
    return UnitUsage(
        unit,
        cpu_ns / 1e9 if cpu_ns != NOT_SET else p_cpu,
        mem if mem != NOT_SET else p_mem,
        cpu_source="systemd" if cpu_ns != NOT_SET else "processes",
        memory_source="systemd" if mem != NOT_SET else "processes",
        pids=tuple(sorted(pids)),
    )


async def usage_of(
    sd: Systemd, units: Iterable[str], steps: list[Step] | None = None
) -> dict[str, UnitUsage]:
    """`unit_usage` of each unit; a unit systemd cannot read is left out (noted in ``steps``)."""
    out: dict[str, UnitUsage] = {}
    for unit in units:
        try:
            out[unit] = await unit_usage(sd, unit)
        except SystemdError as e:
            if steps is not None:
                steps.append(Step("read_usage", False, f"{unit}: cannot read its usage: {e}"))
    return out


# --------------------------------------------------------------------------- controllers

#: The cgroup v2 hierarchy: pure unified, or the one beside the v1 controllers on a hybrid host.
UNIFIED_ROOTS: Final = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
#: Where cgroup v1 mounts the cpu controller (CPUWeight becomes cpu.shares there).
CPU_V1_ROOTS: Final = (
    Path("/sys/fs/cgroup/cpu"),
    Path("/sys/fs/cgroup/cpu,cpuacct"),
    Path("/sys/fs/cgroup/cpuacct,cpu"),
)
#: What each runtime setting needs: the controller, and whether cgroup v1 honours it.
NEEDS: Final = {"MemoryHigh": ("memory", False), "CPUWeight": ("cpu", True)}


def _controllers(directory: Path) -> list[str] | None:
    try:
        return (directory / "cgroup.controllers").read_text().split()
    except OSError:
        return None


def controller_support(
    prop: str,
    control_group: str,
    *,
    unified: Iterable[Path] = UNIFIED_ROOTS,
    cpu_v1: Iterable[Path] = CPU_V1_ROOTS,
) -> tuple[bool, str]:
    """Does setting ``prop`` (MemoryHigh, CPUWeight) at run time take effect on a unit in
    ``control_group``? ``(yes, why)``, read from the cgroup tree as it is on this host.

    ``MemoryHigh`` needs the cgroup v2 memory controller available to the unit's
    group; ``CPUWeight`` the v2 cpu controller, or the v1 cpu controller holding the
    group (systemd then writes cpu.shares). A hybrid host whose v2 tree has no
    controllers (they are all mounted as v1) supports neither limit on v2.
    """
    controller, v1_ok = NEEDS[prop]
    rel = control_group.strip("/")
    offered: list[str] | None = None
    where = ""
    for root in unified:
        if _controllers(root) is None:
            continue
        # the controllers the unit's parent group can hand down to it
        d = (root / rel).parent if rel else root
        while d != root and not d.is_dir():
            d = d.parent
        offered, where = _controllers(d) or [], str(d)
        if controller in offered:
            return True, f"cgroup v2 {controller} controller available ({where})"
        break
    if v1_ok:
        for root in cpu_v1:
            if rel and (root / rel).is_dir():
                return True, f"cgroup v1 {controller} controller holds the unit ({root / rel})"
    if offered is None:
        return False, f"{prop} needs the cgroup v2 {controller} controller: no cgroup v2 tree"
    v1 = Path("/sys/fs/cgroup") / controller
    note = f"; {controller} is mounted as cgroup v1 ({v1})" if v1.is_dir() else ""
    return False, (
        f"{prop} needs the cgroup v2 {controller} controller, but {where} offers "
        f"{', '.join(offered) or 'no controllers'}{note}"
    )


def own_control_group() -> str:
    """This process's cgroup v2 path (``0::/...`` in /proc/self/cgroup), or ``/``."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:] or "/"
    except OSError:
        pass
    return "/"


def host_support(control_group: str | None = None) -> dict[str, dict[str, str]]:
    """Which heart and solar_plexus actions work on this host, judged for a unit beside
    ``control_group`` (default: this process's): ``{layer: {action: "yes: why" | "no: why"}}``."""
    group = own_control_group() if control_group is None else control_group
    out: dict[str, dict[str, str]] = {}
    for layer, action, prop in (
        ("heart", "memory_high", "MemoryHigh"),
        ("solar_plexus", "throttle", "CPUWeight"),
    ):
        ok, why = controller_support(prop, group)
        out[layer] = {action: f"{'yes' if ok else 'no'}: {why}"}
    out["heart"]["restart"] = "yes: restarts the top consumer through systemd"
    return out


def skipped(ctx: HealContext) -> list[str]:
    """``RAZAR_HEAL_SKIP``: the actions razard saw not hold in this outage."""
    return [a.strip() for a in ctx.get("RAZAR_HEAL_SKIP").split(",") if a.strip()]


# --------------------------------------------------------------------------- pressure


def read_pressure_setting(ctx: HealContext, name: str, default: str) -> Pressure | None:
    """The PSI file named by setting ``name`` (``default`` when unset), parsed.

    None when the default file is missing or switched off (a kernel without PSI);
    a `HealerError` naming the setting when a file set explicitly is missing, or
    any file is garbled.
    """
    path = ctx.get(name, default)
    try:
        return read_psi(path)
    except PSIUnavailable as e:
        if path == default:
            return None
        raise HealerError(f"{name}: {e}") from None
    except PressureError as e:
        raise HealerError(f"{name}: {e}") from None


# --------------------------------------------------------------------------- config


def load_razar_config(ctx: HealContext) -> Config | None:
    """razard's config from ``RAZAR_CONFIG``; None when the variable is not set.

    Raises `HealerError` naming the variable when the file cannot be used.
    """
    path = ctx.get("RAZAR_CONFIG")
    if not path:
        return None
    try:
        return load_config(path, env=ctx.env)
    except ConfigError as e:
        raise HealerError(f"RAZAR_CONFIG: {e}") from None


def layer_components(ctx: HealContext, layer: str | None) -> list[ComponentConfig] | None:
    """The components of ``layer`` (every layer when None) in ``RAZAR_CONFIG``, by priority
    then name; None when ``RAZAR_CONFIG`` is not set."""
    config = load_razar_config(ctx)
    if config is None:
        return None
    comps = [c for c in config.components if layer is None or c.layer == layer]
    return sorted(comps, key=lambda c: (c.priority, c.name))


def unit_list(ctx: HealContext, name: str) -> list[str]:
    """A comma-separated list of unit names from setting ``name``; ``app`` means ``app.service``.

    Raises `HealerError` naming the setting for a name that is not a unit name.
    """
    out: list[str] = []
    for raw in ctx.get(name).split(","):
        item = raw.strip()
        if not item:
            continue
        unit = item if "." in item else f"{item}.service"
        if not UNIT_RE.fullmatch(unit):
            raise HealerError(f"{name}: {item!r} is not a unit name like app.service")
        if unit not in out:
            out.append(unit)
    return out


async def candidate_units(
    ctx: HealContext, sd: Systemd, units_var: str, protect_var: str
) -> tuple[list[str], list[str]]:
    """``(candidates, protected)``: the units a resource healer may act on, and those it skipped.

    Candidates are ``units_var`` when set; else every component unit in
    ``RAZAR_CONFIG`` when that is set; else every active service. Units in
    ``protect_var`` and `ALWAYS_PROTECTED` are never candidates.
    """
    protect = set(unit_list(ctx, protect_var)) | ALWAYS_PROTECTED
    units = unit_list(ctx, units_var)
    if not units:
        comps = layer_components(ctx, None)
        if comps is not None:
            units = list(dict.fromkeys(c.unit for c in comps))
        else:
            units = [n for n, _a, _s in await sd.list_units(["active"]) if n.endswith(".service")]
            units.sort()
    units = [u for u in units if unit_interface(u) is not None]
    return [u for u in units if u not in protect], [u for u in units if u in protect]


# --------------------------------------------------------------------------- saved values


@dataclass(frozen=True)
class SavedValue:
    """A property a healer changed: the value it found first, and the value it set."""

    unit: str
    prop: str
    original: int
    applied: int


class SavedValues:
    """``saved.json`` in a healer's state directory: the originals to put back on restore.

    Every change is a locked read-modify-write, written atomically. A damaged
    file is an error, never silently dropped: it may hold the only record of a
    value to restore.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / SAVED_FILE
        self._lock_path = directory / (SAVED_FILE + ".lock")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with storage.locked(self._lock_path):
            yield

    def _read(self) -> dict[str, dict[str, dict[str, int]]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise HealerError(f"{self.path}: cannot read the saved values: {e}") from None
        units = raw.get("units") if isinstance(raw, dict) else None
        try:
            assert isinstance(units, dict)
            return {
                str(u): {
                    str(p): {"original": int(v["original"]), "applied": int(v["applied"])}
                    for p, v in props.items()
                }
                for u, props in units.items()
            }
        except (AssertionError, AttributeError, KeyError, TypeError, ValueError):
            raise HealerError(
                f"{self.path}: damaged (expected {{'units': {{unit: {{property: "
                "{'original', 'applied'}}}}}}); fix or remove it by hand"
            ) from None

    def _write(self, units: dict[str, dict[str, dict[str, int]]]) -> None:
        try:
            if units:
                write_json_atomic(self.path, {"units": units, "updated": time.time()})
            else:
                self.path.unlink(missing_ok=True)
        except (RazarError, OSError) as e:
            raise HealerError(f"{self.path}: cannot write the saved values: {e}") from None

    def values(self, prop: str | None = None) -> list[SavedValue]:
        """Every saved value (of ``prop`` only, when given), by unit."""
        out = []
        for unit, props in sorted(self._read().items()):
            for p, v in sorted(props.items()):
                if prop is None or p == prop:
                    out.append(SavedValue(unit, p, v["original"], v["applied"]))
        return out

    def get(self, unit: str, prop: str) -> SavedValue | None:
        """The saved value of ``unit``'s ``prop``, if any."""
        v = self._read().get(unit, {}).get(prop)
        return SavedValue(unit, prop, v["original"], v["applied"]) if v else None

    def remember(self, unit: str, prop: str, original: int, applied: int) -> SavedValue:
        """Record that ``prop`` of ``unit`` was ``original`` and is being set to ``applied``.

        An original already saved is kept (only ``applied`` is updated): the value
        found on a second run is the healer's own. Returns what is saved now.
        """
        with self._locked():
            units = self._read()
            entry = units.setdefault(unit, {}).setdefault(prop, {"original": original})
            entry["applied"] = applied
            self._write(units)
            return SavedValue(unit, prop, entry["original"], applied)

    def forget(self, unit: str, prop: str) -> None:
        """Drop the saved value (after it was put back, or the unit is gone)."""
        with self._locked():
            units = self._read()
            props = units.get(unit, {})
            if props.pop(prop, None) is not None:
                if not props:
                    units.pop(unit, None)
                self._write(units)


async def restore_saved(
    sd: Systemd, store: SavedValues, prop: str, steps: list[Step], *, dry_run: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Put every saved ``prop`` back at runtime and forget it; ``(restored, problems)``.

    A value someone else changed since the healer set it is left as it is (and
    forgotten); a unit systemd no longer knows is forgotten. A systemd error keeps
    the record, for the next restore, and is returned as a problem.
    """
    restored: list[dict[str, Any]] = []
    problems: list[str] = []
    for sv in store.values(prop):
        what = f"{sv.unit}: {prop} {describe_value(sv.applied)} -> {describe_value(sv.original)}"
        if dry_run:
            restored.append({"unit": sv.unit, "from": sv.applied, "to": sv.original})
            continue
        try:
            props = await sd.properties(sv.unit, unit_interface(sv.unit) or SERVICE_IFACE)
            current = int(props.get(prop, NOT_SET))
            if current != sv.applied:
                steps.append(
                    Step(
                        "restore",
                        True,
                        f"{sv.unit}: {prop} is {describe_value(current)}, not the "
                        f"{describe_value(sv.applied)} set here: changed by someone else, "
                        "left as it is",
                    )
                )
                store.forget(sv.unit, prop)
                continue
            await sd.set_properties(sv.unit, {prop: ("t", sv.original)}, runtime=True)
        except UnitNotFound:
            steps.append(Step("restore", True, f"{sv.unit}: no such unit any more; forgotten"))
            store.forget(sv.unit, prop)
            continue
        except SystemdError as e:
            steps.append(Step("restore", False, f"{what}: {e}"))
            problems.append(f"{sv.unit}: {e}")
            continue
        store.forget(sv.unit, prop)
        steps.append(Step("restore", True, what, changed=True))
        restored.append({"unit": sv.unit, "from": sv.applied, "to": sv.original})
    return restored, problems


PropertyHeal = Callable[
    [HealContext, Systemd, "SavedValues", dict[str, Any], HealResult], Awaitable[None]
]


async def run_property_healer(
    ctx: HealContext, healer: str, layer: str, settings: dict[str, Any], body: PropertyHeal
) -> HealResult:
    """Run a healer that changes unit properties at runtime and keeps what it changed on disk
    (solar_plexus's CPUWeight, heart's MemoryHigh); a systemd error means not healed."""
    result = HealResult(healer, layer, "not_healed", "", dry_run=ctx.dry_run)
    store = SavedValues(ctx.healer_state(healer))
    sd = await connect(ctx)
    try:
        await body(ctx, sd, store, settings, result)
    except SystemdError as e:
        result.outcome, result.reason = "not_healed", f"systemd: {e}"
    finally:
        await sd.close()
    return result


async def restore_property(
    ctx: HealContext, sd: Systemd, store: SavedValues, prop: str, result: HealResult, why: str
) -> None:
    """Put back every ``prop`` value the healer changed and say so in ``result``."""
    restored, problems = await restore_saved(sd, store, prop, result.steps, dry_run=ctx.dry_run)
    result.details["restored"] = restored
    if ctx.dry_run:
        result.plan += [
            f"set {prop}={describe_value(r['to'])} on {r['unit']} (runtime)" for r in restored
        ]
    names = ", ".join(r["unit"] for r in restored)
    if problems:
        result.outcome = "not_healed"
        result.reason = f"{why}; could not restore {prop} of: {'; '.join(problems)}"
    elif not restored:
        result.outcome, result.healed_by = "healed", "restore"
        result.reason = f"{why}; nothing to restore"
    elif ctx.dry_run:  # not healed yet: the plan says what a real run would do
        result.outcome, result.reason = "not_healed", f"dry run: {why}; would restore {names}"
    else:
        result.outcome, result.healed_by = "healed", "restore"
        result.reason = f"{why}; restored {prop} of {names}"

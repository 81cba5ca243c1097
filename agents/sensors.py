"""Each layer's own sensor: one reading per interval, good or not, with the evidence.

- root: the link's carrier and address, and a ping of the configured target;
- sacral: NVML answers, no new critical XID, every GPU's recovery action is none;
- solar_plexus: CPU pressure (``/proc/pressure/cpu``, some avg10) under the threshold;
- heart: memory pressure under the threshold and enough memory available;
- crown: razard's own health (event-loop lag, the systemd bus, state being saved).

throat and third_eye have no sensor of their own: their pulse is their
components' probes and heartbeats. Reading a sensor never raises: a sensor that
cannot read is a bad reading saying why.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agents.gpu import GpuBackend, GpuError, GpuUnavailable, open_backend
from agents.pressure import PressureError, memory_available, read_psi
from razard.chakra_config import (
    CPU_PRESSURE_THRESHOLD,
    MEMORY_MIN_AVAILABLE_RATIO,
    MEMORY_PRESSURE_THRESHOLD,
    ChakraConfig,
    LayerSettings,
)

PING_TIMEOUT_S = 1


@dataclass(frozen=True)
class Reading:
    """One sensor reading: good or not, a one-line summary, and the values behind it."""

    ok: bool
    summary: str
    values: Mapping[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary, "values": dict(self.values), "at": self.at}


class Sensor(Protocol):
    """A layer's sensor."""

    async def read(self) -> Reading: ...


async def _run(argv: list[str], limit: float) -> tuple[int, str]:
    """Run ``argv`` (no shell); returns (exit status, stdout+stderr), 127 when it cannot start."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
    except OSError as e:
        return 127, str(e)
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return 124, f"timed out after {limit:g}s"
    return proc.returncode or 0, out.decode(errors="replace")


class RootSensor:
    """Carrier, address and reachability of the root layer's link (optionally in a netns)."""

    def __init__(self, interface: str, target: str = "", netns: str = "") -> None:
        self.interface = interface
        self.target = target
        self.netns = netns

    def _ip(self, *args: str) -> list[str]:
        return ["ip", *(["-n", self.netns] if self.netns else []), *args]

    async def read(self) -> Reading:
        code, out = await _run(self._ip("-j", "addr", "show", "dev", self.interface), 5)
        if code != 0:
            return Reading(False, f"link {self.interface}: {out.strip() or 'not found'}")
        try:
            info = json.loads(out)[0]
        except (ValueError, IndexError, KeyError):
            return Reading(False, f"link {self.interface}: cannot parse `ip -j addr` output")
        flags = info.get("flags", [])
        carrier = "LOWER_UP" in flags and "UP" in flags
        addrs = [
            f"{a.get('local')}/{a.get('prefixlen')}"
            for a in info.get("addr_info", [])
            if a.get("scope") == "global"
        ]
        values: dict[str, Any] = {
            "interface": self.interface,
            "carrier": carrier,
            "operstate": info.get("operstate", ""),
            "addresses": addrs,
        }
        if not carrier:
            return Reading(False, f"link {self.interface} has no carrier", values)
        if not self.target:
            return Reading(True, f"link {self.interface} up", values)
        ns = ["ip", "netns", "exec", self.netns] if self.netns else []
        ping = [*ns, "ping", "-c", "1", "-W", str(PING_TIMEOUT_S), "-I", self.interface]
        code, out = await _run([*ping, self.target], PING_TIMEOUT_S + 4)
        values["target"] = self.target
        values["reachable"] = code == 0
        if code != 0:
            return Reading(False, f"link {self.interface} up, {self.target} unreachable", values)
        return Reading(True, f"link {self.interface} up, {self.target} reachable", values)


class CpuSensor:
    """CPU pressure: PSI ``some avg10`` (percent of time some task waited for a CPU)."""

    def __init__(self, path: Path, threshold: float) -> None:
        self.path = path
        self.threshold = threshold

    async def read(self) -> Reading:
        try:
            avg10 = read_psi(self.path).avg(10)
        except PressureError as e:
            return Reading(False, f"cannot read CPU pressure: {e}")
        values = {"some_avg10": avg10, "threshold": self.threshold}
        ok = avg10 < self.threshold  # at the threshold is pressure, as for the healer
        word = "under" if ok else "at or over"
        return Reading(ok, f"CPU pressure {avg10:g}% {word} {self.threshold:g}%", values)


class MemorySensor:
    """Memory pressure (PSI ``some avg10``) and the share of memory still available."""

    def __init__(self, psi: Path, meminfo: Path, threshold: float, min_ratio: float) -> None:
        self.psi = psi
        self.meminfo = meminfo
        self.threshold = threshold
        self.min_ratio = min_ratio

    async def read(self) -> Reading:
        try:
            avg10 = read_psi(self.psi).avg(10)
            available, total = memory_available(self.meminfo)
        except PressureError as e:
            return Reading(False, f"cannot read memory pressure: {e}")
        ratio = available / total if total else 0.0
        values = {
            "some_avg10": avg10,
            "threshold": self.threshold,
            "available_bytes": available,
            "total_bytes": total,
            "available_ratio": round(ratio, 4),
        }
        if avg10 >= self.threshold:
            return Reading(False, f"memory pressure {avg10:g}% >= {self.threshold:g}%", values)
        if ratio < self.min_ratio:
            return Reading(
                False, f"{ratio:.1%} of memory available, under {self.min_ratio * 100:g}%", values
            )
        return Reading(True, f"memory pressure {avg10:g}%, {ratio:.0%} available", values)


class GpuSensor:
    """NVML answers, no new critical XID since the last reading, recovery action none.

    One NVML handle is kept open between readings (its XID event set only sees
    events after it registered); `pause` releases it while the sacral healer
    runs, since ``nvidia-smi --gpu-reset`` refuses a GPU that anyone holds open.
    """

    def __init__(self, open_backend: Callable[[], GpuBackend]) -> None:
        self._open = open_backend
        self._backend: GpuBackend | None = None
        self._paused = False
        self._last: Reading | None = None
        self._lock = threading.Lock()

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            self._close()

    def resume(self) -> None:
        with self._lock:
            self._paused = False

    def _close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def _read(self) -> Reading:
        with self._lock:
            if self._paused:
                return self._last or Reading(False, "paused while the GPU is being recovered")
            try:
                if self._backend is None:
                    self._backend = self._open()
                backend = self._backend
                devices = backend.devices()
                gpus, bad = [], []
                for d in devices:
                    action = backend.recovery_action(d.index)
                    name = action if action is not None else "unknown"
                    gpus.append({"index": d.index, "uuid": d.uuid, "recovery_action": name})
                    if action is not None and name != "none":
                        bad.append(f"GPU {d.index} recovery action {name}")
                xids = [{"uuid": ev.uuid, "code": ev.code} for ev in backend.wait_xid(0)]
                bad += [f"XID {x['code']} on GPU {x['uuid']}" for x in xids]
            except GpuUnavailable as e:
                self._close()
                return Reading(False, f"NVML unavailable: {e}", {"nvml": False})
            except GpuError as e:
                self._close()  # reopened on the next reading
                return Reading(False, f"NVML error: {e}", {"nvml": False})
            values = {"nvml": True, "gpus": gpus, "new_xids": xids}
            if bad:
                self._last = Reading(False, "; ".join(bad), values)
            else:
                self._last = Reading(
                    True, f"{len(devices)} GPU(s) answer, no recovery action", values
                )
            return self._last

    async def read(self) -> Reading:
        return await asyncio.to_thread(self._read)


class CallableSensor:
    """A sensor computed inside razard (crown: razard's own health)."""

    def __init__(self, fn: Callable[[], Reading]) -> None:
        self.fn = fn

    async def read(self) -> Reading:
        return self.fn()


def sensor_for(
    settings: LayerSettings,
    chakra: ChakraConfig,
    *,
    env: Mapping[str, str],
    crown: Callable[[], Reading] | None = None,
) -> Sensor | None:
    """The sensor for a layer, or None when the layer has none (or it is not configured)."""
    del chakra
    layer = settings.layer
    if layer == "root":
        interface = settings.setting("interface")
        if not interface:
            return None  # no link named: root's pulse is its components' heartbeats only
        return RootSensor(interface, settings.setting("target"), settings.setting("netns"))
    if layer == "sacral":
        try:
            open_backend(env).close()
        except GpuUnavailable:
            return None  # no GPU here: sacral has no sensor (and is not judged by one)
        return GpuSensor(lambda: open_backend(env))
    if layer in ("solar_plexus", "heart") and not settings.configured:
        return None  # pressure thresholds are the node's business: on when [chakra.<layer>] is set
    if layer == "solar_plexus":
        path = Path(settings.setting("pressure_file", "/proc/pressure/cpu"))
        if not path.exists():
            return None  # a kernel without PSI
        return CpuSensor(path, settings.number("pressure_threshold", CPU_PRESSURE_THRESHOLD))
    if layer == "heart":
        path = Path(settings.setting("pressure_file", "/proc/pressure/memory"))
        if not path.exists():
            return None
        return MemorySensor(
            path,
            Path(settings.setting("meminfo_file", "/proc/meminfo")),
            settings.number("pressure_threshold", MEMORY_PRESSURE_THRESHOLD),
            settings.number("min_available_ratio", MEMORY_MIN_AVAILABLE_RATIO),
        )
    if layer == "crown" and crown is not None:
        return CallableSensor(crown)
    return None

"""NVML behind a small interface, with a fake for nodes without a GPU.

Everything razar asks of a GPU goes through a `GpuBackend`: the devices, their
utilization, memory, temperature, compute processes, the recovery action the
driver asks for, and critical XID events. `Nvml` answers from the NVIDIA driver
(``pynvml``, the nvidia-ml-py package); `FakeNvml` answers from a dict or a JSON
file. `open_backend` picks one::

    backend = open_backend(os.environ)      # raises GpuUnavailable: no driver, no library
    try:
        for gpu in backend.devices():
            print(gpu.index, gpu.uuid, backend.recovery_action(gpu.index))
    finally:
        backend.close()

A reading the GPU does not support (NVML's ``NotSupported``) is None, never an
error. Errors::

    GpuError
     ├── GpuUnavailable   NVML cannot be used on this node at all (no library, no
     │                    driver, no permission; a fake file that is missing or malformed)
     └── GpuReadError     one reading of one GPU failed (GPU lost, unknown error)

The stand-in for absent hardware
--------------------------------

``RAZAR_NVML_FAKE=/path/gpus.json`` makes `open_backend` return a `FakeNvml`
that re-reads that file on every call, so a test or a demo can change the GPU's
state while a healer runs (a fake ``nvidia-smi`` writes to it, for example).
It exists for tests and the demo; production nodes leave it unset. The file::

    {
      "gpus": [
        {
          "uuid": "GPU-5b1c...",          # default "GPU-fake-<index>"
          "name": "NVIDIA H100 80GB HBM3", # default "Fake GPU"
          "utilization": 0.5,             # ratio 0..1; absent: not supported
          "memory_used": 1073741824,      # bytes; both memory fields or neither
          "memory_total": 85899345920,
          "temperature": 60,              # degrees Celsius; absent: not supported
          "recovery_action": "none",      # a RecoveryAction name or NVML's number;
                                          # absent: not supported
          "processes": [{"pid": 1234, "used_memory": 524288000}],
          "xid": [{"code": 79, "time": 1718000000.0}],
          "lost": false                   # true: every reading fails ("GPU is lost")
        }
      ],
      "unavailable": "NVIDIA driver not loaded"   # optional: NVML cannot be used at all
    }

A GPU's index is its position in ``gpus``. A process is reported only while its
pid is alive, so stopping the unit that runs it really makes the fake GPU idle.
Each entry of ``xid`` is returned by `FakeNvml.wait_xid` once per backend (two
equal entries are two events); the time defaults to 0.

One module (~670 lines): `Nvml` and its fake `FakeNvml` implement the same `GpuBackend`
and share its value types and recovery-action codes; kept together, a change to one is
seen against the other.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, cast, get_args

#: ``pynvml`` once `Nvml` found the NVIDIA library: the module is 2 MiB of bindings that a
#: node without a GPU never needs, so razard loads it only where the driver is.
pynvml: Any = None

#: The environment variable that names the fake's JSON file.
ENV_FAKE: Final = "RAZAR_NVML_FAKE"

RecoveryAction = Literal[
    "none",
    "gpu_reset",
    "node_reboot",
    "drain_p2p",
    "drain_and_reset",
    "recover_imex_domain",
    "bus_reset",
    "system_reboot",
    "unknown",
]

#: NVML's numbers (``NVML_GPU_RECOVERY_ACTION_*`` in nvml.h) for each recovery action. Written
#: out rather than read from pynvml: the driver answers with these numbers whatever the
#: bindings know, and nvidia-ml-py defines the constants only from 12.570 on (``BUS_RESET``
#: and ``SYSTEM_REBOOT`` only from 13.615); the numbers razar reads with need no constant.
RECOVERY_ACTION_CODES: Final[dict[RecoveryAction, int]] = {
    "none": 0,
    "gpu_reset": 1,
    "node_reboot": 2,
    "drain_p2p": 3,
    "drain_and_reset": 4,
    "recover_imex_domain": 5,
    "bus_reset": 6,
    "system_reboot": 7,
}
#: The number `recovery_action_code` gives an action razar does not know.
UNKNOWN_RECOVERY_CODE: Final = -1

#: NVML numbers razar reads with, as nvml.h defines them, for the nvidia-ml-py releases the
#: pin allows (12.535 on) that lack some: the recovery action's field id came in 12.570,
#: the unsigned-short value type in 12.560. The bindings' own value wins where it has one.
NVML_FALLBACKS: Final[dict[str, int]] = {
    "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION": 230,
    "NVML_VALUE_TYPE_UNSIGNED_INT": 1,
    "NVML_VALUE_TYPE_UNSIGNED_LONG": 2,
    "NVML_VALUE_TYPE_UNSIGNED_LONG_LONG": 3,
    "NVML_VALUE_TYPE_SIGNED_LONG_LONG": 4,
    "NVML_VALUE_TYPE_SIGNED_INT": 5,
    "NVML_VALUE_TYPE_UNSIGNED_SHORT": 6,
}


def _nvml_number(name: str) -> int:
    return int(getattr(pynvml, name, NVML_FALLBACKS[name]))


_FI_RECOVERY_ACTION: Final = _nvml_number("NVML_FI_DEV_GET_GPU_RECOVERY_ACTION")
#: which member of nvmlValue_t holds a value of each type
_VALUE_MEMBERS: Final[dict[int, str]] = {
    _nvml_number("NVML_VALUE_TYPE_UNSIGNED_INT"): "uiVal",
    _nvml_number("NVML_VALUE_TYPE_UNSIGNED_LONG"): "ulVal",
    _nvml_number("NVML_VALUE_TYPE_UNSIGNED_LONG_LONG"): "ullVal",
    _nvml_number("NVML_VALUE_TYPE_SIGNED_LONG_LONG"): "sllVal",
    _nvml_number("NVML_VALUE_TYPE_SIGNED_INT"): "siVal",
    _nvml_number("NVML_VALUE_TYPE_UNSIGNED_SHORT"): "usVal",
}

_NAME_BY_CODE: Final[dict[int, RecoveryAction]] = {c: n for n, c in RECOVERY_ACTION_CODES.items()}
_ACTIONS: Final = frozenset(get_args(RecoveryAction))


class GpuError(Exception):
    """Something about the GPUs could not be read."""


class GpuUnavailable(GpuError):
    """NVML cannot be used on this node at all; the message says why, for a person."""


class GpuReadError(GpuError):
    """One reading of one GPU failed (the GPU is lost, the driver answered with an error)."""


@dataclass(frozen=True)
class GpuDevice:
    """One GPU as NVML lists it. ``uuid``/``name`` are "" when the GPU does not answer."""

    index: int
    uuid: str
    name: str


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on a GPU; ``used_memory`` is None where the driver does not say."""

    pid: int
    used_memory: int | None


@dataclass(frozen=True)
class XidEvent:
    """A critical XID error one GPU reported (``code`` is the XID number, e.g. 79)."""

    index: int
    uuid: str
    code: int
    time: float


class GpuBackend(Protocol):
    """What razar reads from the GPUs. Readings a GPU does not support are None.

    Every method may raise `GpuReadError` (this reading failed) or `GpuUnavailable`
    (NVML is gone altogether).
    """

    def devices(self) -> list[GpuDevice]:
        """Every GPU, by index."""
        ...

    def utilization(self, index: int) -> float | None:
        """How busy the GPU was over the driver's last sample period, 0..1."""
        ...

    def memory(self, index: int) -> tuple[int, int] | None:
        """(used bytes, total bytes) of the GPU's memory."""
        ...

    def temperature(self, index: int) -> float | None:
        """The GPU's core temperature in degrees Celsius."""
        ...

    def processes(self, index: int) -> list[GpuProcess] | None:
        """The compute processes running on the GPU."""
        ...

    def recovery_action(self, index: int) -> RecoveryAction | None:
        """What the driver asks to be done to bring the GPU back (``none`` when healthy)."""
        ...

    def wait_xid(self, timeout_s: float) -> list[XidEvent]:
        """Wait up to ``timeout_s`` seconds for critical XID events; [] when none came."""
        ...

    def close(self) -> None:
        """Release NVML (calling it again does nothing)."""
        ...


# --------------------------------------------------------------------------- recovery actions


def recovery_action_from_code(code: int) -> RecoveryAction:
    """The name of NVML's recovery action number ``code`` (``unknown`` for a number razar
    does not know)."""
    return _NAME_BY_CODE.get(code, "unknown")


def recovery_action_code(action: RecoveryAction) -> int:
    """NVML's number for ``action``; `UNKNOWN_RECOVERY_CODE` for ``unknown``."""
    return RECOVERY_ACTION_CODES.get(action, UNKNOWN_RECOVERY_CODE)


def parse_recovery_action(value: object) -> RecoveryAction:
    """A recovery action from a name (``"gpu_reset"``) or NVML's number (``1``).

    Raises ValueError for anything else.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a recovery action: {value!r}")
    if isinstance(value, int):
        return recovery_action_from_code(value)
    if isinstance(value, str) and value.strip().lower() in _ACTIONS:
        return cast(RecoveryAction, value.strip().lower())
    raise ValueError(
        f"not a recovery action: {value!r} (expected one of {', '.join(sorted(_ACTIONS))} "
        "or NVML's number)"
    )


# --------------------------------------------------------------------------- the real one

_WAIT_DRAIN_MAX: Final = 256  # events taken at once after the first one arrived


#: What `_unavailable_reason` says when the library is missing.
_NO_LIBRARY: Final = "NVML library not found (no NVIDIA driver)"


def _load_pynvml() -> None:
    """Import ``pynvml`` if NVIDIA's library is there (raises `GpuUnavailable` if not)."""
    global pynvml
    if pynvml is not None:
        return
    import ctypes

    try:  # what pynvml's nvmlInit loads first; absent: no driver, no need for the bindings
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        raise GpuUnavailable(_NO_LIBRARY) from None
    pynvml = importlib.import_module("pynvml")


def _unavailable_reason(e: Exception) -> str:
    if isinstance(e, pynvml.NVMLError_LibraryNotFound):
        return _NO_LIBRARY
    if isinstance(e, pynvml.NVMLError_DriverNotLoaded):
        return "NVIDIA driver not loaded (NVML cannot talk to it)"
    if isinstance(e, pynvml.NVMLError_NoPermission):
        return "no permission to use NVML (the NVIDIA device files)"
    if isinstance(e, pynvml.NVMLError_LibRmVersionMismatch):
        return "NVML library and NVIDIA kernel driver versions differ (reboot or reload the driver)"
    return f"NVML initialisation failed: {e}"


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class Nvml:
    """The NVIDIA driver through NVML. Opening it calls ``nvmlInit``; `close` shuts it down.

    Raises `GpuUnavailable` when NVML cannot be initialised. NVML is thread-safe;
    `wait_xid` should still be called from one thread at a time.
    """

    def __init__(self) -> None:
        _load_pynvml()
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise GpuUnavailable(_unavailable_reason(e)) from None
        self._closed = False
        self._handles: dict[int, Any] = {}
        self._events: Any = None
        self._registered = 0  # GPUs whose XID events the event set receives
        self._lock = threading.Lock()

    def _handle(self, index: int) -> Any:
        handle = self._handles.get(index)
        if handle is None:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except pynvml.NVMLError as e:
                raise GpuReadError(f"GPU {index}: {e}") from None
            self._handles[index] = handle
        return handle

    def _read(self, index: int, what: str, fn: Any, *args: Any) -> Any:
        """``fn(handle, *args)``; None when not supported; `GpuReadError` for other errors."""
        if self._closed:
            raise GpuReadError("NVML is closed")
        handle = self._handle(index)
        try:
            return fn(handle, *args)
        except pynvml.NVMLError_NotSupported:
            return None
        except pynvml.NVMLError as e:
            raise GpuReadError(f"GPU {index}: cannot read {what}: {e}") from None

    def devices(self) -> list[GpuDevice]:
        if self._closed:
            raise GpuReadError("NVML is closed")
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as e:
            raise GpuReadError(f"NVML cannot count the GPUs: {e}") from None
        found: list[GpuDevice] = []
        for i in range(count):
            uuid = name = ""
            with contextlib.suppress(GpuReadError):  # a lost GPU is still listed
                uuid = _text(self._read(i, "UUID", pynvml.nvmlDeviceGetUUID) or "")
                name = _text(self._read(i, "name", pynvml.nvmlDeviceGetName) or "")
            found.append(GpuDevice(i, uuid, name))
        return found

    def utilization(self, index: int) -> float | None:
        rates = self._read(index, "utilization", pynvml.nvmlDeviceGetUtilizationRates)
        return None if rates is None else float(rates.gpu) / 100.0

    def memory(self, index: int) -> tuple[int, int] | None:
        info = self._read(index, "memory", pynvml.nvmlDeviceGetMemoryInfo)
        return None if info is None else (int(info.used), int(info.total))

    def temperature(self, index: int) -> float | None:
        t = self._read(
            index, "temperature", pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU
        )
        return None if t is None else float(t)

    def processes(self, index: int) -> list[GpuProcess] | None:
        procs = self._read(index, "compute processes", pynvml.nvmlDeviceGetComputeRunningProcesses)
        if procs is None:
            return None
        return [
            GpuProcess(int(p.pid), None if p.usedGpuMemory is None else int(p.usedGpuMemory))
            for p in procs
        ]

    def recovery_action(self, index: int) -> RecoveryAction | None:
        values = self._read(
            index,
            "the recovery action",
            pynvml.nvmlDeviceGetFieldValues,
            [_FI_RECOVERY_ACTION],
        )
        if values is None:
            return None
        v = values[0]
        if v.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED:
            return None  # an older driver: the field does not exist
        if v.nvmlReturn != pynvml.NVML_SUCCESS:
            raise GpuReadError(
                f"GPU {index}: cannot read the recovery action: {pynvml.NVMLError(v.nvmlReturn)}"
            )
        member = _VALUE_MEMBERS.get(v.valueType, "uiVal")
        if hasattr(v.value, member):
            code = int(getattr(v.value, member))
        else:  # bindings older than the value type (usVal came in 12.560): its low 16 bits
            code = int(v.value.uiVal) & 0xFFFF
        return recovery_action_from_code(code)

    def _register_events(self) -> None:
        self._events = pynvml.nvmlEventSetCreate()
        for dev in self.devices():
            try:
                pynvml.nvmlDeviceRegisterEvents(
                    self._handle(dev.index), pynvml.nvmlEventTypeXidCriticalError, self._events
                )
                self._registered += 1
            except (pynvml.NVMLError, GpuReadError):
                continue  # this GPU cannot report XIDs; the others still can

    def _event(self, data: Any) -> XidEvent | None:
        if not int(data.eventType) & pynvml.nvmlEventTypeXidCriticalError:
            return None
        index, uuid = -1, ""
        with contextlib.suppress(pynvml.NVMLError):
            index = int(pynvml.nvmlDeviceGetIndex(data.device))
            uuid = _text(pynvml.nvmlDeviceGetUUID(data.device))
        return XidEvent(index, uuid, int(data.eventData), time.time())

    def wait_xid(self, timeout_s: float) -> list[XidEvent]:
        with self._lock:
            if self._closed:
                raise GpuReadError("NVML is closed")
            if self._events is None:
                try:
                    self._register_events()
                except pynvml.NVMLError as e:
                    raise GpuReadError(f"cannot create an NVML event set: {e}") from None
        if not self._registered:
            time.sleep(timeout_s)  # no GPU reports XIDs: nothing can arrive
            return []
        out: list[XidEvent] = []
        wait_ms = max(0, int(timeout_s * 1000))
        for _ in range(_WAIT_DRAIN_MAX):
            try:
                data = pynvml.nvmlEventSetWait_v2(self._events, wait_ms)
            except pynvml.NVMLError_Timeout:
                break
            except pynvml.NVMLError as e:
                if out:
                    break
                raise GpuReadError(f"waiting for NVML events failed: {e}") from None
            ev = self._event(data)
            if ev is not None:
                out.append(ev)
            wait_ms = 0  # take what else is queued, without waiting again
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._events is not None:
                with contextlib.suppress(pynvml.NVMLError):
                    pynvml.nvmlEventSetFree(self._events)
                self._events = None
            self._handles.clear()
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()


# --------------------------------------------------------------------------- the fake


@dataclass(frozen=True)
class _FakeGpu:
    uuid: str
    name: str
    utilization: float | None
    memory: tuple[int, int] | None
    temperature: float | None
    recovery_action: RecoveryAction | None
    processes: tuple[GpuProcess, ...]
    xid: tuple[tuple[int, float], ...]
    lost: bool


def _number(gpu: Mapping[str, Any], key: str, where: str) -> float | None:
    value = gpu.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def _parse_gpu(i: int, gpu: object, source: str) -> _FakeGpu:
    where = f"{source}: gpus[{i}]"
    if not isinstance(gpu, Mapping):
        raise ValueError(f"{where}: expected an object, got {gpu!r}")
    used, total = _number(gpu, "memory_used", where), _number(gpu, "memory_total", where)
    if (used is None) != (total is None):
        raise ValueError(f"{where}: give both memory_used and memory_total, or neither")
    action: RecoveryAction | None = None
    if gpu.get("recovery_action") is not None:
        try:
            action = parse_recovery_action(gpu["recovery_action"])
        except ValueError as e:
            raise ValueError(f"{where}.recovery_action: {e}") from None
    procs: list[GpuProcess] = []
    for j, p in enumerate(gpu.get("processes") or []):
        if not isinstance(p, Mapping) or not isinstance(p.get("pid"), int):
            raise ValueError(f"{where}.processes[{j}]: expected {{'pid': N, ...}}, got {p!r}")
        mem = _number(p, "used_memory", f"{where}.processes[{j}]")
        procs.append(GpuProcess(int(p["pid"]), None if mem is None else int(mem)))
    xids: list[tuple[int, float]] = []
    for j, x in enumerate(gpu.get("xid") or []):
        if not isinstance(x, Mapping) or not isinstance(x.get("code"), int):
            raise ValueError(f"{where}.xid[{j}]: expected {{'code': N, 'time': T}}, got {x!r}")
        xids.append((int(x["code"]), _number(x, "time", f"{where}.xid[{j}]") or 0.0))
    util = _number(gpu, "utilization", where)
    if util is not None and not 0.0 <= util <= 1.0:
        raise ValueError(f"{where}.utilization: expected a ratio 0..1, got {util!r}")
    return _FakeGpu(
        uuid=str(gpu.get("uuid") or f"GPU-fake-{i}"),
        name=str(gpu.get("name") or "Fake GPU"),
        utilization=util,
        memory=None if used is None or total is None else (int(used), int(total)),
        temperature=_number(gpu, "temperature", where),
        recovery_action=action,
        processes=tuple(procs),
        xid=tuple(xids),
        lost=bool(gpu.get("lost", False)),
    )


def _parse(doc: object, source: str) -> tuple[str | None, list[_FakeGpu]]:
    if not isinstance(doc, Mapping):
        raise ValueError(f"{source}: expected a JSON object with a 'gpus' list")
    gpus = doc.get("gpus", [])
    if not isinstance(gpus, list):
        raise ValueError(f"{source}: 'gpus' must be a list")
    unavailable = doc.get("unavailable")
    return (
        None if not unavailable else str(unavailable),
        [_parse_gpu(i, g, source) for i, g in enumerate(gpus)],
    )


def _alive(pid: int) -> bool:
    import psutil  # type: ignore[import-untyped]

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


class FakeNvml:
    """GPUs described by a dict (``data``) or a JSON file (``path``, re-read when it changes).

    The shape is in this module's docstring. A malformed description raises
    `GpuUnavailable` naming the file (or ``data``) and the bad key.
    """

    def __init__(self, data: Mapping[str, Any] | None = None, *, path: Path | None = None) -> None:
        if (data is None) == (path is None):
            raise ValueError("FakeNvml needs exactly one of data or path")
        self._path = path
        self._data = data
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: tuple[str | None, list[_FakeGpu]] = (None, [])
        self._delivered: Counter[tuple[int, str, int, float]] = Counter()
        self._closed = False
        self._gpus()  # a broken description fails now, not at the first reading

    @classmethod
    def from_file(cls, path: Path) -> FakeNvml:
        """A fake that re-reads ``path`` on every call."""
        return cls(path=path)

    def _source(self) -> str:
        return f"{ENV_FAKE} file {self._path}" if self._path is not None else "FakeNvml data"

    def _load(self) -> tuple[str | None, list[_FakeGpu]]:
        if self._path is None:
            assert self._data is not None
            return _parse(self._data, self._source())
        for attempt in range(3):
            try:
                st = self._path.stat()
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                if key == self._cache_key:
                    return self._cache
                parsed = _parse(json.loads(self._path.read_text(encoding="utf-8")), self._source())
            except FileNotFoundError:
                raise GpuUnavailable(f"{self._source()}: no such file") from None
            except OSError as e:
                raise GpuUnavailable(f"{self._source()}: cannot read it: {e}") from None
            except json.JSONDecodeError as e:
                if attempt < 2:  # a writer that does not replace the file atomically
                    time.sleep(0.02)
                    continue
                raise GpuUnavailable(f"{self._source()}: not valid JSON: {e}") from None
            except ValueError as e:
                raise GpuUnavailable(str(e)) from None
            self._cache_key, self._cache = key, parsed
            return parsed
        raise AssertionError("unreachable")

    def _gpus(self) -> list[_FakeGpu]:
        if self._closed:
            raise GpuReadError("NVML is closed")
        try:
            unavailable, gpus = self._load()
        except ValueError as e:
            raise GpuUnavailable(str(e)) from None
        if unavailable:
            raise GpuUnavailable(unavailable)
        return gpus

    def _gpu(self, index: int) -> _FakeGpu:
        gpus = self._gpus()
        if not 0 <= index < len(gpus):
            raise GpuReadError(f"GPU {index}: no such GPU (NVML lists {len(gpus)})")
        gpu = gpus[index]
        if gpu.lost:
            raise GpuReadError(f"GPU {index}: GPU is lost")
        return gpu

    def devices(self) -> list[GpuDevice]:
        return [
            GpuDevice(i, "" if g.lost else g.uuid, "" if g.lost else g.name)
            for i, g in enumerate(self._gpus())
        ]

    def utilization(self, index: int) -> float | None:
        return self._gpu(index).utilization

    def memory(self, index: int) -> tuple[int, int] | None:
        return self._gpu(index).memory

    def temperature(self, index: int) -> float | None:
        return self._gpu(index).temperature

    def processes(self, index: int) -> list[GpuProcess] | None:
        return [p for p in self._gpu(index).processes if _alive(p.pid)]

    def recovery_action(self, index: int) -> RecoveryAction | None:
        return self._gpu(index).recovery_action

    def _new_xids(self) -> list[XidEvent]:
        out: list[XidEvent] = []
        for i, gpu in enumerate(self._gpus()):
            if gpu.lost:
                continue
            in_file = Counter((i, gpu.uuid, code, t) for code, t in gpu.xid)
            for key, n in in_file.items():
                for _ in range(n - self._delivered[key]):
                    out.append(XidEvent(i, gpu.uuid, key[2], key[3]))
                self._delivered[key] = max(n, self._delivered[key])
        return out

    def wait_xid(self, timeout_s: float) -> list[XidEvent]:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            events = self._new_xids()
            left = deadline - time.monotonic()
            if events or left <= 0:
                return events
            time.sleep(min(0.05, left))

    def close(self) -> None:
        self._closed = True


# --------------------------------------------------------------------------- choosing one


def open_backend(env: Mapping[str, str] | None = None) -> GpuBackend:
    """The fake when ``RAZAR_NVML_FAKE`` names a file in ``env`` (default: ``os.environ``),
    else the driver through NVML. Raises `GpuUnavailable` with the reason when neither works.
    """
    environ = os.environ if env is None else env
    fake = environ.get(ENV_FAKE, "").strip()
    if fake:
        return FakeNvml.from_file(Path(fake))
    return Nvml()

"""GPU metrics for razard's Prometheus registry, read through a `GpuBackend`.

`GpuCollector` is a custom collector: razard registers it once and every scrape
reads the GPUs afresh (NVML answers in microseconds; the fake re-parses its file
only when it changed)::

    collector = GpuCollector(lambda: open_backend(env))
    metrics.registry.register(collector)
    collector.start()       # counts critical XID events in a background thread
    ...
    collector.stop()

The series follow dcgm-exporter's meanings with razar's names, per GPU with the
labels ``gpu`` (index), ``uuid`` and ``modelName``:

- ``razar_gpu_utilization_ratio``: how busy the GPU was, 0..1 (dcgm: DCGM_FI_DEV_GPU_UTIL / 100)
- ``razar_gpu_memory_used_bytes``, ``razar_gpu_memory_total_bytes`` (DCGM_FI_DEV_FB_USED/_TOTAL)
- ``razar_gpu_temperature_celsius`` (DCGM_FI_DEV_GPU_TEMP)
- ``razar_gpu_recovery_action``: NVML's number for what the driver asks to be done:
  0 none, 1 gpu_reset, 2 node_reboot, 3 drain_p2p, 4 drain_and_reset, 5 recover_imex_domain,
  6 bus_reset, 7 system_reboot; -1 for a number razar does not know
- ``razar_gpu_xid_errors_total{gpu,uuid,xid}``: critical XID events by code (DCGM_FI_DEV_XID_ERRORS
  keeps only the last one), counted by a thread that waits on NVML events

and one ``razar_gpu_nvml_available`` (1 when NVML answers, else 0). On a node
without a GPU or driver there is no per-GPU series at all, no error and one INFO
log line with the reason; NVML is tried again at most every ``retry_after``
seconds. A reading that fails for one GPU is left out for that GPU only.

A GPU reset (``nvidia-smi --gpu-reset``) fails while any process holds NVML
open, this collector included: `pause` releases NVML until `resume`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agents.gpu import (
    GpuBackend,
    GpuDevice,
    GpuError,
    GpuUnavailable,
    recovery_action_code,
)

log = logging.getLogger(__name__)

BackendFactory = Callable[[], GpuBackend]

#: Seconds between tries to open NVML while it is unavailable.
DEFAULT_RETRY_AFTER: Final = 60.0
#: Seconds one wait for XID events lasts (how long `GpuCollector.stop` may take).
DEFAULT_XID_WAIT: Final = 1.0

_LABELS: Final = ["gpu", "uuid", "modelName"]
_XID_LABELS: Final = ["gpu", "uuid", "xid"]


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "util": GaugeMetricFamily(
            "razar_gpu_utilization_ratio",
            "GPU utilization over the driver's last sample period (0..1)",
            labels=_LABELS,
        ),
        "mem_used": GaugeMetricFamily(
            "razar_gpu_memory_used_bytes", "GPU memory in use", labels=_LABELS
        ),
        "mem_total": GaugeMetricFamily(
            "razar_gpu_memory_total_bytes", "GPU memory in all", labels=_LABELS
        ),
        "temp": GaugeMetricFamily(
            "razar_gpu_temperature_celsius", "GPU core temperature", labels=_LABELS
        ),
        "recovery": GaugeMetricFamily(
            "razar_gpu_recovery_action",
            "What the driver asks to be done (NVML: 0 none, 1 gpu_reset, 2 node_reboot, "
            "3 drain_p2p, 4 drain_and_reset, 5 recover_imex_domain, 6 bus_reset, "
            "7 system_reboot; -1 unknown)",
            labels=_LABELS,
        ),
    }


def _xid_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "razar_gpu_xid_errors", "Critical XID errors by code", labels=_XID_LABELS
    )


def _available_family(value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "razar_gpu_nvml_available", "1 when NVML answers on this node, else 0", value=value
    )


class GpuCollector:
    """A prometheus_client collector of per-GPU series (module docstring), plus XID counting.

    ``backend_factory`` opens a backend (e.g. ``lambda: open_backend(env)``) and raises
    `GpuUnavailable` when there is none; the scrapes and the XID thread each open their own.
    """

    def __init__(
        self,
        backend_factory: BackendFactory,
        *,
        retry_after: float = DEFAULT_RETRY_AFTER,
        xid_wait: float = DEFAULT_XID_WAIT,
    ) -> None:
        self._factory = backend_factory
        self._retry_after = retry_after
        self._xid_wait = xid_wait
        self._lock = threading.Lock()  # scrapes, one at a time; the backend they share
        self._backend: GpuBackend | None = None
        self._next_try = 0.0
        self._reason: str | None = None  # why NVML is unavailable, as last logged
        self._xid_lock = threading.Lock()
        self._xids: dict[tuple[str, str, str], int] = {}
        self._xid_waits = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._paused = threading.Event()
        self._xid_released = threading.Event()
        self._xid_released.set()

    # ------------------------------------------------------------------ scrape

    def describe(self) -> Iterable[Metric]:
        """The families this collector may yield (the registry checks names with it)."""
        return [*_families().values(), _xid_family(), _available_family(0)]

    def collect(self) -> Iterable[Metric]:
        """Read every GPU once; yield its series, the XID counters and NVML's availability."""
        with self._lock:
            return list(self._collect())

    def _collect(self) -> Iterator[Metric]:
        backend = self._open()
        devices: list[GpuDevice] = []
        if backend is not None:
            try:
                devices = backend.devices()
            except GpuError as e:
                self._drop(str(e))
                backend = None
        xid = self._xid_metric()
        if backend is None:
            if xid.samples:  # counts from before NVML went away stay visible
                yield xid
            yield _available_family(0)
            return
        fams = _families()
        for dev in devices:
            self._read_device(backend, dev, fams)
        yield from fams.values()
        yield xid
        yield _available_family(1)

    @staticmethod
    def _read_device(
        backend: GpuBackend, dev: GpuDevice, fams: dict[str, GaugeMetricFamily]
    ) -> None:
        labels = [str(dev.index), dev.uuid, dev.name]
        try:
            util = backend.utilization(dev.index)
            if util is not None:
                fams["util"].add_metric(labels, util)
        except GpuError as e:
            log.debug("GPU %d utilization: %s", dev.index, e)
        try:
            mem = backend.memory(dev.index)
            if mem is not None:
                fams["mem_used"].add_metric(labels, mem[0])
                fams["mem_total"].add_metric(labels, mem[1])
        except GpuError as e:
            log.debug("GPU %d memory: %s", dev.index, e)
        try:
            temp = backend.temperature(dev.index)
            if temp is not None:
                fams["temp"].add_metric(labels, temp)
        except GpuError as e:
            log.debug("GPU %d temperature: %s", dev.index, e)
        try:
            action = backend.recovery_action(dev.index)
            if action is not None:
                fams["recovery"].add_metric(labels, recovery_action_code(action))
        except GpuError as e:
            log.debug("GPU %d recovery action: %s", dev.index, e)

    def _open(self) -> GpuBackend | None:
        if self._backend is not None or self._paused.is_set():
            return self._backend
        now = time.monotonic()
        if now < self._next_try:
            return None
        try:
            self._backend = self._factory()
        except GpuUnavailable as e:
            self._drop(str(e))
            return None
        except Exception as e:  # a broken factory must not break every scrape
            self._drop(f"{type(e).__name__}: {e}")
            return None
        if self._reason is not None or self._next_try == 0.0:
            log.info("GPU metrics on: NVML answers")
        self._reason = None
        self._next_try = now
        return self._backend

    def _drop(self, reason: str) -> None:
        """Close the backend, if any, and wait ``retry_after`` before trying again."""
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.close()
            self._backend = None
        self._next_try = time.monotonic() + self._retry_after
        if reason != self._reason:
            log.info("GPU metrics off: %s", reason)
            self._reason = reason

    # ------------------------------------------------------------------ XID events

    def _xid_metric(self) -> CounterMetricFamily:
        fam = _xid_family()
        with self._xid_lock:
            for labels, n in sorted(self._xids.items()):
                fam.add_metric(list(labels), n)
        return fam

    @property
    def xid_waits(self) -> int:
        """How many waits for XID events the thread has finished (tests wait on it)."""
        with self._xid_lock:
            return self._xid_waits

    def start(self) -> None:
        """Start counting XID events in a daemon thread (calling it again does nothing)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._xid_loop, name="razar-gpu-xid", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the XID thread and release NVML."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            if self._backend is not None:
                with contextlib.suppress(Exception):
                    self._backend.close()
                self._backend = None

    def pause(self, timeout: float = 5.0) -> bool:
        """Release NVML (scrapes and XID thread) until `resume`, e.g. for a GPU reset.

        Returns once both have let go; False if the XID thread did not within ``timeout``.
        While paused, scrapes say ``razar_gpu_nvml_available 0``.
        """
        self._paused.set()
        with self._lock:
            if self._backend is not None:
                with contextlib.suppress(Exception):
                    self._backend.close()
                self._backend = None
        return self._xid_released.wait(timeout)

    def resume(self) -> None:
        """Use NVML again after `pause`."""
        self._paused.clear()
        with self._lock:
            self._next_try = 0.0

    def _xid_loop(self) -> None:
        backend: GpuBackend | None = None
        reason: str | None = None
        try:
            while not self._stopping.is_set():
                if self._paused.is_set():
                    if backend is not None:
                        with contextlib.suppress(Exception):
                            backend.close()
                        backend = None
                    self._xid_released.set()
                    self._stopping.wait(0.1)
                    continue
                if backend is None:
                    try:
                        backend = self._factory()
                        self._xid_released.clear()
                        reason = None
                    except Exception as e:
                        if str(e) != reason:
                            log.debug("XID counting waits for NVML: %s", e)
                            reason = str(e)
                        self._stopping.wait(self._retry_after)
                        continue
                try:
                    events = backend.wait_xid(self._xid_wait)
                except GpuError as e:
                    log.info("XID counting stopped until NVML answers again: %s", e)
                    with contextlib.suppress(Exception):
                        backend.close()
                    backend = None
                    self._xid_released.set()
                    self._stopping.wait(self._retry_after)
                    continue
                with self._xid_lock:
                    for ev in events:
                        key = (str(ev.index), ev.uuid, str(ev.code))
                        self._xids[key] = self._xids.get(key, 0) + 1
                    self._xid_waits += 1
                for ev in events:
                    log.warning("GPU %d (%s) reported XID %d", ev.index, ev.uuid, ev.code)
        finally:
            if backend is not None:
                with contextlib.suppress(Exception):
                    backend.close()
            self._xid_released.set()

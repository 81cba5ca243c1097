"""The NVML seam (agents/gpu.py) and the GPU metrics collector (agents/gpu_metrics.py).

The GPU is absent here: the fake stands in for it, and the real `Nvml` is checked
for how it degrades when the NVML library is not found.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agents.gpu import (
    ENV_FAKE,
    NVML_FALLBACKS,
    RECOVERY_ACTION_CODES,
    FakeNvml,
    GpuBackend,
    GpuDevice,
    GpuProcess,
    GpuReadError,
    GpuUnavailable,
    Nvml,
    open_backend,
    parse_recovery_action,
    recovery_action_code,
    recovery_action_from_code,
)
from agents.gpu_metrics import GpuCollector
from razard.metrics import Metrics

UUID0 = "GPU-00000000-1111-2222-3333-444444444444"
UUID1 = "GPU-55555555-6666-7777-8888-999999999999"


def _nvml_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


needs_no_nvml = pytest.mark.skipif(_nvml_present(), reason="this machine has a working NVML")


def _two_gpus(dead_pid: int) -> dict[str, Any]:
    return {
        "gpus": [
            {
                "uuid": UUID0,
                "name": "NVIDIA H100 80GB HBM3",
                "utilization": 0.75,
                "memory_used": 1 << 30,
                "memory_total": 80 << 30,
                "temperature": 61,
                "recovery_action": "gpu_reset",
                "processes": [
                    {"pid": os.getpid(), "used_memory": 512 << 20},
                    {"pid": dead_pid, "used_memory": 1 << 20},
                ],
            },
            {"uuid": UUID1, "name": "NVIDIA H100 80GB HBM3", "recovery_action": 2},
        ]
    }


@pytest.fixture
def dead_pid() -> int:
    """A pid that ran and is gone now."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _scrape(collector: GpuCollector) -> dict[str, Any]:
    """Families by name, parsed back from the text exposition format."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def _values(family: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


# --------------------------------------------------------------------------- the fake


def test_fake_reads_what_the_description_says(dead_pid: int) -> None:
    """Each reading of the fake is the value in its description; absent ones are None."""
    fake = FakeNvml(_two_gpus(dead_pid))
    assert fake.devices() == [
        GpuDevice(0, UUID0, "NVIDIA H100 80GB HBM3"),
        GpuDevice(1, UUID1, "NVIDIA H100 80GB HBM3"),
    ]
    assert fake.utilization(0) == 0.75
    assert fake.memory(0) == (1 << 30, 80 << 30)
    assert fake.temperature(0) == 61.0
    assert fake.recovery_action(0) == "gpu_reset"
    assert fake.recovery_action(1) == "node_reboot"  # given as NVML's number
    assert (fake.utilization(1), fake.memory(1), fake.temperature(1)) == (None, None, None)
    assert fake.processes(1) == []


def test_fake_reports_only_processes_that_are_alive(dead_pid: int) -> None:
    """A process whose pid is gone is no longer on the fake GPU."""
    fake = FakeNvml(_two_gpus(dead_pid))
    assert fake.processes(0) == [GpuProcess(os.getpid(), 512 << 20)]


def test_fake_lost_gpu_fails_each_reading_but_is_listed() -> None:
    """A lost GPU is listed without a UUID and every reading of it raises GpuReadError."""
    fake = FakeNvml({"gpus": [{"uuid": UUID0, "lost": True, "temperature": 50}]})
    assert fake.devices() == [GpuDevice(0, "", "")]
    with pytest.raises(GpuReadError, match="GPU is lost"):
        fake.temperature(0)
    with pytest.raises(GpuReadError, match="no such GPU"):
        fake.temperature(3)


def test_fake_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    """A backend opened from RAZAR_NVML_FAKE sees a change of the file at its next call."""
    path = tmp_path / "gpus.json"
    _write(path, {"gpus": [{"uuid": UUID0, "recovery_action": "gpu_reset"}]})
    backend = open_backend({ENV_FAKE: str(path)})
    assert isinstance(backend, FakeNvml)
    assert backend.recovery_action(0) == "gpu_reset"
    _write(path, {"gpus": [{"uuid": UUID0, "recovery_action": "none"}]})
    assert backend.recovery_action(0) == "none"


def test_fake_file_missing_or_malformed_is_unavailable(tmp_path: Path) -> None:
    """A missing or malformed fake file makes NVML unavailable, naming the variable and key."""
    with pytest.raises(GpuUnavailable, match=f"{ENV_FAKE} file .*: no such file"):
        open_backend({ENV_FAKE: str(tmp_path / "absent.json")})
    bad = tmp_path / "bad.json"
    _write(bad, {"gpus": [{"utilization": 50}]})
    with pytest.raises(GpuUnavailable, match=r"gpus\[0\]\.utilization: expected a ratio"):
        open_backend({ENV_FAKE: str(bad)})
    _write(bad, {"gpus": [{"recovery_action": "melt"}]})
    with pytest.raises(GpuUnavailable, match=r"gpus\[0\]\.recovery_action: not a recovery"):
        open_backend({ENV_FAKE: str(bad)})


def test_fake_can_say_nvml_is_unavailable(tmp_path: Path) -> None:
    """The fake's "unavailable" key plays a node whose driver is not loaded."""
    path = tmp_path / "gpus.json"
    _write(path, {"unavailable": "NVIDIA driver not loaded", "gpus": []})
    with pytest.raises(GpuUnavailable, match="driver not loaded"):
        open_backend({ENV_FAKE: str(path)})


def test_fake_xids_are_returned_once_each() -> None:
    """wait_xid returns each XID entry once; two equal entries are two events."""
    fake = FakeNvml(
        {"gpus": [{"uuid": UUID0, "xid": [{"code": 79, "time": 5}, {"code": 79, "time": 5}]}]}
    )
    events = fake.wait_xid(0)
    assert [(e.index, e.uuid, e.code, e.time) for e in events] == [(0, UUID0, 79, 5.0)] * 2
    assert fake.wait_xid(0) == []


# --------------------------------------------------------------------------- the real one


@needs_no_nvml
def test_real_nvml_without_driver_is_unavailable() -> None:
    """On a node without the NVIDIA driver, opening NVML says why and raises nothing else."""
    with pytest.raises(GpuUnavailable, match=r"NVML library not found \(no NVIDIA driver\)"):
        Nvml()
    with pytest.raises(GpuUnavailable, match="NVML library not found"):
        open_backend({})


# --------------------------------------------------------------------------- recovery actions


def test_recovery_actions_follow_nvml_numbers() -> None:
    """Each NVML_GPU_RECOVERY_ACTION_* the installed nvidia-ml-py defines has razar's number
    for that action, and each number maps to its name and back. Releases the pin allows
    define fewer (12.570 the first five, 13.610 IMEX, 13.615 the rest) or none: razar's
    table, not the bindings, is what it reads the driver's numbers with."""
    defined = {
        name: getattr(pynvml, f"NVML_GPU_RECOVERY_ACTION_{name.upper()}")
        for name in RECOVERY_ACTION_CODES
        if hasattr(pynvml, f"NVML_GPU_RECOVERY_ACTION_{name.upper()}")
    }
    assert defined == {name: RECOVERY_ACTION_CODES[name] for name in defined}
    for name, code in RECOVERY_ACTION_CODES.items():
        assert recovery_action_from_code(code) == name
        assert parse_recovery_action(code) == name
        assert parse_recovery_action(name.upper()) == name
    assert recovery_action_from_code(99) == "unknown"
    assert recovery_action_code("unknown") == -1
    with pytest.raises(ValueError):
        parse_recovery_action(True)


def test_nvml_fallback_numbers_are_the_bindings_numbers() -> None:
    """The numbers agents.gpu falls back on where older nvidia-ml-py lacks a constant are
    the ones the bindings define where they have it (all of them in the newest release)."""
    defined = {n: getattr(pynvml, n) for n in NVML_FALLBACKS if hasattr(pynvml, n)}
    assert defined == {n: NVML_FALLBACKS[n] for n in defined}


# --------------------------------------------------------------------------- the collector


def test_collector_reports_each_gpu_with_dcgm_like_labels(dead_pid: int) -> None:
    """Each GPU's readings appear under its gpu/uuid/modelName labels; unsupported ones not."""
    collector = GpuCollector(lambda: FakeNvml(_two_gpus(dead_pid)))
    fams = _scrape(collector)
    l0 = (("gpu", "0"), ("modelName", "NVIDIA H100 80GB HBM3"), ("uuid", UUID0))
    l1 = (("gpu", "1"), ("modelName", "NVIDIA H100 80GB HBM3"), ("uuid", UUID1))
    assert _values(fams["razar_gpu_utilization_ratio"]) == {l0: 0.75}
    assert _values(fams["razar_gpu_memory_used_bytes"]) == {l0: float(1 << 30)}
    assert _values(fams["razar_gpu_memory_total_bytes"]) == {l0: float(80 << 30)}
    assert _values(fams["razar_gpu_temperature_celsius"]) == {l0: 61.0}
    assert _values(fams["razar_gpu_recovery_action"]) == {l0: 1.0, l1: 2.0}
    assert fams["razar_gpu_xid_errors"].type == "counter"
    assert fams["razar_gpu_xid_errors"].samples == []
    assert _values(fams["razar_gpu_nvml_available"]) == {(): 1.0}


def test_collector_leaves_out_a_failing_reading_for_that_gpu_only() -> None:
    """A lost GPU has no series; the other GPU's series are all there."""
    collector = GpuCollector(
        lambda: FakeNvml(
            {"gpus": [{"lost": True, "temperature": 90}, {"uuid": UUID1, "temperature": 40}]}
        )
    )
    fams = _scrape(collector)
    temps = _values(fams["razar_gpu_temperature_celsius"])
    assert list(temps.values()) == [40.0]
    assert ("uuid", UUID1) in next(iter(temps))
    assert _values(fams["razar_gpu_nvml_available"]) == {(): 1.0}


@needs_no_nvml
def test_collector_without_gpu_yields_no_gpu_series(caplog: pytest.LogCaptureFixture) -> None:
    """No driver here: no per-GPU series, razar_gpu_nvml_available 0, the reason logged once."""
    collector = GpuCollector(Nvml)
    with caplog.at_level(logging.INFO, logger="agents.gpu_metrics"):
        first = _scrape(collector)
        second = _scrape(collector)
    for fams in (first, second):
        assert "razar_gpu_utilization_ratio" not in fams
        assert "razar_gpu_xid_errors" not in fams
        assert _values(fams["razar_gpu_nvml_available"]) == {(): 0.0}
    reasons = [r.getMessage() for r in caplog.records if r.name == "agents.gpu_metrics"]
    assert reasons == ["GPU metrics off: NVML library not found (no NVIDIA driver)"]


def test_collector_registers_beside_razards_metrics(tmp_path: Path) -> None:
    """razard's registry takes the collector and serves its series with razard's own."""
    path = tmp_path / "gpus.json"
    _write(path, {"gpus": [{"uuid": UUID0, "utilization": 0.25}]})
    metrics = Metrics("test")
    metrics.registry.register(GpuCollector(lambda: open_backend({ENV_FAKE: str(path)})))
    text = generate_latest(metrics.registry).decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert "razar_component_up" in fams
    assert [s.value for s in fams["razar_gpu_utilization_ratio"].samples] == [0.25]


def test_collector_follows_nvml_going_away(tmp_path: Path) -> None:
    """When NVML stops answering, the GPU series go and razar_gpu_nvml_available says 0."""
    path = tmp_path / "gpus.json"
    _write(path, {"gpus": [{"uuid": UUID0, "utilization": 0.5}]})
    collector = GpuCollector(lambda: open_backend({ENV_FAKE: str(path)}), retry_after=0)
    assert "razar_gpu_utilization_ratio" in _scrape(collector)
    _write(path, {"unavailable": "NVIDIA driver not loaded"})
    fams = _scrape(collector)
    assert "razar_gpu_utilization_ratio" not in fams
    assert _values(fams["razar_gpu_nvml_available"]) == {(): 0.0}
    _write(path, {"gpus": [{"uuid": UUID0, "utilization": 0.5}]})
    assert _values(_scrape(collector)["razar_gpu_nvml_available"]) == {(): 1.0}


@pytest.fixture
def xid_collector(tmp_path: Path) -> Iterator[tuple[GpuCollector, Path]]:
    """A started collector counting the XIDs of a fake file; stopped afterwards."""
    path = tmp_path / "gpus.json"
    _write(
        path,
        {
            "gpus": [
                {"uuid": UUID0, "xid": [{"code": 79, "time": 1}, {"code": 79, "time": 2}]},
                {"uuid": UUID1, "xid": [{"code": 48, "time": 1}]},
            ]
        },
    )
    collector = GpuCollector(lambda: open_backend({ENV_FAKE: str(path)}), xid_wait=0.05)
    collector.start()
    try:
        yield collector, path
    finally:
        collector.stop()


def _xids(collector: GpuCollector) -> dict[tuple[str, str, str], float]:
    fam = _scrape(collector).get("razar_gpu_xid_errors")
    if fam is None:
        return {}
    return {
        (s.labels["gpu"], s.labels["uuid"], s.labels["xid"]): s.value
        for s in fam.samples
        if s.name == "razar_gpu_xid_errors_total"
    }


def _waits_after(collector: GpuCollector, n: int) -> None:
    """Let the XID thread finish ``n`` more waits (each a full look at the fake file)."""
    target = collector.xid_waits + n
    deadline = time.monotonic() + 30
    while collector.xid_waits < target:
        assert time.monotonic() < deadline, "the XID thread stopped waiting"
        time.sleep(0.01)


@pytest.mark.timeout(60)
def test_xid_events_are_counted_by_code_exactly_once(
    xid_collector: tuple[GpuCollector, Path],
) -> None:
    """Each XID event is counted once under its GPU and code, however often it is scraped."""
    collector, path = xid_collector
    _waits_after(collector, 3)
    expected = {("0", UUID0, "79"): 2.0, ("1", UUID1, "48"): 1.0}
    assert _xids(collector) == expected
    _waits_after(collector, 3)
    assert _xids(collector) == expected
    doc = json.loads(path.read_text())
    doc["gpus"][1]["xid"].append({"code": 48, "time": 9})
    _write(path, doc)
    _waits_after(collector, 3)
    assert _xids(collector) == {("0", UUID0, "79"): 2.0, ("1", UUID1, "48"): 2.0}


@pytest.mark.timeout(60)
def test_pause_releases_nvml_until_resume(tmp_path: Path) -> None:
    """While paused, neither the scrapes nor the XID thread hold a backend open."""
    path = tmp_path / "gpus.json"
    _write(path, {"gpus": [{"uuid": UUID0, "utilization": 0.5}]})
    open_now: list[FakeNvml] = []

    class Tracked(FakeNvml):
        def close(self) -> None:
            if self in open_now:
                open_now.remove(self)
            super().close()

    def factory() -> GpuBackend:
        backend = Tracked(path=path)
        open_now.append(backend)
        return backend

    collector = GpuCollector(factory, xid_wait=0.05)
    collector.start()
    try:
        _scrape(collector)
        _waits_after(collector, 1)
        assert len(open_now) == 2  # one for the scrapes, one for the XID thread
        assert collector.pause()
        assert open_now == []
        assert _values(_scrape(collector)["razar_gpu_nvml_available"]) == {(): 0.0}
        assert open_now == []
        collector.resume()
        assert _values(_scrape(collector)["razar_gpu_nvml_available"]) == {(): 1.0}
    finally:
        collector.stop()
    assert open_now == []

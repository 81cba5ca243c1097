"""The memory-saving stand-ins behave as what they replace (issue 18's footprint).

`LazyEvent` against `asyncio.Event`; the state family's text and samples against
prometheus_client's own exposition of the same registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from razard import storage, unitfile
from razard.aio import LazyEvent
from razard.config import ComponentConfig, unit_name_for
from razard.metrics import STATES, Metrics, _Family
from razard.quarantine import QuarantineStore


@pytest.mark.parametrize("make", [asyncio.Event, LazyEvent])
async def test_event_wakes_every_waiter_and_blocks_again_after_clear(
    make: type[asyncio.Event],
) -> None:
    ev = make()
    assert not ev.is_set()
    waiters = [asyncio.create_task(ev.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    ev.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert ev.is_set() and await ev.wait() is True  # set: returns at once
    await _blocks_again_after_clear(ev)


@pytest.mark.parametrize("make", [asyncio.Event, LazyEvent])
async def test_cancelled_waiter_leaves_the_others_waiting(make: type[asyncio.Event]) -> None:
    ev = make()
    gone, kept = asyncio.create_task(ev.wait()), asyncio.create_task(ev.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    ev.set()
    assert await asyncio.wait_for(kept, 5) is True
    assert "set" in repr(ev)


@pytest.mark.parametrize("make", [asyncio.Event, LazyEvent])
async def test_waiters_come_and_go_one_and_several_at_a_time(make: type[asyncio.Event]) -> None:
    ev = make()
    alone = asyncio.create_task(ev.wait())
    await asyncio.sleep(0)
    alone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await alone
    first, second = asyncio.create_task(ev.wait()), asyncio.create_task(ev.wait())
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    third = asyncio.create_task(ev.wait())
    await asyncio.sleep(0)
    assert not second.done() and not third.done()
    ev.set()
    assert list(await asyncio.gather(second, third)) == [True, True]
    await _blocks_again_after_clear(ev)
    assert "waiters:0" in repr(ev) or make is asyncio.Event


async def _blocks_again_after_clear(ev: asyncio.Event) -> None:
    """Cleared, ``ev`` holds a new waiter until it is set again."""
    ev.clear()
    waiter = asyncio.create_task(ev.wait())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    ev.set()
    assert await asyncio.wait_for(waiter, 5) is True


def _without_process_lines(text: str) -> list[str]:
    # process_*/python_* and *_created lines change between two renders
    skip: tuple[str, ...] = ("process_", "python_", "# HELP process_", "# TYPE process_")
    skip += ("# HELP python_", "# TYPE python_")
    return [
        line for line in text.splitlines() if not line.startswith(skip) and "_created" not in line
    ]


def test_state_family_writes_what_prometheus_client_writes() -> None:
    m = Metrics("0")
    odd = 'we"ird\\name'
    for name, state in (("a", "healthy"), (odd, "failed"), ("c", "quarantined"), ("d", "?")):
        m.set_state(name, "crown", state)
    m.set_state("a", "crown", "restarting")
    m.forget("c", "crown")
    ours = m.render().decode()
    assert _without_process_lines(ours) == _without_process_lines(
        generate_latest(m.registry).decode()
    )
    sample = m.registry.get_sample_value
    assert sample("razar_component_state", {"component": "a", "state": "restarting"}) == 1.0
    assert sample("razar_component_state", {"component": "a", "state": "healthy"}) == 0.0
    assert sample("razar_component_state", {"component": odd, "state": "failed"}) == 1.0
    assert sample("razar_component_state", {"component": "c", "state": "quarantined"}) is None
    assert all(
        sample("razar_component_state", {"component": "d", "state": s}) == 0.0 for s in STATES
    )
    lines = [ln for ln in ours.splitlines() if ln.startswith("razar_component_state{")]
    assert len(lines) == 3 * len(STATES)


def test_component_families_write_what_prometheus_client_writes() -> None:
    """Series made without per-bucket label texts (``le`` put in where it sorts) and sharing
    label texts between families render, and collect, as prometheus_client would."""
    m = Metrics("0")
    odd = 'we"ird\\na,me'
    for name in ("a", odd, "c"):
        m.set_state(name, "crown", "healthy")
        m.up.labels(name, "crown").set(1)
        m.healthy.labels(name, "crown").set(1)
        m.probe_duration.labels(name, "tcp").observe(0.0004)
        m.probe_duration.labels(name, "tcp").observe(3.0)
        m.probes.labels(name, "tcp", "ok").inc()
        m.probes.labels(name, "tcp", "failed")
    m.probe_failures.labels(odd, "tcp").inc()
    m.restarts.labels(odd, "crown").inc(2)
    # label names on both sides of "le", before it only, after it only
    for names in (["alpha", "zulu"], ["alpha"], ["zulu", "mike"]):
        fam = _Family("histogram", "t_" + "_".join(names), "doc", names, m.registry, (0.5, 2))
        fam.labels(*(f"v{i}," for i in range(len(names)))).observe(1.0)
    m.forget("c", "crown")
    ours = m.render().decode()
    theirs = generate_latest(m.registry).decode()
    assert _without_process_lines(ours) == _without_process_lines(theirs)
    assert [ln for ln in ours.splitlines() if "_created" in ln] == [
        ln for ln in theirs.splitlines() if "_created" in ln
    ]
    sample = m.registry.get_sample_value
    bucket = {"component": odd, "probe": "tcp", "le": "0.001"}
    assert sample("razar_probe_duration_seconds_bucket", bucket) == 1.0
    assert sample("razar_probe_duration_seconds_count", {"component": odd, "probe": "tcp"}) == 2
    assert sample("razar_component_restarts_total", {"component": odd, "layer": "crown"}) == 2
    assert sample("razar_component_up", {"component": "c", "layer": "crown"}) is None
    assert sample("t_zulu_mike_bucket", {"zulu": "v0,", "mike": "v1,", "le": "+Inf"}) == 1.0


def test_metrics_server_starts_without_a_reverse_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics server binds and serves without asking the resolver for its host name
    (HTTPServer's getfqdn: a lookup that can stall the start and loads the idna codec)."""

    def no_lookup(name: str = "") -> str:
        raise AssertionError(f"reverse lookup of {name!r}")

    monkeypatch.setattr(socket, "getfqdn", no_lookup)
    m = Metrics("0")
    m.up.labels("a", "crown").set(1)
    port = m.serve("127.0.0.1", 0)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    assert 'razar_component_up{component="a",layer="crown"} 1.0' in body


@contextlib.contextmanager
def interning() -> Iterator[list[str]]:
    """The names `sys.intern` is asked for inside the block."""
    names: list[str] = []
    real = sys.intern

    def recording(name: str) -> str:
        names.append(name)
        return real(name)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(sys, "intern", recording)
        yield names


def test_appends_and_unit_writes_intern_no_names(tmp_path: Path) -> None:
    """Every event is an append to razar.log, and each owned component a unit file: none may
    make a `Path` of a new name. pathlib interns each name it parses, and the interpreter's
    table of interned strings takes a slot for each new one (freed names leave theirs used
    until the table is resized): 500 components' names, or a few hundred events, made that
    table double (0.5 MiB more, for good)."""
    log = tmp_path / "state" / "razar.log"
    storage.append_jsonl(log, {"event": "first"})  # the directory made, the file created
    cfg = ComponentConfig(
        name="app",
        layer="crown",
        priority=0,
        unit=unit_name_for("app"),
        command=("/usr/bin/app",),
        environment=(("A", "1"),),
    )
    units = tmp_path / "units"
    with interning() as interned:
        for i in range(3):
            storage.append_jsonl(log, {"event": f"e{i}"})
        assert unitfile.write_unit(units, cfg, "/run/razard/heartbeat/crown/app")
        assert not unitfile.write_unit(units, cfg, "/run/razard/heartbeat/crown/app")
        assert unitfile.remove_unit(units, cfg.unit)
    assert interned == []
    assert len(log.read_text().splitlines()) == 4
    assert (tmp_path / "state" / ".razar.log.lock").exists()


def test_the_runner_loops_quarantine_check_interns_no_names(tmp_path: Path) -> None:
    """Every turn of every runner's loop asks whether its component is quarantined: a Path of
    ``<name>.json`` each time would take a slot of the interned-string table each time (see
    above), and a node restarting components for weeks would double that table."""
    store = QuarantineStore(tmp_path)
    store.put(
        "held", unit="razar-held.service", layer="crown", reason="t", last_error="x", attempts=1
    )
    with interning() as interned:
        answers = [store.is_quarantined(n) for n in ("held", "free", "held")]
    assert answers == [True, False, True]
    assert interned == []


def test_series_made_in_the_same_millisecond_share_one_created_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every component's counters and histograms made at start keep one ``_created`` string,
    not one each; a series made a millisecond later has its own time."""
    import time

    now = [1_700_000_000.1234567]
    monkeypatch.setattr(time, "time", lambda: now[0])
    m = Metrics("0")
    made = [m.restarts.labels(f"c{i}", "crown") for i in range(50)]
    made += [m.probe_duration.labels(f"c{i}", "tcp") for i in range(50)]
    assert len({id(s.created_text) for s in made}) == 1
    assert made[0].created == 1_700_000_000.123
    now[0] += 0.001
    later = m.restarts.labels("late", "crown")
    assert later.created == 1_700_000_000.124 and later.created_text is not made[0].created_text

"""The layer agents' decisions on a fake clock: pulse, one chakra_down per outage, alignment."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry

from agents.chakra import Chakra, ChakraCollector
from agents.healer import HealerMetrics, HealerRunner
from razard.config import parse_config
from razard.journal import EventLog

T0 = 1_000_000.0


class Host:
    """Plays the supervisor: the component's status decides whether its beat is judged."""

    def __init__(self) -> None:
        self.status = "healthy"
        self.healthy_since: float | None = T0
        self.escalated: list[tuple[str, str]] = []

    def beat_grace(self, component: str) -> tuple[bool, float | None]:
        if self.status == "starting":
            return False, None
        return True, self.healthy_since if self.status == "healthy" else None

    def escalate(self, component: str, kind: str, error: str, *, healer_tried: bool) -> bool:
        self.escalated.append((component, kind))
        return True

    @contextlib.asynccontextmanager
    async def hold(self, units: Iterable[str] = ()) -> AsyncIterator[set[str]]:
        yield set(units)

    def main_pid(self, unit: str) -> int:
        return 0

    async def check_unit(self, unit: str, pid: int = 0) -> tuple[bool, str]:
        return True, f"{unit} active"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path) -> tuple[Chakra, Host, Clock, Path]:
    config = parse_config(
        {
            "razard": {"state_dir": str(tmp_path / "state"), "bus": "user"},
            "chakra": {
                "runtime_dir": str(tmp_path / "run"),
                "heartbeat_interval": 1.0,
                # crown's sensor beats from a task this test does not run
                "crown": {"enabled": False},
            },
            "component": [
                {
                    "name": "api",
                    "layer": "throat",
                    "priority": 10,
                    "heartbeat": True,
                    "command": ["/bin/true"],
                }
            ],
        },
        tmp_path / "razard.toml",
        env={},
    )
    log = tmp_path / "razar.log"
    events = EventLog(log, socket_path=str(tmp_path / "no-journald"))
    runner = HealerRunner(
        config.chakra,
        state_dir=tmp_path / "state",
        bus="user",
        config_path=tmp_path / "razard.toml",
        events=events,
        metrics=HealerMetrics(CollectorRegistry()),
    )
    clock, host = Clock(), Host()
    chakra = Chakra(config, events, runner, host, env={}, clock=clock)
    return chakra, host, clock, log


def downs(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [r for r in rows if r.get("event") == "chakra_down"]


def scrape(chakra: Chakra) -> dict[str, float]:
    out = {}
    for fam in ChakraCollector(lambda: chakra).collect():
        for s in fam.samples:
            key = s.name + "".join(f"{{{v}}}" for v in s.labels.values())
            out[key] = s.value
    return out


def test_a_beating_layer_is_up_and_aligned(tmp_path: Path) -> None:
    """A component beating within its 3 s window keeps its layer up and the node aligned."""
    chakra, _, clock, log = make(tmp_path)
    for _ in range(10):
        clock.now += 1.0
        chakra._on_beat("throat", "api", clock.now - 0.5)
        chakra.evaluate()
    m = scrape(chakra)
    assert m["chakra_pulse_hz{throat}"] == 2.0
    assert m["razar_chakra_up{throat}"] == 1.0
    assert m["chakra_alignment"] == 1.0
    assert "chakra_pulse_hz{root}" not in m  # no sources: not configured, no series
    assert downs(log) == []


def test_silence_raises_one_chakra_down_and_alignment_stays_zero_while_it_restarts(
    tmp_path: Path,
) -> None:
    """A silent component takes its layer down once, goes to its ladder, and the node stays
    misaligned through the restart until the component beats again; still silent a window
    after its restart, it goes to its ladder again within the same outage."""
    chakra, host, clock, log = make(tmp_path)
    chakra._on_beat("throat", "api", clock.now)
    for _ in range(10):  # 10 s of silence, evaluated every second
        clock.now += 1.0
        chakra.evaluate()
    assert len(downs(log)) == 1
    assert "heartbeat api" in str(downs(log)[0]["message"])
    assert host.escalated == [("api", "heartbeat")]  # handed to the ladder once, not per tick
    assert scrape(chakra)["chakra_alignment"] == 0.0

    host.status = "starting"  # the ladder restarts it: its beat is not judged while it starts
    clock.now += 1.0
    chakra.evaluate()
    m = scrape(chakra)
    assert m["razar_chakra_up{throat}"] == 0.0
    assert m["chakra_alignment"] == 0.0
    assert "chakra_pulse_hz{throat}" not in m

    host.status, host.healthy_since = "healthy", clock.now  # back up, but still silent
    for _ in range(5):
        clock.now += 1.0
        chakra.evaluate()
        assert scrape(chakra)["chakra_alignment"] == 0.0  # a restart's grace is not a beat
    assert len(downs(log)) == 1  # the same outage
    assert host.escalated == [("api", "heartbeat")] * 2  # silent a window after its restart

    chakra._on_beat("throat", "api", clock.now)
    clock.now += 0.5
    chakra.evaluate()
    assert scrape(chakra)["chakra_alignment"] == 1.0
    clock.now += 10.0  # a second outage is a second event
    chakra.evaluate()
    assert len(downs(log)) == 2


def test_chakra_up_counts_the_outage_from_the_last_good_beat(tmp_path: Path) -> None:
    """Silent from t=0, down past the 3 s window, beating again at t=5.5: a 5.5 s outage,
    not the time since chakra_down was raised."""
    chakra, _, clock, log = make(tmp_path)
    start = clock.now
    chakra._on_beat("throat", "api", start)
    for _ in range(5):
        clock.now += 1.0
        chakra.evaluate()
    assert len(downs(log)) == 1
    clock.now = start + 5.5
    chakra._on_beat("throat", "api", clock.now)
    chakra.evaluate()
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    ups = [e for e in rows if e.get("event") == "chakra_up"]
    assert ups and ups[0]["outage_s"] == 5.5, ups
    assert "after 5.5s" in str(ups[0]["message"])

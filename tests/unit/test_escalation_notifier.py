"""The notifier's decisions over a scripted journal and clock (no journald, no targets)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from razard.config import parse_config
from razard.escalation.history import read_escalations
from razard.escalation.notifier import EscalationNotifier, OwnEntries
from razard.journal import EventLog


class ScriptedJournal:
    """Stands in for JournalSource: hands out what the test queued, once."""

    def __init__(self) -> None:
        self.queued: list[dict[str, Any]] = []
        self.commits = 0
        self.last_read = 0

    async def read_new(
        self, max_entries: int | None = None, *, commit: bool = True, keep: Any = None
    ) -> Any:
        batch, self.queued = self.queued, []
        self.last_read = len(batch)
        return [e for e in batch if keep is None or keep(e)]

    def commit(self) -> None:
        self.commits += 1


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def line(msg: str, ts: float, comp: str = "vllm") -> dict[str, Any]:
    return {
        "MESSAGE": msg,
        "SYSLOG_IDENTIFIER": f"razar-{comp}",
        "RAZAR_COMPONENT": comp,
        "_SYSTEMD_UNIT": f"razar-{comp}.service",
        "_UID": "1000",  # the component's user
        "PRIORITY": "3",
        "_HOSTNAME": "gpu-1",
        "__REALTIME_TIMESTAMP": str(int(ts * 1e6)),
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[EscalationNotifier, ScriptedJournal, Clock]:
    config = parse_config(
        {
            "razard": {"state_dir": str(tmp_path)},
            "component": [
                {"name": "vllm", "layer": "sacral", "priority": 1, "command": ["/bin/true"]}
            ],
            "escalation": {"threshold": 3, "window": 60.0, "repeat_interval": 600.0},
        },
        tmp_path / "razard.toml",
        env={},
    )
    clock = Clock()
    n = EscalationNotifier(
        config.escalation,
        tmp_path,
        lambda: config.components,
        EventLog(None, socket_path=str(tmp_path / "no-journald")),
        clock=clock,
    )
    journal = ScriptedJournal()
    n.journal = journal  # type: ignore[assignment]
    return n, journal, clock


async def test_a_crash_loop_is_one_alert_that_repeats_only_while_it_recurs(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """Nine identical errors make one alert (count 9); it repeats after the interval only if
    seen again; a different error is its own alert."""
    n, journal, clock = setup
    t = clock.now
    journal.queued = [line(f"OOM killed pid {100 + i}", t + i) for i in range(9)]
    journal.queued.append(line("disk full on /dev/sda1", t + 10))
    async with n.client() as client:
        r = await n.run_once(client)
        assert len(r.raised) == 1 and journal.commits == 1
        (alert,) = n.book.alerts.values()
        assert (alert.count, alert.signature) == (9, "OOM killed pid <n>")
        clock.now += 601
        assert (await n.run_once(client)).raised == []  # nothing new: no repeat
        journal.queued = [line("OOM killed pid 999", clock.now)]
        clock.now += 1
        r = await n.run_once(client)
        assert len(r.raised) == 1  # seen again past the interval: repeated
    first, repeat = read_escalations(tmp_path)
    assert repeat["repeat_of"] == first["id"] and first["count"] == 3
    assert first["targets"] == {} and not first["delivered"]  # no target configured
    assert first["sample"] == "OOM killed pid 102" and first["reason"] == "recurring"


async def test_recovery_resolves_and_a_new_notifier_remembers_firing_alerts(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """A quarantine survives a restart of the notifier (no duplicate); healthy resolves it."""
    n, journal, clock = setup
    quarantine = {
        "SYSLOG_IDENTIFIER": "razard",
        "_UID": "0",
        "RAZAR_EVENT": "operator_alert",
        "RAZAR_COMPONENT": "vllm",
        "MESSAGE": "vllm quarantined: token=abc123 leaked",
        "PRIORITY": "1",
    }
    journal.queued = [quarantine]
    async with n.client() as client:
        assert len((await n.run_once(client)).raised) == 1
    n.unlock()

    again = EscalationNotifier(
        n.cfg, tmp_path, n.components, n.events, clock=clock
    )  # razard restarted
    journal2 = ScriptedJournal()
    again.journal = journal2  # type: ignore[assignment]
    healthy = {
        "SYSLOG_IDENTIFIER": "razard",
        "_UID": "0",
        "RAZAR_EVENT": "state_healthy",
        "RAZAR_COMPONENT": "vllm",
    }
    journal2.queued = [quarantine, healthy]
    async with again.client() as client:
        r = await again.run_once(client)
    assert r.raised == [] and len(r.resolved) == 1
    raised, resolved = read_escalations(tmp_path)
    assert resolved["resolves"] == raised["id"] and resolved["reason"] == "resolved"
    assert "abc123" not in (tmp_path / "operator_escalations.jsonl").read_text()
    assert again.book.alerts == {}


def test_without_a_cursor_every_start_reads_from_the_first_start(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """A razard killed before its notifier saved a cursor must not skip the events before its
    next start: the journal is read from the first start's time until a cursor exists."""
    n, _, _ = setup
    state = tmp_path / "fresh"
    first = EscalationNotifier(n.cfg, state, n.components, n.events, since=1000.0)
    later = EscalationNotifier(n.cfg, state, n.components, n.events, since=2000.0)
    assert first.journal.since == later.journal.since == 1000.0
    (state / "escalation" / "journal.cursor").write_text("s=abc")
    after = EscalationNotifier(n.cfg, state, n.components, n.events, since=3000.0)
    assert after.journal.since == 3000.0  # the cursor decides from now on


def test_only_razards_own_events_and_its_components_output_are_read() -> None:
    """OwnEntries keeps razard's events (its identifier, sent by root) and component output
    by journald's trusted unit fields (system unit, user unit of root's manager, cgroup);
    another razard's events, other programs, and anything another user sent under
    razard's or a unit's name are dropped, and `matches()` is the selection for journalctl."""
    config = parse_config(
        {
            "component": [
                {"name": "vllm", "layer": "sacral", "priority": 1, "command": ["/bin/true"]},
                {"name": "gw", "layer": "throat", "priority": 2, "unit": "nginx.service"},
            ]
        },
        Path("razard.toml"),
        env={},
    )
    keep = OwnEntries(config.components, "razard-a")
    kept = [
        {"SYSLOG_IDENTIFIER": "razard-a", "_UID": "0", "RAZAR_EVENT": "operator_alert"},
        {"_SYSTEMD_UNIT": "nginx.service", "SYSLOG_IDENTIFIER": "nginx"},
        {
            "_SYSTEMD_USER_UNIT": "razar-vllm.service",
            "_SYSTEMD_OWNER_UID": "0",
            "SYSLOG_IDENTIFIER": "python3",
        },
        {"_SYSTEMD_CGROUP": "/sandbox/app.slice/razar-vllm.service", "MESSAGE": "x"},
    ]
    dropped = [
        {
            "SYSLOG_IDENTIFIER": "razard-b",
            "_UID": "0",
            "RAZAR_EVENT": "operator_alert",
            "RAZAR_COMPONENT": "vllm",
        },
        {"SYSLOG_IDENTIFIER": "razard-a", "_UID": "4242", "RAZAR_EVENT": "state_quarantined"},
        {"SYSLOG_IDENTIFIER": "razar-vllm", "_UID": "4242", "MESSAGE": "x"},
        {
            "_SYSTEMD_UNIT": "user@4242.service",
            "_SYSTEMD_USER_UNIT": "razar-vllm.service",
            "_SYSTEMD_OWNER_UID": "4242",
        },
        {
            "_SYSTEMD_CGROUP": "/user.slice/user-4242.slice/user@4242.service/"
            "app.slice/razar-vllm.service"
        },
        {"SYSLOG_IDENTIFIER": "nginx", "_SYSTEMD_UNIT": "other.service"},
        {"SYSLOG_IDENTIFIER": "razar-gw"},  # nginx.service is not a unit razard writes
        {"MESSAGE": "no identifier at all"},
    ]
    assert [keep(e) for e in kept] == [True] * len(kept)
    assert [keep(e) for e in dropped] == [False] * len(dropped)
    uids = sorted({"0", str(os.geteuid())})
    assert keep.matches() == [
        "SYSLOG_IDENTIFIER=razard-a",
        *(f"_UID={u}" for u in uids),
        "+",
        "_SYSTEMD_UNIT=nginx.service",
        "_SYSTEMD_UNIT=razar-vllm.service",
        "+",
        "_SYSTEMD_USER_UNIT=nginx.service",
        "_SYSTEMD_USER_UNIT=razar-vllm.service",
        *(f"_SYSTEMD_OWNER_UID={u}" for u in uids),
    ]


async def test_taking_the_lock_reads_what_the_previous_holder_left(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """A notifier built while another held the lock (razard starting beside the timer's
    --once run) sees that one's alerts once it gets the lock: no duplicate alert, and its
    saved book does not drop the other's."""
    other, journal, clock = setup
    waiting = EscalationNotifier(other.cfg, tmp_path, other.components, other.events, clock=clock)
    other.lock()
    other.journal = journal  # type: ignore[assignment]  # taking the lock read the real one
    journal.queued = [line(f"OOM killed pid {100 + i}", clock.now + i) for i in range(3)]
    async with other.client() as client:
        assert len((await other.run_once(client)).raised) == 1
    other.unlock()
    assert waiting.book.alerts == {}  # read before the other raised it
    waiting.lock()
    try:
        assert [a.signature for a in waiting.book.alerts.values()] == ["OOM killed pid <n>"]
    finally:
        waiting.unlock()


async def test_the_notifiers_client_never_goes_through_an_environment_proxy(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTP_PROXY in razard's environment does not route alerts (and their bearer tokens)
    through a proxy: the target itself gets the request, the proxy nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    n, _, _ = setup
    seen: dict[str, list[str]] = {"target": [], "proxy": []}

    def server(role: str) -> ThreadingHTTPServer:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                seen[role].append(self.headers.get("Authorization", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        s = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        return s

    target, proxy = server("target"), server("proxy")
    try:
        proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
        for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(var, proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with n.client() as client:
            r = await client.post(
                f"http://127.0.0.1:{target.server_address[1]}/alert",
                headers={"Authorization": "Bearer sk-proxy-canary"},
            )
        assert r.status_code == 200
        assert seen == {"target": ["Bearer sk-proxy-canary"], "proxy": []}
    finally:
        target.shutdown()
        proxy.shutdown()


async def test_a_reset_of_the_fleet_breaker_resolves_its_one_alert(
    setup: tuple[EscalationNotifier, ScriptedJournal, Clock], tmp_path: Path
) -> None:
    """fleet_breaker_tripped raises fleet:breaker; fleet_breaker_reset resolves it, and a
    reset seen where no breaker alert was raised (every other node) resolves nothing."""
    n, journal, clock = setup
    own = {"SYSLOG_IDENTIFIER": "razard", "_UID": "0", "_HOSTNAME": "gpu-1"}
    reset = {**own, "RAZAR_EVENT": "fleet_breaker_reset", "PRIORITY": "5"}
    journal.queued = [reset]
    async with n.client() as client:
        r = await n.run_once(client)
        assert r.raised == [] and r.resolved == []
        journal.queued = [{**own, "RAZAR_EVENT": "fleet_breaker_tripped", "PRIORITY": "1"}]
        assert len((await n.run_once(client)).raised) == 1
        clock.now += 5
        journal.queued = [reset]
        r = await n.run_once(client)
    assert r.raised == [] and len(r.resolved) == 1
    raised, resolved = read_escalations(tmp_path)
    assert raised["component"] == resolved["component"] == "fleet:breaker"
    assert resolved["resolves"] == raised["id"] and resolved["reason"] == "resolved"
    assert n.book.alerts == {}

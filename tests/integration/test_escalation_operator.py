"""Delivery to a real HTTP server on 127.0.0.1 playing the operator console's /operator/command.

razard's events are written to the real journald (`EventLog`, as razard writes
them) and read back by the notifier through journalctl.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from razard.config import Config, load_config
from razard.escalation.history import read_escalations
from razard.escalation.metrics import NotifierMetrics
from razard.escalation.notifier import EscalationNotifier, PassResult
from razard.journal import EventLog, Priority
from razard.layout import ESCALATIONS_FILE
from razard.usermanager import UserManager
from tests import canary
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
TOKEN_ENV = "RAZAR_TEST_OPERATOR_TOKEN"


class OperatorConsole:
    """POST /operator/command on 127.0.0.1:port; records each request; can go down and up."""

    def __init__(self, port: int, token: str, path: str = "/operator/command") -> None:
        self.port = port
        self.path = path
        self.token = token
        self.requests: list[dict[str, Any]] = []
        self.unauthorized = 0
        self._server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        console = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {console.token}":
                    console.unauthorized += 1
                    self.send_response(401)
                elif self.path != console.path:
                    self.send_response(404)
                else:
                    console.requests.append(json.loads(body))
                    self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def console() -> Iterator[OperatorConsole]:
    c = OperatorConsole(free_port(), canary.token("operator"))
    yield c
    c.down()


def write_config(
    tmp_path: Path, component: str, port: int, extra: str = "", tables: str = ""
) -> Path:
    path = tmp_path / "razard.toml"
    path.write_text(
        textwrap.dedent(f"""\
        [razard]
        state_dir = "{tmp_path / "state"}"
        bus = "user"

        [[component]]
        name = "{component}"
        layer = "heart"
        priority = 10
        command = ["/bin/sleep", "1000"]

        [escalation]
        threshold = 3
        window = 600.0
        retry_base = 0.05
        retry_cap = 0.1
        timeout = 2.0
        {extra}

        [escalation.operator]
        url = "http://127.0.0.1:{port}"
        token_env = "{TOKEN_ENV}"
        operator = "razar"
        agent = "overseer"
        """)
        + textwrap.dedent(tables)
    )
    return path


def make_notifier(
    config: Config, ident: str, metrics: NotifierMetrics | None = None
) -> EscalationNotifier:
    """A notifier reading the events of a razard journaling as ``ident`` (one per test, so
    other tests' razards on the shared journald are not seen)."""
    n = EscalationNotifier(
        config.escalation,
        config.daemon.state_dir,
        lambda: config.components,
        EventLog(None, identifier="razar-notifier-test"),
        metrics,
        identifier=ident,
    )
    n.lock()
    return n


async def passes_until(n: EscalationNotifier, pred: Any, within: float = 60.0) -> PassResult:
    """Run passes until ``pred(result)``: journald hands entries to journalctl asynchronously,
    and a journald shared with parallel test workers can take its time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    async with n.client() as client:
        while loop.time() < deadline:
            r = await n.run_once(client)
            if pred(r):
                return r
            await asyncio.sleep(0.1)
    raise AssertionError(f"the notifier never saw it within {within:g}s")


def assert_no_token(state_dir: Path) -> None:
    """No token is anywhere in the state directory (escalations, outbox, cursor, logs)."""
    assert canary.leaks_in_files([state_dir]) == []


async def test_target_down_keeps_the_alert_and_delivers_it_once_after_a_restart(
    journald: object, console: OperatorConsole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Console down: the alert waits in the outbox; a new notifier process delivers it once."""
    monkeypatch.setenv(TOKEN_ENV, console.token)
    comp = f"esc-{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, comp, console.port))
    state = config.daemon.state_dir
    ident = f"razard-{comp}"
    events = EventLog(None, identifier=ident)  # as razard journals its events
    events.emit(
        "operator_alert",
        f"{comp} quarantined: restart budget spent; last error: exit 4",
        component=comp,
        layer="heart",
        priority=Priority.ALERT,
    )

    first = make_notifier(config, ident)
    r = await passes_until(first, lambda r: r.raised)
    assert r.delivered == 0 and r.outbox == 1 and console.requests == []
    (raised,) = read_escalations(state)
    assert raised["reason"] == "quarantine" and raised["targets"] == {"operator": "queued"}
    assert not raised["delivered"]
    first.unlock()

    console.up()
    env = {**os.environ, TOKEN_ENV: console.token}
    cli = [sys.executable, str(ROOT / "scripts" / "escalation_notifier.py"), "--identifier", ident]
    done = await asyncio.to_thread(
        subprocess.run,
        [*cli, "--config", str(config.source), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "1 delivered" in done.stdout, done.stdout + done.stderr
    # the same alert again in the journal, and another pass: no duplicate at the console
    events.emit("operator_alert", f"{comp} quarantined", component=comp, priority=Priority.ALERT)
    again = [*cli, "--config", str(config.source), "--once"]
    await asyncio.to_thread(subprocess.run, again, env=env, check=True, timeout=60)

    assert len(console.requests) == 1
    (req,) = console.requests
    assert (req["operator"], req["agent"], req["command"]) == ("razar", "overseer", "escalate")
    ctx = req["context"]
    assert (ctx["component"], ctx["reason"], ctx["layer"], ctx["id"]) == (
        comp,
        "quarantine",
        "heart",
        raised["id"],
    )
    assert "restart budget spent" in ctx["sample"]
    (merged,) = read_escalations(state)
    assert merged["targets"] == {"operator": "delivered"} and merged["delivered"]
    lines = [json.loads(x) for x in (state / ESCALATIONS_FILE).read_text().splitlines()]
    assert [x["event"] for x in lines] == ["raised", "delivery"]
    assert not list((state / "escalation" / "outbox").iterdir())
    assert console.unauthorized == 0
    assert_no_token(state)


async def test_recurring_failure_is_raised_once_then_resolved_on_recovery(
    journald: object,
    user_manager: UserManager,
    console: OperatorConsole,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three occurrences of one error (other PIDs, addresses) make one alert; healthy resolves."""
    monkeypatch.setenv(TOKEN_ENV, console.token)
    comp = f"esc-{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, comp, console.port))
    console.up()
    # the component's own output, from its unit: journald's cgroup says whose it is. It
    # reads the cgroup from /proc of the writer, so the writer stays alive around its
    # lines, as a real component does: one that exits at once can be gone before a busy
    # journald gets to its stream, and its lines then carry no cgroup at all (no unit:
    # not the component's, by design) - the test failed that way under load
    lines = (
        "sleep 1\n"
        + "".join(
            f"echo 'worker[{4000 + i}]: connect to 10.0.0.{i}:5432 failed: connection refused'\n"
            for i in range(7)
        )
        + "sleep 3\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *["systemd-run", "--user", "--quiet", "--wait", f"--unit=razar-{comp}"],
        *["/bin/sh", "-c", lines],
        env=user_manager.env(),
    )
    assert await proc.wait() == 0
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    n = make_notifier(config, f"razard-{comp}", NotifierMetrics(registry, ["operator"]))
    await passes_until(n, lambda r: len(console.requests) >= 1)
    EventLog(None, identifier=f"razard-{comp}").emit(
        "state_healthy", "healthy (probe ok)", component=comp, layer="heart"
    )
    await passes_until(n, lambda r: r.resolved)

    commands = [(q["command"], q["context"]["reason"]) for q in console.requests]
    assert commands == [("escalate", "recurring"), ("resolve", "recurring")]
    ctx = console.requests[0]["context"]
    assert ctx["signature"] == "worker[<n>]: connect to <addr> failed: connection refused"
    assert ctx["count"] == 3 and ctx["dedup_key"].endswith(f"|{comp}|{ctx['signature']}")
    history = read_escalations(config.daemon.state_dir)
    assert [(h["reason"], h["delivered"]) for h in history] == [
        ("recurring", True),
        ("resolved", True),
    ]
    assert history[1]["resolves"] == history[0]["id"]
    text = generate_latest(registry).decode()
    assert 'razar_alerts_total{result="delivered",target="operator"} 2.0' in text
    assert "razar_alert_outbox_size 0.0" in text
    assert "razar_notifier_last_run_timestamp_seconds 1." in text
    assert console.token not in text
    assert_no_token(config.daemon.state_dir)


async def test_alerts_of_higher_layers_wait_while_root_is_down(
    journald: object, console: OperatorConsole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a root outage root's own alert goes out, a heart-layer quarantine is recorded
    inhibited and sent once root is up (when root's alert resolves)."""
    monkeypatch.setenv(TOKEN_ENV, console.token)
    comp = f"esc-{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, comp, console.port))
    console.up()
    n = make_notifier(config, f"razard-{comp}")
    ev = EventLog(None, identifier=f"razard-{comp}")
    ev.emit("chakra_down", "root layer down: pulse 30s old", layer="root", priority=Priority.ERR)
    ev.emit("operator_alert", f"{comp} quarantined", component=comp, priority=Priority.ALERT)
    ev.emit(
        "chakra_escalated",
        "root healer could not heal the layer; escalated to nic",
        layer="root",
        priority=Priority.WARNING,
    )
    await passes_until(n, lambda r: len(r.raised) == 2)
    by_reason = {e["reason"]: e for e in read_escalations(config.daemon.state_dir)}
    root, held = by_reason["layer_down"], by_reason["quarantine"]
    assert (root["component"], root["reason"]) == ("layer:root", "layer_down")
    assert root["targets"] == {"operator": "delivered"}  # root's own alert is not held back
    assert held["targets"] == {"operator": "inhibited"}
    assert [q["context"]["component"] for q in console.requests] == ["layer:root"]
    ev.emit("chakra_up", "root layer beating again after 31.0s", layer="root")
    await passes_until(n, lambda r: len(console.requests) == 3)
    sent = {e["id"]: e for e in read_escalations(config.daemon.state_dir)}
    assert sent[held["id"]]["targets"] == {"operator": "delivered"}
    # root recovered: its alert resolves; the held one goes out under its own id
    assert sorted((q["command"], q["context"]["component"]) for q in console.requests[1:]) == [
        ("escalate", comp),
        ("resolve", "layer:root"),
    ]


def test_timer_run_steps_aside_while_another_notifier_holds_the_lock(
    console: OperatorConsole, tmp_path: Path
) -> None:
    """--once exits 0 saying razard's notifier is active when the lock is held."""
    config = load_config(write_config(tmp_path, "esc-lock", console.port))
    holder = make_notifier(config, "razard")
    try:
        p = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "escalation_notifier.py")]
            + ["--config", str(config.source), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.unlock()
    assert p.returncode == 0 and "razard's notifier is active" in p.stdout


async def test_a_full_outbox_drops_the_oldest_alert_with_a_journal_warning(
    journald: object, console: OperatorConsole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Console down and room for one: the older alert is dropped, journaled and counted."""
    monkeypatch.setenv(TOKEN_ENV, console.token)
    comp = f"esc-{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, comp, console.port, "outbox_max = 1"))
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    n = make_notifier(config, f"razard-{comp}", NotifierMetrics(registry, ["operator"]))
    ev = EventLog(None, identifier=f"razard-{comp}")
    ev.emit("operator_alert", f"{comp} quarantined", component=comp, priority=Priority.ALERT)
    ev.emit("escalation_warning", "3 escalations", component=comp, priority=Priority.WARNING)
    await passes_until(n, lambda r: len(read_escalations(config.daemon.state_dir)) == 2)
    quarantine, warning = read_escalations(config.daemon.state_dir)
    assert quarantine["reason"] == "quarantine" and quarantine["targets"] == {"operator": "failed"}
    assert warning["targets"] == {"operator": "queued"}
    assert len(list((config.daemon.state_dir / "escalation" / "outbox").iterdir())) == 1
    assert 'razar_alerts_total{result="dropped",target="operator"} 1.0' in (
        generate_latest(registry).decode()
    )

    def journaled() -> list[dict[str, Any]]:
        out = subprocess.run(
            ["journalctl", "--no-pager", "-o", "json", "RAZAR_EVENT=alert_dropped"]
            + [f"RAZAR_ESCALATION_ID={quarantine['id']}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return [json.loads(line) for line in out.splitlines()]

    for _ in range(50):
        if entries := await asyncio.to_thread(journaled):
            break
        await asyncio.sleep(0.1)
    (entry,) = entries
    assert entry["PRIORITY"] == "4" and "the outbox is full" in entry["MESSAGE"]


async def test_operator_console_and_webhook_each_get_the_alert(
    journald: object, console: OperatorConsole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two targets: each receives the alert once, each with its own token; both recorded."""
    hook = OperatorConsole(free_port(), canary.token("hook"), path="/hooks/razar")
    hook.up()
    try:
        monkeypatch.setenv(TOKEN_ENV, console.token)
        (tmp_path / "hook.token").write_text(hook.token)
        comp = f"esc-{uuid.uuid4().hex[:8]}"
        tables = f"""
            [escalation.webhook]
            url = "http://127.0.0.1:{hook.port}/hooks/razar"
            token_file = "hook.token"
            """
        config = load_config(write_config(tmp_path, comp, console.port, tables=tables))
        console.up()
        n = make_notifier(config, f"razard-{comp}")
        EventLog(None, identifier=f"razard-{comp}").emit(
            "escalation_warning", "3 escalations in this repair cycle", component=comp
        )
        await passes_until(n, lambda r: r.raised)
        (rec,) = read_escalations(config.daemon.state_dir)
        assert rec["targets"] == {"operator": "delivered", "webhook": "delivered"}
        assert rec["reason"] == "warning_threshold" and rec["delivered"]
        (hooked,) = hook.requests
        assert (hooked["version"], hooked["status"]) == (1, "firing")
        assert hooked["alert"]["id"] == rec["id"] == console.requests[0]["context"]["id"]
        assert hook.unauthorized == console.unauthorized == 0
        assert_no_token(config.daemon.state_dir)
    finally:
        hook.down()


async def test_failed_repair_records_recur_into_one_alert(
    journald: object, console: OperatorConsole, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three failed attempts in razar_ai_invocations.json with the same error raise one alert."""
    monkeypatch.setenv(TOKEN_ENV, console.token)
    comp = f"esc-{uuid.uuid4().hex[:8]}"
    config = load_config(write_config(tmp_path, comp, console.port))
    console.up()
    from razard.storage import append_jsonl

    log = config.daemon.state_dir / "razar_ai_invocations.json"
    for attempt in range(1, 5):
        append_jsonl(log, {"component": comp, "agent": "kimi", "status": "started"})
        append_jsonl(
            log,
            {
                "component": comp,
                "agent": "kimi",
                "status": "failed",
                "attempt": attempt,
                "reason": f"HTTP 503 after {attempt * 1.5}s from 10.1.2.{attempt}:8000",
            },
        )
    n = make_notifier(config, f"razard-{comp}")
    await passes_until(n, lambda r: r.raised)
    (req,) = console.requests
    ctx = req["context"]
    assert (ctx["component"], ctx["reason"], ctx["count"]) == (comp, "recurring", 3)
    assert ctx["signature"] == "repair_attempt: kimi failed: HTTP <n> after <n>s from <addr>"
    await passes_until(n, lambda r: r.records == 0)
    assert len(console.requests) == 1

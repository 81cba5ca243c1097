"""razard's built-in notifier: a component razard gives up on reaches the operator once."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from razard.escalation.history import read_escalations
from razard.journal import JOURNAL_SOCKET
from razard.layout import ESCALATION_DIR, ESCALATIONS_FILE, UNJOURNALED_FILE
from razard.usermanager import UserManager
from tests import canary
from tests.integration.harness import Razard, crash_loop, free_port, wait_for
from tests.integration.test_escalation_operator import OperatorConsole

pytestmark = pytest.mark.integration


@pytest.fixture
def console() -> Iterator[OperatorConsole]:
    c = OperatorConsole(free_port(), canary.token("operator"))
    c.up()
    yield c
    c.down()


def _crash_loop_to_console(
    um: UserManager, console: OperatorConsole, tmp_path: Path, name: str
) -> Razard:
    """A razard (not started) with one crash-looping component and the console as its
    operator target (agent "overseer"), the token in a file."""
    token_file = tmp_path / "operator.token"
    token_file.write_text(console.token + "\n")
    return Razard(
        um,
        tmp_path,
        f"""
        {crash_loop(tmp_path, name, "fatal: shard corrupt")}

        [escalation]
        threshold = 1000
        poll_interval = 0.2
        retry_base = 0.1

        [escalation.operator]
        url = "http://127.0.0.1:{console.port}"
        token_file = "{token_file}"
        agent = "overseer"
        """,
    )


def test_quarantined_component_reaches_the_operator_exactly_once(
    user_manager: UserManager, journald: object, console: OperatorConsole, tmp_path: Path
) -> None:
    """A crash-looping component is quarantined; the console gets one alert, recorded in
    operator_escalations.jsonl; the notifier's metrics are on razard's /metrics; the token
    is nowhere in the state directory, the journal or the metrics."""
    name = f"it-esc-{uuid.uuid4().hex[:6]}"
    r = _crash_loop_to_console(user_manager, console, tmp_path, name)
    try:
        r.start(wait_ready=False)
        r.wait_state(name, "quarantined", timeout=60)

        def mine() -> list[dict[str, Any]]:
            return [q for q in console.requests if q["context"]["component"] == name]

        try:
            wait_for(mine, 30, "the operator console to get the alert")
        except AssertionError as e:  # say what razard's notifier did instead
            raise AssertionError(f"{e}\nrazard's stderr:\n{r.stderr_text()[-4000:]}") from None
        recorded = wait_for(
            lambda: [e for e in read_escalations(r.state_dir) if e["component"] == name],
            10,
            "the escalation record",
        )
        metrics = r.metrics_text()  # the record is written after the delivery was counted
        stopped = r.stop()
    finally:
        if r.proc is not None:
            r.stop()
        r.cleanup_units([f"razar-{name}.service"])
    assert stopped == 0
    (req,) = mine()
    assert (req["operator"], req["agent"], req["command"]) == ("razar", "overseer", "escalate")
    ctx = req["context"]
    assert (ctx["reason"], ctx["layer"], ctx["signature"]) == ("quarantine", "heart", "quarantined")
    assert "razarctl quarantine release" in ctx["sample"]
    (rec,) = recorded
    assert rec["id"] == ctx["id"] and rec["targets"] == {"operator": "delivered"}
    assert rec["delivered"] and rec["dedup_key"] == f"{ctx['host']}|{name}|quarantined"
    # other razards on this shared journald may add layer alerts: count ours by record
    assert 'razar_alerts_total{result="delivered",target="operator"}' in metrics
    assert 'razar_alerts_total{result="failed",target="operator"} 0.0' in metrics
    assert "razar_notifier_last_run_timestamp_seconds" in metrics
    assert console.unauthorized == 0

    raw = (r.state_dir / ESCALATIONS_FILE).read_text()
    ours = [json.loads(line) for line in raw.splitlines() if name in line]
    assert [(x["event"], x["reason"]) for x in ours] == [("raised", "quarantine")]
    assert canary.leaks_in_files([r.state_dir]) == []
    assert console.token not in metrics
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "export", "--since=-10min", f"RAZAR_COMPONENT={name}"],
        capture_output=True,
        timeout=30,
    ).stdout
    assert name.encode() in journal and console.token.encode() not in journal


def _journal_socket_refused(tmp_path: Path) -> list[str]:
    """A command prefix under which razard's journal socket refuses every datagram, as
    while journald is stopped: a mount namespace of razard's own, with a socket file
    nobody reads bound over it. journald itself, and everyone else, are untouched."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    dead = tmp_path / "dead.socket"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(dead))
    s.close()  # the file stays; a datagram sent to it gets ECONNREFUSED
    mount = f'mount --bind {dead} {JOURNAL_SOCKET} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", mount, "sh"]


def test_a_quarantine_reaches_the_operator_while_journald_refuses_razards_events(
    user_manager: UserManager, journald: object, console: OperatorConsole, tmp_path: Path
) -> None:
    """razard's notifier reads razard's events from the journal. With journald refusing
    them, the quarantine still reaches the console once: razard spooled the events the
    notifier acts on, the notifier read them and emptied the spool; the journal has none
    of razard's events about the component (the alert came by the spool)."""
    name = f"it-spool-{uuid.uuid4().hex[:6]}"
    r = _crash_loop_to_console(user_manager, console, tmp_path, name)
    r.prefix = _journal_socket_refused(tmp_path)
    spool = r.state_dir / ESCALATION_DIR / UNJOURNALED_FILE
    try:
        r.start(wait_ready=False)
        r.wait_state(name, "quarantined", timeout=60)
        alerts = wait_for(
            lambda: [q for q in console.requests if q["context"]["component"] == name],
            30,
            "the operator console to get the alert",
        )
        wait_for(lambda: spool.exists() and spool.stat().st_size == 0, 10, "an emptied spool")
        stopped = r.stop()
    finally:
        if r.proc is not None:
            r.stop()
        r.cleanup_units([f"razar-{name}.service"])
    assert stopped == 0
    (alert,) = alerts
    ctx = alert["context"]
    assert (ctx["reason"], ctx["layer"], ctx["signature"]) == ("quarantine", "heart", "quarantined")
    assert "journald" in r.stderr_text() and "unavailable" in r.stderr_text()
    (rec,) = [e for e in read_escalations(r.state_dir) if e["component"] == name]
    assert rec["targets"] == {"operator": "delivered"}
    journal = subprocess.run(
        ["journalctl", "--no-pager", "-o", "export", "SYSLOG_IDENTIFIER=razard"]
        + [f"RAZAR_COMPONENT={name}"],
        capture_output=True,
        timeout=30,
    ).stdout
    assert name.encode() not in journal  # none of razard's events reached journald
    logged = [json.loads(x) for x in (r.state_dir / "razar.log").read_text().splitlines()]
    assert {"component": name, "event": "operator_alert"}.items() <= next(  # in razar.log
        e for e in logged if e["event"] == "operator_alert"
    ).items()

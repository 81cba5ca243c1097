"""What razard writes to the journal reads well on its own (issue 13, part 5): no library
chatter, every line about a component names it, and STATUS=/READY count what runs now."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from tests.integration.conftest import Factory
from tests.integration.harness import Razard, crash_loop, wait_for

pytestmark = pytest.mark.integration


def _tag() -> str:
    return uuid.uuid4().hex[:6]  # the journal is shared: names of this test run only


@pytest.fixture
def http_server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 that answers 200 to every GET; its URL."""

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()


def _probes_ok(r: Razard, name: str) -> float:
    page = r.metrics_text()
    m = re.search(
        rf'razar_probes_total\{{component="{name}",probe="http",result="ok"\}} ([0-9.e+]+)', page
    )
    return float(m.group(1)) if m else 0.0


def _journal(*matches: str) -> list[dict[str, Any]]:
    p = subprocess.run(
        ["journalctl", "--no-pager", "-o", "json", *matches],
        capture_output=True,
        text=True,
        check=False,
    )
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_http_probes_leave_no_library_lines_and_debug_brings_them_back(
    razard: Factory, http_server: str
) -> None:
    """After many HTTP probe rounds razard's output (the journal under systemd) holds no
    httpx line while razard's own INFO lines still come; RAZARD_DEBUG=1 lets libraries in."""
    name = f"hy-http-{_tag()}"
    r = razard(f"""
        [[component]]
        name = "{name}"
        layer = "crown"
        priority = 1
        command = ["/bin/sleep", "100000"]
        probe = {{ type = "http", url = "{http_server}", interval = 0.1 }}
        """)
    r.start()
    r.wait_state(name, "healthy")
    wait_for(lambda: _probes_ok(r, name) >= 20, 60, "20 passing HTTP probes")
    r.stop()
    out = r.stderr_text()
    assert "INFO razard.control: control interface on" in out  # razard's own INFO still shows
    assert not [line for line in out.splitlines() if "httpx" in line or "httpcore" in line]

    r.stderr_path.write_text("")
    r.extra_env["RAZARD_DEBUG"] = "1"
    r.start()
    wait_for(lambda: "httpx" in r.stderr_text(), 60, "httpx's lines with RAZARD_DEBUG=1")
    assert "HTTP Request: GET " + http_server in r.stderr_text()


def test_every_component_line_names_its_component(razard: Factory, tmp_path: Path) -> None:
    """A component restarted after a kill and one crash-looping into quarantine: every
    journal entry razard wrote about a component names that component in MESSAGE."""
    tag = _tag()
    killed, looping = f"hy-kill-{tag}", f"hy-loop-{tag}"
    r = razard(
        f"""
        [[component]]
        name = "{killed}"
        layer = "crown"
        priority = 1
        command = ["/bin/sleep", "100000"]
        restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5 }}
        """
        + crash_loop(tmp_path, looping, "boom: bad config line 3")
    )
    r.start()
    r.wait_state(killed, "healthy")
    pid = r.main_pid(f"razar-{killed}.service")
    r.um.systemctl("kill", "--signal=SIGKILL", f"razar-{killed}.service")
    wait_for(lambda: r.main_pid(f"razar-{killed}.service") not in (0, pid), 30, "the restart")
    r.wait_state(killed, "healthy")
    r.wait_state(looping, "quarantined")
    assert r.proc is not None
    razard_pid = r.proc.pid
    # this razard's entries: _PID alone also finds earlier processes that had its pid
    since = f"--since=@{int(psutil.Process(razard_pid).create_time())}"

    def entries() -> list[dict[str, Any]]:
        got = _journal(since, f"_PID={razard_pid}")
        events = {(e.get("RAZAR_COMPONENT"), e.get("RAZAR_EVENT")) for e in got}
        need = {
            (killed, "state_restarting"),
            (killed, "state_healthy"),
            (looping, "state_restarting"),
            (looping, "operator_alert"),
        }
        return got if need <= events else []

    got = wait_for(entries, 30, "razard's entries in the journal")
    about = [e for e in got if e.get("RAZAR_COMPONENT")]
    assert {e["RAZAR_COMPONENT"] for e in about} == {killed, looping}
    unnamed = [
        (e["RAZAR_COMPONENT"], e.get("RAZAR_EVENT"), e["MESSAGE"])
        for e in about
        if e["RAZAR_COMPONENT"] not in e["MESSAGE"]
    ]
    assert not unnamed
    # the plain journal line of a restart says whose it is, ahead of the rest
    restarts = [e for e in about if e.get("RAZAR_EVENT") == "state_restarting"]
    assert {e["RAZAR_COMPONENT"] for e in restarts} == {killed, looping}
    assert all(e["MESSAGE"].startswith(f"{e['RAZAR_COMPONENT']}: ") for e in restarts)
    # razarctl's incident timeline reads the same entries and still tells them apart
    incident = json.loads(r.ctl("incident", looping, "--json", "--config", str(r.config)).stdout)
    events = [x["event"] for x in incident["entries"]]
    assert "state_restarting" in events and "operator_alert" in events
    assert incident["summary"]["last_state_event"] == "state_quarantined"


def _unit_times(r: Razard, unit: str) -> tuple[str, float | None]:
    """(ActiveState, ActiveEnterTimestamp as unix time or None) of a unit, from systemd."""
    p = r.um.systemctl(
        "show", "--timestamp=us+utc", "-p", "ActiveState", "-p", "ActiveEnterTimestamp", unit
    )
    props = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    stamp = props.get("ActiveEnterTimestamp", "").strip()
    when = None
    if stamp:
        parsed = datetime.strptime(stamp, "%a %Y-%m-%d %H:%M:%S.%f %Z")
        when = parsed.replace(tzinfo=UTC).timestamp()
    return props.get("ActiveState", ""), when


def test_ready_after_a_reboot_counts_only_units_that_are_active(
    razard: Factory, tmp_path: Path
) -> None:
    """After a reboot (saved state: all healthy; units stopped) READY's STATUS= counts as
    healthy only the units systemd had made active by then, and no component is reported
    healthy before its unit is active."""
    tag = _tag()
    first, later = f"hy-first-{tag}", f"hy-later-{tag}"
    comps = "".join(
        f"""
        [[component]]
        name = "{n}"
        layer = "crown"
        priority = {p}
        command = ["/bin/sleep", "100000"]
        """
        for n, p in ((first, 0), (later, 1))
    )
    r = razard(comps)
    r.start()
    r.wait_state(later, "healthy")
    assert r.stop() == 0
    saved = json.loads((r.state_dir / "razar_state.json").read_text())["components"]
    assert {saved[n]["status"] for n in (first, later)} == {"healthy"}
    units = {n: f"razar-{n}.service" for n in (first, later)}
    for unit in units.values():  # the reboot: the units are down, the saved state says healthy
        r.um.systemctl("stop", unit)
    assert all(_unit_times(r, u)[0] != "active" for u in units.values())

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    r.extra_env["NOTIFY_SOCKET"] = str(notify_path)
    log_start = len(r.events())
    try:
        r.start()
        r.wait_state(later, "healthy")
        said: list[str] = []
        try:
            while True:
                said.extend(notify.recv(4096).decode().splitlines())
        except TimeoutError:
            pass
    finally:
        notify.close()

    assert "READY=1" in said
    # what systemctl status showed until READY (a STATUS= after READY=1 may be a later one)
    before_ready = [s for s in said[: said.index("READY=1")] if s.startswith("STATUS=")]
    assert before_ready
    events = r.events()[log_start:]
    ready = next(e for e in events if e["event"] == "razard_ready")
    times = {n: _unit_times(r, u) for n, u in units.items()}
    assert all(state == "active" for state, _ in times.values())  # both up by now
    active_at_ready = [n for n, (_, t) in times.items() if t is not None and t < ready["unix"]]
    counted = re.search(r"(\d+) healthy", ready["message"])
    assert counted is not None
    assert int(counted.group(1)) == len(active_at_ready), (ready["message"], times)
    for line in before_ready:
        healthy = re.search(r"(\d+) healthy", line)
        assert healthy is not None and int(healthy.group(1)) <= len(active_at_ready), said
    assert before_ready[0].startswith("STATUS=0 healthy"), said  # nothing ran at the start
    assert active_at_ready == [first]  # the later wave starts after READY
    for e in events:
        if e["event"] == "state_healthy":
            entered = times[e["component"]][1]
            assert entered is not None and entered < e["unix"], e
    pending = [e for e in events if e["event"] == "state_pending"]
    assert {e["component"] for e in pending} == {first, later}
    assert all("inactive" in e["message"] and "was healthy" in e["message"] for e in pending)

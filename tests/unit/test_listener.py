"""The metrics listener: a port in use is waited out, any other error is not."""

from __future__ import annotations

import errno
import os
import pwd
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from razard.daemon import Notifier
from razard.listener import MetricsListener, port_holder


def _serve_script(*outcomes: int) -> tuple[list[tuple[str, int]], Callable[[str, int], int]]:
    """A ``serve`` that fails with each errno in ``outcomes`` in turn, then binds (0: ok)."""
    calls: list[tuple[str, int]] = []
    left = list(outcomes)

    def serve(address: str, port: int) -> int:
        calls.append((address, port))
        code = left.pop(0) if left else 0
        if code:
            raise OSError(code, "scripted")
        return port

    return calls, serve


async def test_a_port_in_use_is_tried_again_until_it_is_free() -> None:
    calls, serve = _serve_script(errno.EADDRINUSE, errno.EADDRINUSE, errno.EADDRINUSE)
    listener = MetricsListener(serve, "127.0.0.1", 9360)
    assert listener.taken is not None and listener.taken.startswith("127.0.0.1:9360 is in use")
    said: list[tuple[str, str, int]] = []
    await listener.keep_trying(lambda *a: said.append(a), interval=0)
    assert listener.taken is None and len(calls) == 4
    assert [s[0] for s in said] == ["metrics_listening"]


async def test_another_error_while_retrying_stops_the_retries_and_is_said() -> None:
    calls, serve = _serve_script(errno.EADDRINUSE, errno.EACCES)
    listener = MetricsListener(serve, "::1", 9360)
    said: list[tuple[str, str, int]] = []
    await listener.keep_trying(lambda *a: said.append(a), interval=0)
    assert len(calls) == 2 and listener.taken is not None
    ((event, message, _),) = said
    assert event == "metrics_unavailable" and "[::1]:9360" in message and "not trying" in message


def test_any_other_error_at_start_is_raised() -> None:
    _, serve = _serve_script(errno.EADDRNOTAVAIL)
    with pytest.raises(OSError) as e:
        MetricsListener(serve, "10.9.9.9", 9360)
    assert e.value.errno == errno.EADDRNOTAVAIL


def test_the_process_holding_the_port_is_named() -> None:
    """This test's own listener: its pid, program and user."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        held = port_holder("127.0.0.1", port)
        assert held.startswith(f"pid {os.getpid()} (") and pwd.getpwuid(os.getuid()).pw_name in held
        assert port_holder("0.0.0.0", port) == held  # razard on every address: blocked too
        assert port_holder("10.0.0.1", port) == ""  # another address: not this one's port


def test_a_holder_naming_itself_with_a_newline_cannot_reach_sd_notify() -> None:
    """A process names itself ``x\\nSTOPPING=1`` (prctl) and takes the port: its name comes
    back on one line, so razard's STATUS= cannot carry a command of its choosing."""
    code = (
        "import ctypes, socket, sys, time\n"
        "ctypes.CDLL(None).prctl(15, b'x\\nSTOPPING=1', 0, 0, 0)\n"  # PR_SET_NAME
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        port = int(p.stdout.readline())
        held = port_holder("127.0.0.1", port)
    finally:
        p.kill()
        p.wait()
    assert held.startswith(f"pid {p.pid} (x STOPPING=1,"), held
    assert "\n" not in held


def test_the_status_line_sent_to_systemd_is_one_line() -> None:
    sent: list[str] = []
    n = Notifier()
    n._n = type("Fake", (), {"notify": lambda self, text: sent.append(text)})()
    n.status("DEGRADED: metrics not served (pid 7 (x\nSTOPPING=1, user u)); 1 healthy")
    assert sent == ["STATUS=DEGRADED: metrics not served (pid 7 (x STOPPING=1, user u)); 1 healthy"]


async def test_a_shortage_while_retrying_is_tried_again_not_raised() -> None:
    """Out of descriptors, then a thread that cannot start: both tried again (the task
    must not end razard's task group); then the page is served."""
    calls = 0

    def serve(address: str, port: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EADDRINUSE, "in use")
        if calls == 2:
            raise OSError(errno.EMFILE, "Too many open files")
        if calls == 3:
            raise RuntimeError("can't start new thread")
        return port

    listener = MetricsListener(serve, "127.0.0.1", 9360)
    said: list[tuple[str, str, int]] = []
    await listener.keep_trying(lambda *a: said.append(a), interval=0)
    assert calls == 4 and listener.taken is None
    assert [s[0] for s in said] == ["metrics_listening"]


def test_the_metrics_page_is_served_on_an_ipv6_address() -> None:
    """``metrics_address = "::1"`` (check-config accepts it) serves the page there."""
    import urllib.request

    from razard.metrics import Metrics

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    port = Metrics("0").serve("::1", 0)
    with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as page:
        assert b"razar_build_info" in page.read()

"""Probes against real servers and real processes started by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from razard.config import ProbeConfig
from razard.probes import MAX_OUTPUT, Prober, ProbeResult, run_probe
from tests.processes import all_gone


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.release.wait(60)  # never answers while the test runs
            return
        status = {"/ok": 200, "/fail": 503, "/teapot": 418}.get(self.path, 404)
        body = b"service unavailable: model not loaded\n" if status == 503 else b"ok\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering /ok 200, /fail 503 and /hang never."""
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _http(url: str, timeout: float = 2.0, expect: int = 200) -> ProbeConfig:
    return ProbeConfig(kind="http", url=url, timeout=timeout, expect_status=expect)


def _exec(*command: str, timeout: float = 5.0) -> ProbeConfig:
    program = shutil.which(command[0]) or command[0]  # exec probes take absolute programs
    return ProbeConfig(kind="exec", command=(program, *command[1:]), timeout=timeout)


# ------------------------------------------------------------------------- http


async def test_http_200_is_ok(http_base: str) -> None:
    """An HTTP probe passes when the server answers the expected status."""
    r = await run_probe(_http(f"{http_base}/ok"))
    assert r.ok, r
    assert r.detail == "HTTP 200"
    assert 0 <= r.duration < 2


async def test_http_503_fails_with_status_and_body(http_base: str) -> None:
    """An HTTP probe fails on another status and says which, with the body as output."""
    r = await run_probe(_http(f"{http_base}/fail"))
    assert not r.ok
    assert "HTTP 503" in r.detail and "expected 200" in r.detail
    assert "model not loaded" in r.output


async def test_http_expect_status_is_honoured(http_base: str) -> None:
    """An HTTP probe expecting 503 passes on 503 and fails on 200."""
    assert (await run_probe(_http(f"{http_base}/fail", expect=503))).ok
    assert not (await run_probe(_http(f"{http_base}/ok", expect=503))).ok


async def test_http_hang_fails_within_timeout(http_base: str) -> None:
    """A server that never answers makes the probe fail at its deadline, not later."""
    r = await run_probe(_http(f"{http_base}/hang", timeout=0.5))
    assert not r.ok
    assert r.detail == "timed out after 0.5s"
    assert 0.4 <= r.duration < 0.5 + 1


async def test_http_connection_refused(free_port: int) -> None:
    """An HTTP probe to a closed port fails as 'connection refused'."""
    r = await run_probe(_http(f"http://127.0.0.1:{free_port}/health"))
    assert not r.ok
    assert r.detail == "connection refused"


async def test_http_ignores_proxy_environment(
    http_base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxy variables in the environment do not reroute a probe."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert (await run_probe(_http(f"{http_base}/ok"))).ok


async def test_http_bad_url_is_a_failure_not_an_exception() -> None:
    """A malformed URL gives a failed result instead of raising."""
    r = await run_probe(_http("notaurl"))
    assert not r.ok
    assert r.detail


async def test_prober_reuses_one_client_for_many_probes(http_base: str) -> None:
    """One Prober runs many probes, concurrently, and closes cleanly."""
    async with Prober() as prober:
        results = await asyncio.gather(
            *(prober.run(_http(f"{http_base}/{p}")) for p in ("ok", "fail", "ok", "teapot"))
        )
    assert [r.ok for r in results] == [True, False, True, False]
    assert "HTTP 418" in results[3].detail


# -------------------------------------------------------------------------- tcp


async def test_tcp_listening_port_is_ok() -> None:
    """A TCP probe passes when something accepts the connection."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        r = await run_probe(ProbeConfig(kind="tcp", host="127.0.0.1", port=port, timeout=2))
    assert r.ok, r
    assert r.detail == f"connected to 127.0.0.1:{port}"


async def test_tcp_closed_port_is_refused(free_port: int) -> None:
    """A TCP probe to a port nobody listens on fails as 'connection refused'."""
    r = await run_probe(ProbeConfig(kind="tcp", host="127.0.0.1", port=free_port, timeout=2))
    assert not r.ok
    assert r.detail.startswith("connection refused")
    assert r.duration < 2


async def test_tcp_probe_that_gets_no_handshake_times_out_and_leaves_nothing_behind() -> None:
    """A listener whose backlog is full drops the SYN: the probe fails at its timeout, and
    the prober's epoll holds no leftover entry (its descriptor may be reused)."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):  # fill the accept queue; nobody accepts
            c = stack.enter_context(socket.socket())
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
        await asyncio.sleep(0.05)
        async with Prober() as prober:
            probe = ProbeConfig(kind="tcp", host="127.0.0.1", port=port, timeout=0.3)
            async with asyncio.timeout(10):  # bounds the wait: the probe's own 0.3 s ends it
                r = await prober.run(probe)
            assert not r.ok and r.detail == "timed out after 0.3s", r
            assert r.duration >= 0.3  # not before its deadline
            assert prober._connector is not None and prober._connector._waiting == {}


async def test_many_tcp_probes_at_once_each_get_their_own_answer(free_port: int) -> None:
    """200 probes in flight on one prober: those to the listener pass, those to the closed
    port are refused, and a host name is resolved first."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = listener.getsockname()[1]
        async with Prober() as prober:
            probes = [
                ProbeConfig(kind="tcp", host="127.0.0.1", port=p, timeout=5)
                for p in [port, free_port] * 100
            ]
            results = await asyncio.gather(*(prober.run(p) for p in probes))
            named = await prober.run(ProbeConfig(kind="tcp", host="localhost", port=port))
    assert [r.ok for r in results] == [True, False] * 100
    assert all(r.detail.startswith("connection refused") for r in results[1::2])
    assert named.ok, named


# ------------------------------------------------------------------------- exec


async def test_exec_true_is_ok() -> None:
    """An exec probe that exits 0 passes."""
    r = await run_probe(_exec("true"))
    assert r.ok, r
    assert r.detail == "exit status 0"


async def test_exec_false_fails() -> None:
    """An exec probe that exits non-zero fails with its exit status."""
    r = await run_probe(_exec("false"))
    assert not r.ok
    assert r.detail == "exit status 1"


async def test_exec_failure_reports_status_and_stderr() -> None:
    """A failing exec probe's detail carries its exit status and first line of output."""
    r = await run_probe(_exec("sh", "-c", "echo 'gpu 0: ECC error' >&2; echo more >&2; exit 3"))
    assert not r.ok
    assert r.detail == "exit status 3: gpu 0: ECC error"
    assert r.output == "gpu 0: ECC error\nmore"


async def test_exec_output_is_truncated() -> None:
    """A probe that prints a lot gives a bounded detail and output."""
    r = await run_probe(_exec("sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; exit 2"))
    assert not r.ok
    assert len(r.output) <= MAX_OUTPUT
    assert len(r.detail) <= MAX_OUTPUT + len("exit status 2: ")


async def test_exec_timeout_kills_the_probe() -> None:
    """`sleep 30` with a 0.5 s timeout fails in time and the sleep process is gone."""
    marker = f"30.{uuid.uuid4().int % 10**6:06d}"  # a unique argv to find it by
    r = await run_probe(_exec("sleep", marker, timeout=0.5))
    assert not r.ok
    assert r.detail == "timed out after 0.5s"
    assert r.duration < 0.5 + 1
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline", "status"])
        if p.info["cmdline"] == ["sleep", marker] and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert left == []


async def test_exec_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A hung probe's children in its process group are killed with it."""
    pids = tmp_path / "pids"
    script = f"echo $$ > {pids}; sleep 30 & echo $! >> {pids}; wait"
    r = await run_probe(_exec("sh", "-c", script, timeout=0.5))
    assert not r.ok and "timed out" in r.detail
    recorded = [int(x) for x in pids.read_text().split()]
    assert len(recorded) == 2
    assert all_gone(recorded, within=3.0), recorded


async def test_exec_missing_executable() -> None:
    """A probe whose executable does not exist fails with a clear reason."""
    r = await run_probe(_exec("/nonexistent/razar-health-check"))
    assert not r.ok
    assert r.detail == "executable not found: /nonexistent/razar-health-check"


async def test_exec_gets_the_given_environment() -> None:
    """An exec probe runs with the environment the caller passes."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "RAZAR_PROBE_X": "42"}
    assert (await run_probe(_exec("sh", "-c", 'test "$RAZAR_PROBE_X" = 42'), env=env)).ok
    assert not (await run_probe(_exec("sh", "-c", 'test "$RAZAR_PROBE_X" = 42'))).ok


async def test_result_is_a_frozen_value() -> None:
    """ProbeResult is immutable, so a result can be shared between tasks safely."""
    r = ProbeResult(ok=True, duration=0.1, detail="exit status 0")
    with pytest.raises(AttributeError):
        r.ok = False  # type: ignore[misc]


async def test_exec_refuses_a_relative_program(tmp_path: Path) -> None:
    """A relative program (found in the working directory or PATH) is never run."""
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\ntouch ran\n")
    script.chmod(0o755)
    probe = ProbeConfig(kind="exec", command=("./check.sh",), timeout=5)
    async with Prober() as prober:
        result = await prober.run(probe, cwd=str(tmp_path))
    assert not result.ok and "absolute path" in result.detail
    assert not (tmp_path / "ran").exists()


async def test_exec_gets_no_environment_of_razards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit environment an exec probe sees PATH and LANG, not razard's own
    (its agents' and alert targets' tokens)."""
    monkeypatch.setenv("RAZAR_OPENAI_TOKEN", "sk-canary-probe-env")
    result = await run_probe(_exec("env"))
    assert result.ok
    names = {line.split("=", 1)[0] for line in result.output.splitlines()}
    assert "RAZAR_OPENAI_TOKEN" not in names and "sk-canary-probe-env" not in result.output
    assert names <= {"PATH", "LANG", "PWD", "SHLVL", "_"}


async def test_razards_own_lack_of_descriptors_is_not_the_components_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE while starting a probe is razard's trouble: the result says so (``ours``), so
    the supervisor does not count it against the component; a real failure is not ours."""

    async def no_descriptors(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(asyncio, "create_subprocess_exec", no_descriptors)
    result = await run_probe(_exec("true"))
    assert result.ours and not result.ok
    assert "razard itself is short of resources" in result.detail
    monkeypatch.undo()
    failed = await run_probe(_exec("false"))
    assert not failed.ok and not failed.ours

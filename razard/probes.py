"""Health probes (exec, http, tcp), each held to its deadline.

A probe answers with a `ProbeResult`; it never raises because the component is
unhealthy, unreachable or hangs. A probe that runs past ``probe.timeout`` is a
failed probe ("timed out after 2s"), and an exec probe's whole process group is
killed and reaped then, so a hanging health check leaves nothing behind.

    async with Prober() as prober:          # one HTTP client for every http probe
        result = await prober.run(component.probe)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import pwd
import select
import signal
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from razard.config import ProbeConfig

if TYPE_CHECKING:  # httpx (and all it imports) is loaded with the first http probe
    import httpx

#: Longest probe output kept in a result (characters); the detail holds at most this.
MAX_OUTPUT: Final = 500
log = logging.getLogger(__name__)
_READ_CAP: Final = 64 * 1024  # bytes of exec output kept while reading
#: the whole environment of an exec probe (plus HOME/USER/LOGNAME of its user)
PROBE_ENV: Final[Mapping[str, str]] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
_REAP_GRACE: Final = 5.0  # seconds to wait for a killed probe to be reaped


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe run.

    ``detail`` is a short human reason ("HTTP 503, expected 200", "connection
    refused", "timed out after 2s", "exit status 3: <first line of output>");
    ``output`` is what the probe printed (exec: stdout and stderr; http: the start
    of the body of an unexpected answer), at most `MAX_OUTPUT` characters.
    """

    ok: bool
    duration: float
    detail: str
    output: str = ""
    #: the probe could not be run for razard's own lack of resources (descriptors,
    #: memory): says nothing about the component and must not count against it
    ours: bool = False


class _OwnTrouble(Exception):
    """razard itself ran out of a resource while running a probe."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause))
        self.cause = cause


#: errors that are razard's own (EMFILE: its descriptors), never the component's
_RESOURCE_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _raise_if_ours(exc: BaseException) -> None:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _RESOURCE_ERRNOS:
            raise _OwnTrouble(e) from exc
        e = e.__cause__ or e.__context__


class Prober:
    """Runs probes; holds one HTTP client shared by every http probe (made by the first).

    ``env`` is the base environment for exec probes (None: `PROBE_ENV`, never this
    process's own, which holds razard's tokens). Close it with `aclose` or use it as
    an async context manager.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None) -> None:
        self._env = dict(env) if env is not None else dict(PROBE_ENV)
        self._client: httpx.AsyncClient | None = None
        self._connector: Connector | None = None

    async def run(
        self, probe: ProbeConfig, *, cwd: str | None = None, user: str | None = None
    ) -> ProbeResult:
        """Run ``probe`` once within ``probe.timeout``; never raises for a failing probe.

        ``cwd``: where an exec probe runs (the component's working directory);
        ``user``: whom it runs as (the component's user; None: razard's own, as the
        component itself then runs). The program runs as that user, with that
        user's groups and a minimal environment (`PROBE_ENV`, ``HOME``, ``USER``).
        """
        start = time.monotonic()
        try:
            if probe.kind == "exec":
                ok, detail, output = await self._exec(probe, cwd, user)
            elif probe.kind == "http":
                ok, detail, output = await self._http(probe)
            elif probe.kind == "tcp":
                ok, detail, output = await self._tcp(probe)
            else:
                ok, detail, output = False, f"unknown probe type {probe.kind!r}", ""
        except _OwnTrouble as e:
            log.warning("%s probe not run: razard is short of resources: %s", probe.kind, e)
            return ProbeResult(
                False,
                time.monotonic() - start,
                f"not run: razard itself is short of resources ({e})",
                ours=True,
            )
        except Exception as e:  # a probe must not take the supervisor down with it
            ok, detail, output = False, f"probe error: {_describe(e)}", ""
        return ProbeResult(ok, time.monotonic() - start, detail, output)

    async def aclose(self) -> None:
        """Close the HTTP client and the TCP probes' epoll."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._connector is not None:
            self._connector.close()
            self._connector = None

    async def __aenter__(self) -> Prober:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ kinds

    async def _http(self, probe: ProbeConfig) -> tuple[bool, str, str]:
        if not probe.url:
            return False, "no URL configured", ""
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        try:
            async with asyncio.timeout(probe.timeout):
                async with self._client.stream(
                    "GET", probe.url, timeout=httpx.Timeout(probe.timeout)
                ) as response:
                    status = response.status_code
                    if status == probe.expect_status:
                        return True, f"HTTP {status}", ""
                    body = await _read_some(response)
                    return False, f"HTTP {status}, expected {probe.expect_status}", body
        except (TimeoutError, httpx.TimeoutException):
            return False, _timed_out(probe.timeout), ""
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            return False, f"invalid URL {probe.url!r}: {e}", ""
        except (httpx.HTTPError, OSError) as e:
            _raise_if_ours(e)
            return False, _describe(e), ""

    async def _tcp(self, probe: ProbeConfig) -> tuple[bool, str, str]:
        where = f"{probe.host}:{probe.port}"
        if not probe.port:
            return False, "no port configured", ""
        try:
            deadline = asyncio.get_running_loop().time() + probe.timeout
            await self._connect(probe.host, probe.port, deadline)
        except TimeoutError:
            return False, _timed_out(probe.timeout), ""
        except OSError as e:
            _raise_if_ours(e)
            return False, f"{_describe(e)} ({where})", ""
        return True, f"connected to {where}", ""

    async def _connect(self, host: str, port: int, deadline: float) -> None:
        """Open a TCP connection to ``host``:``port`` by ``deadline`` (loop time) and close
        it again; each address of a host name is tried in turn.

        Raises:
            OSError: the last address failed.
            TimeoutError: the time ran out.
        """
        loop = asyncio.get_running_loop()
        if self._connector is None or self._connector.loop is not loop:
            if self._connector is not None:  # a prober reused on another loop (tests)
                self._connector.close()
            self._connector = Connector(loop)
        connector = self._connector
        family = _literal_family(host)
        addresses: list[tuple[int, Any]] = [(family, (host, port))] if family else []
        if not family:  # a host name
            async with asyncio.timeout_at(deadline):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [(info[0], info[4]) for info in infos]
        error: OSError | None = None
        for fam, address in addresses:
            sock = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            try:
                await connector.connect(sock, address, deadline)
                # closed with a reset, as load balancers close their health checks: no FIN
                # handshake for the kernel to run and no TIME_WAIT entry left per probe
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
                return
            except OSError as e:
                error = e
            finally:
                sock.close()
        raise error or OSError(f"no address for {host}")

    async def _exec(
        self, probe: ProbeConfig, cwd: str | None, user: str | None
    ) -> tuple[bool, str, str]:
        if not probe.command:
            return False, "no command configured", ""
        program = probe.command[0]
        if not os.path.isabs(program):
            return False, f"the program must be an absolute path, got {program!r}", ""
        env = dict(self._env)
        identity: dict[str, Any] = {}
        if user:
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                return False, f"no such user {user!r}", ""
            env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
            if os.geteuid() == 0 and pw.pw_uid != 0:  # only root can (and must) switch
                identity = {
                    "user": pw.pw_uid,
                    "group": pw.pw_gid,
                    "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
                }
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                cwd=cwd or None,
                start_new_session=True,
                **identity,
            )
        except FileNotFoundError:
            return False, f"executable not found: {program}", ""
        except PermissionError:
            return False, f"permission denied: cannot execute {program}", ""
        except OSError as e:
            _raise_if_ours(e)
            return False, f"cannot run {program}: {_describe(e)}", ""

        loop = asyncio.get_running_loop()
        deadline = loop.time() + probe.timeout
        buf = bytearray()
        assert proc.stdout is not None
        reader = asyncio.create_task(_collect(proc.stdout, buf))
        timed_out = False
        rc: int | None = None
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    rc = await proc.wait()
            except TimeoutError:
                timed_out = True
            # The probe's whole session goes: the hung probe, or what it left behind.
            _kill_group(proc.pid)
            if timed_out:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_REAP_GRACE):
                        await proc.wait()
            # Output already written is in the pipe; wait a little for its end.
            grace = max(0.2, deadline - loop.time()) if not timed_out else 0.5
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await asyncio.shield(reader)
        finally:
            if proc.returncode is None:  # cancelled: do not leave the probe running
                _kill_group(proc.pid)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        output = _clip(buf.decode(errors="replace").strip())
        if timed_out:
            return False, _timed_out(probe.timeout), output
        if rc is None:  # not reaped within the grace period after SIGKILL
            return False, "did not exit after SIGKILL", output
        if rc == 0:
            return True, "exit status 0", output
        first = next((line.strip() for line in output.splitlines() if line.strip()), "")
        reason = f"killed by signal {-rc}" if rc < 0 else f"exit status {rc}"
        return False, f"{reason}: {first}" if first else reason, output


async def run_probe(probe: ProbeConfig, *, env: Mapping[str, str] | None = None) -> ProbeResult:
    """Run one probe with a temporary `Prober`; never raises for a failing probe."""
    async with Prober(env=env) as prober:
        return await prober.run(probe)


# --------------------------------------------------------------------------- helpers


#: SO_LINGER on, with no time: close() resets the connection instead of shutting it down.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


@functools.lru_cache(maxsize=256)
def _literal_family(host: str) -> int:
    """AF_INET or AF_INET6 for an IP address literal, 0 for a host name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return 0


def _expire(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Connector:
    """Non-blocking TCP connects completed through one epoll of its own.

    The handshake is all a TCP probe needs, so this skips what
    `loop.sock_connect` does per call (an event-loop writer registered and
    removed, a handle, a callback chain): each probe's socket goes into one epoll
    whose descriptor the loop watches once, and every connect it reports done is
    settled in one pass. At hundreds of probes that per-call machinery was most
    of razard's idle CPU. Sockets are closed by the caller; an entry whose caller
    gave up (timed out, cancelled) is removed before its descriptor can be reused.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._epoll = select.epoll()
        self._waiting: dict[int, tuple[socket.socket, asyncio.Future[None]]] = {}
        loop.add_reader(self._epoll.fileno(), self._settle)

    async def connect(self, sock: socket.socket, address: Any, deadline: float) -> None:
        """Connect the non-blocking ``sock`` to ``address`` by ``deadline`` (loop time).

        Raises:
            OSError: the connection failed (refused, unreachable, ...).
            TimeoutError: it was not made by the deadline.
        """
        err = sock.connect_ex(address)
        if err == 0:
            return
        if err != errno.EINPROGRESS:
            raise OSError(err, os.strerror(err))
        # on loopback the kernel runs the whole handshake inside connect(): the socket is
        # connected (or refused) already, and one getpeername() settles it without the
        # epoll entry, timer, future and task switch below (most of a probe's own CPU);
        # only a socket that is not connected is asked why (refused, or still under way)
        try:
            sock.getpeername()
            return
        except OSError as e:
            if e.errno != errno.ENOTCONN:
                raise
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        fd = sock.fileno()
        fut: asyncio.Future[None] = self.loop.create_future()
        self._waiting[fd] = (sock, fut)
        self._epoll.register(fd, select.EPOLLOUT | select.EPOLLONESHOT)
        # a plain timer, not asyncio.timeout: its task bookkeeping cost more than the connect
        timer = self.loop.call_at(deadline, _expire, fut)
        try:
            await fut
        finally:
            timer.cancel()
            if self._waiting.pop(fd, None) is not None:  # gave up before it finished
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)

    def _settle(self) -> None:
        for fd, _events in self._epoll.poll(0):
            entry = self._waiting.pop(fd, None)
            if entry is None:
                continue
            sock, fut = entry
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)
            if fut.done():
                continue
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fut.set_exception(OSError(err, os.strerror(err)))
            else:
                fut.set_result(None)

    def close(self) -> None:
        with contextlib.suppress(ValueError, RuntimeError):  # a loop already closed
            self.loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        for _sock, fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self._waiting.clear()


async def _collect(stream: asyncio.StreamReader, buf: bytearray) -> None:
    """Read ``stream`` to its end, keeping the first `_READ_CAP` bytes in ``buf``."""
    while chunk := await stream.read(65536):
        room = _READ_CAP - len(buf)
        if room > 0:
            buf += chunk[:room]


async def _read_some(response: httpx.Response) -> str:
    """The first `MAX_OUTPUT` characters of a response body."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= MAX_OUTPUT * 4:
            break
    return _clip(data.decode(errors="replace").strip())


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group a probe leads (it was started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_OUTPUT else text[: MAX_OUTPUT - 3] + "..."


def _timed_out(timeout: float) -> str:
    return f"timed out after {timeout:g}s"


def _describe(exc: BaseException) -> str:
    """A short reason for a failed connection or call, from the exception chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or (
            isinstance(e, OSError) and e.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return f"cannot resolve host: {e.strerror or e}"
        if isinstance(e, OSError) and e.errno is not None and e.strerror:
            return e.strerror[0].lower() + e.strerror[1:]
        e = e.__cause__ or e.__context__
    text = str(exc).strip()
    return _clip(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)

"""Hostile remote agents: real HTTP servers on 127.0.0.1 that send huge bodies, drip, garbage,
wrong JSON and redirects. Each call ends within its deadline, never reads past its byte cap,
and the ladder moves on to the next agent, which heals the component."""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import pytest

from razard.config import ComponentConfig
from razard.journal import EventLog
from razard.layout import INVOCATIONS_FILE
from razard.metrics import Metrics
from razard.repair.handover import FailureInfo, Handover, RosterEntry
from razard.repair.openai_agent import MAX_REPLY_BYTES, OpenAIAgent
from razard.repair.patch import PatchEngine
from razard.repair.roster import AgentSpec
from razard.repair.types import AgentFailed, RepairAgent, RepairContext
from razard.storage import read_jsonl
from tests.integration.fake_openai import FakeOpenAI, completion

pytestmark = pytest.mark.integration

DEADLINE = 2.0  # the agents' spec.timeout in these tests
MARGIN = 5.0  # scheduling slack on a shared machine; no assertion is tighter than this
GOOD = json.dumps(
    {
        "rationale": "a valid mode",
        "edits": [{"path": "app.conf", "search": "mode = broken", "replace": "mode = ok"}],
    }
)
CTX = RepairContext(component="x", unit="razar-x.service", layer="throat", error="bad mode")

Writer = asyncio.StreamWriter
Behaviour = Callable[["HostileServer", Writer], Awaitable[None]]


def head(status: int = 200, *extra: str, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", "Content-Type: application/json", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join([*lines, *extra, "", ""])).encode("latin-1")


def body(data: bytes, status: int = 200, *extra: str) -> Behaviour:
    """A complete reply with ``data`` as its body."""

    async def send(server: HostileServer, w: Writer) -> None:
        await server.write(w, head(status, *extra, length=len(data)) + data)

    return send


def doc(value: object) -> Behaviour:
    return body(json.dumps(value).encode())


def content(text: str) -> Behaviour:
    return doc({"choices": [{"message": {"role": "assistant", "content": text}}]})


async def endless(server: HostileServer, w: Writer, *, chunked: bool) -> None:
    """Send a body far past the client's cap: 1 GiB announced (or chunked without end)."""
    piece = b"[" * 65536
    if chunked:
        await server.write(w, head(200, "Transfer-Encoding: chunked"))
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    else:
        await server.write(w, head(200, length=1 << 30))
        frame = piece
    while server.sent < (1 << 30):
        await server.write(w, frame)


async def huge_announced(server: HostileServer, w: Writer) -> None:
    await endless(server, w, chunked=False)


async def huge_chunked(server: HostileServer, w: Writer) -> None:
    await endless(server, w, chunked=True)


async def huge_unannounced(server: HostileServer, w: Writer) -> None:
    """No Content-Length, no chunking: the body runs until the connection closes."""
    await server.write(w, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
    while server.sent < (1 << 30):
        await server.write(w, b" " * 65536)


async def drip_body(server: HostileServer, w: Writer) -> None:
    """Headers at once, then a valid completion one byte per second."""
    data = json.dumps({"choices": [{"message": {"content": GOOD}}]}).encode()
    await server.write(w, head(200, length=len(data)))
    for k in range(len(data)):
        await server.write(w, data[k : k + 1])
        await asyncio.sleep(1.0)


async def drip_headers(server: HostileServer, w: Writer) -> None:
    """The status line and headers themselves, one byte per second, forever."""
    for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000:
        await server.write(w, bytes([b]))
        await asyncio.sleep(1.0)


async def huge_headers(server: HostileServer, w: Writer) -> None:
    """One header line of many megabytes."""
    await server.write(w, b"HTTP/1.1 200 OK\r\nX-Big: ")
    while server.sent < (64 << 20):
        await server.write(w, b"a" * 65536)


async def gzip_bomb(server: HostileServer, w: Writer) -> None:
    """A small gzip body that inflates to 64 MiB, sent although identity was asked for."""
    await server.write(w, head(200, "Content-Encoding: gzip", length=len(BOMB)) + BOMB)


def _bomb(size: int = 64 << 20) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip stream
    zeros = b"\0" * (1 << 20)
    return b"".join([*(z.compress(zeros) for _ in range(size >> 20)), z.flush()])


BOMB = _bomb()


def redirect(status: int) -> Behaviour:
    async def send(server: HostileServer, w: Writer) -> None:
        assert server.elsewhere is not None
        await server.write(w, head(status, f"Location: {server.elsewhere}", length=0))

    return send


@dataclass
class HostileServer:
    """A real HTTP server on 127.0.0.1 that reads one request, then misbehaves as told.

    ``sent`` counts the body and header bytes the server managed to hand to its socket.
    """

    behaviour: Behaviour
    elsewhere: str | None = None  # where redirects point (another server, another port)
    sent: int = 0
    requests: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def write(self, w: Writer, data: bytes) -> None:
        w.write(data)
        await w.drain()
        self.sent += len(data)

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            length = 0
            while line := (await reader.readline()).strip():
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            await self.behaviour(self, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: what a bounded client does
        finally:
            self._tasks.discard(task)
            writer.close()


def spec(name: str = "hostile") -> AgentSpec:
    return AgentSpec(name=name, kind="openai", endpoint_env="X_URL", timeout=DEADLINE)


CASES: dict[str, tuple[Behaviour, str]] = {
    "huge body, announced": (huge_announced, "cap"),
    "huge body, chunked": (huge_chunked, "cap"),
    "huge body, until close": (huge_unannounced, "cap"),
    "gzip bomb": (gzip_bomb, "Content-Encoding"),
    "huge header": (huge_headers, "cannot reach"),
    "slow drip of the body": (drip_body, f"no reply within {DEADLINE:g}s"),
    "slow drip of the headers": (drip_headers, f"no reply within {DEADLINE:g}s"),
    "invalid UTF-8": (body(b'\xff\xfe{"choices": \xc3\x28 \x80}'), "not JSON"),
    "invalid UTF-8 in content": (
        body(b'{"choices": [{"message": {"content": "\xff\xfe\xfd"}}]}'),
        "not JSON",
    ),
    "a JSON array": (doc([1, 2, 3]), "no choices[0].message.content"),
    "a JSON number": (doc(42), "no choices[0].message.content"),
    "a JSON string": (doc("choices"), "no choices[0].message.content"),
    "null": (doc(None), "no choices[0].message.content"),
    "missing choices": (doc({"id": "x", "object": "chat.completion"}), "no choices"),
    "empty choices": (doc({"choices": []}), "no choices"),
    "choices an object": (doc({"choices": {"0": {"message": {"content": GOOD}}}}), "no choices"),
    "choice a list": (doc({"choices": [[GOOD]]}), "no choices"),
    "message a string": (doc({"choices": [{"message": GOOD}]}), "no choices"),
    "content a number": (doc({"choices": [{"message": {"content": 7}}]}), "no choices"),
    "content an object": (
        doc({"choices": [{"message": {"content": {"edits": []}}}]}),
        "no choices",
    ),
    "content a JSON array": (content("[1, 2]"), "not a JSON object"),
    "edits an object": (content('{"edits": {"path": "app.conf"}}'), "edits must be an array"),
    "edit a string": (content('{"edits": ["app.conf"]}'), "edits[0] must be an object"),
    "edit path a number": (
        content('{"edits": [{"path": 1, "search": "", "replace": ""}]}'),
        "edits[0].path",
    ),
    "replace a list": (
        content('{"edits": [{"path": "app.conf", "search": "", "replace": ["x"]}]}'),
        "search and replace must be strings",
    ),
    "diff a number": (content('{"diff": 12}'), "diff must be a string"),
    "rationale an object": (content('{"rationale": {}, "diff": "x"}'), "rationale must be"),
    "nested too deeply": (body(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
    "redirect 301": (redirect(301), "redirect to http://127.0.0.1:"),
    "redirect 302": (redirect(302), "not followed"),
    "redirect 307": (redirect(307), "not followed"),
    "redirect 308": (redirect(308), "not followed"),
}


@pytest.fixture
async def elsewhere() -> AsyncIterator[FakeOpenAI]:
    """Another server on another port, answering well: a redirect must never reach it."""
    async with FakeOpenAI() as s:
        yield s


async def ask(behaviour: Behaviour, elsewhere: FakeOpenAI) -> tuple[str, float, HostileServer]:
    """One propose() against a hostile server: the error, the seconds it took, the server."""
    async with HostileServer(behaviour, elsewhere=elsewhere.url + "/chat/completions") as server:
        agent = OpenAIAgent(spec(), server.url, "sk-hostile-token", max_retries=1)
        t0 = time.monotonic()
        try:
            # bounded, not timed: a TimeoutError here is a propose() that ignored its deadline
            with pytest.raises(AgentFailed) as info:
                async with asyncio.timeout(DEADLINE + MARGIN):
                    await agent.propose(CTX)
        finally:
            await agent.aclose()
        return str(info.value), time.monotonic() - t0, server


@pytest.mark.parametrize("case", list(CASES))
async def test_hostile_server_is_bounded(case: str, elsewhere: FakeOpenAI) -> None:
    """Each hostile reply fails the agent with its reason, within the deadline, under the cap."""
    behaviour, words = CASES[case]
    elsewhere.queue(completion(GOOD))
    error, took, server = await ask(behaviour, elsewhere)
    assert words in error, error
    # The client stopped reading at its cap: the 1 GiB the server meant to send never left it.
    # (Loopback socket buffers hold a few MiB the client never read; 32 MiB bounds them.)
    assert server.sent < MAX_REPLY_BYTES + (32 << 20)
    assert elsewhere.requests == [], "a redirect was followed"
    assert "sk-hostile-token" not in error
    print(f"{case}: failed in {took:.1f}s after the server sent {server.sent} bytes: {error[:90]}")


async def test_a_body_at_the_cap_is_read_and_one_byte_more_is_not(elsewhere: FakeOpenAI) -> None:
    """The cap is exact: a reply of MAX_REPLY_BYTES is read, one byte more is refused."""
    inner = json.dumps({"choices": [{"message": {"content": GOOD}}]}).encode()
    exact = inner + b" " * (MAX_REPLY_BYTES - len(inner))
    async with HostileServer(body(exact)) as server:
        agent = OpenAIAgent(spec(), server.url, None, max_retries=0)
        proposal = await agent.propose(CTX)
        await agent.aclose()
    assert proposal.edits[0].replace == "mode = ok"
    error, _, _ = await ask(body(exact + b" "), elsewhere)
    assert f"{MAX_REPLY_BYTES}-byte cap" in error


# --------------------------------------------------------------------------- the ladder


async def test_ladder_moves_past_every_hostile_agent_to_a_good_one(
    tmp_path: Path, elsewhere: FakeOpenAI
) -> None:
    """A roster of every hostile server, then a good one: each fails bounded, the last heals."""
    root = tmp_path / "app"
    root.mkdir()
    conf = root / "app.conf"
    conf.write_text("mode = broken\n")
    comp = ComponentConfig(
        name="x",
        layer="throat",
        priority=1,
        unit="razar-x.service",
        artifacts=("app.conf",),
        artifact_root=str(root),
    )
    servers = [
        HostileServer(b, elsewhere=elsewhere.url + "/chat/completions") for b, _ in CASES.values()
    ]
    agents: list[OpenAIAgent] = []
    async with FakeOpenAI() as good:
        good.queue(completion(GOOD))
        for s in servers:
            await s.__aenter__()
        try:
            roster: list[RosterEntry] = []
            for k, s in enumerate(servers):
                agents.append(OpenAIAgent(spec(f"hostile-{k}"), s.url, None, max_retries=0))
            agents.append(OpenAIAgent(spec("good"), good.url, None, max_retries=0))
            for a in agents:
                roster.append(
                    RosterEntry(name=a.name, kind="openai", factory=_const(a), max_attempts=1)
                )
            state = tmp_path / "state"
            handover = Handover(
                state,
                roster,
                PatchEngine(state),
                EventLog(tmp_path / "razar.log", socket_path=str(tmp_path / "no.sock")),
                Metrics("test"),
                journal=_no_journal,
            )

            async def verify() -> bool:
                return conf.read_text() == "mode = ok\n"

            t0 = time.monotonic()
            async with asyncio.timeout(len(servers) * (DEADLINE + MARGIN)):  # every agent bounded
                outcome = await handover.run(comp, FailureInfo(error="bad mode"), verify)
            took = time.monotonic() - t0
        finally:
            for a in agents:
                await a.aclose()
            for s in servers:
                await s.__aexit__(None, None, None)
    records = [r for r in read_jsonl(state / INVOCATIONS_FILE) if r["status"] != "started"]
    assert outcome.healed and outcome.agent == "good"
    assert [r["status"] for r in records] == ["failed"] * len(servers) + ["healed"]
    assert conf.read_text() == "mode = ok\n"
    assert elsewhere.requests == []
    print(
        f"hostile agents passed by the ladder: {len(servers)}/{len(servers)} in {took:.1f}s; "
        "healed by good"
    )


def _const(agent: OpenAIAgent) -> Callable[[ComponentConfig], RepairAgent]:
    def factory(comp: ComponentConfig) -> RepairAgent:
        return agent

    return factory


async def _no_journal(unit: str, since: float | None) -> tuple[str, ...]:
    return ()

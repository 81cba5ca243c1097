"""A real OpenAI-compatible HTTP server on 127.0.0.1 that plays a remote repair agent.

It answers ``POST .../chat/completions`` from a queue of scripted replies, in order, and
records every request it received. Built on asyncio streams (HTTP/1.1, one request per
connection) so it runs in the test's own event loop::

    async with FakeOpenAI() as server:
        server.queue(completion('{"rationale": "...", "diff": "..."}'))
        agent = OpenAIAgent(spec, server.url, "tok")
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer; ``hang`` means the server reads the request and never answers."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    hang: bool = False


@dataclass(frozen=True)
class Request:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def completion(content: str, finish_reason: str = "stop") -> Reply:
    """A 200 Chat Completions reply whose ``choices[0].message.content`` is ``content``."""
    doc = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
    }
    return Reply(200, json.dumps(doc).encode(), (("Content-Type", "application/json"),))


def error(status: int, message: str = "", *headers: tuple[str, str]) -> Reply:
    """An error reply with an OpenAI-style ``{"error": {"message": ...}}`` body."""
    body = json.dumps({"error": {"message": message or HTTPStatus(status).phrase}}).encode()
    return Reply(status, body, (("Content-Type", "application/json"), *headers))


@dataclass
class FakeOpenAI:
    """The server; `queue` replies, then read `requests`. A request with none queued gets 500."""

    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Request] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        """The base URL an agent is given (``http://127.0.0.1:PORT/v1``)."""
        assert self._server is not None, "server not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def __aenter__(self) -> FakeOpenAI:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):  # hung handlers: the server's close leaves them open
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away (for example at its deadline)
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1").strip()
        if not request_line:
            return
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, path, headers, body))
        if method != "POST" or not path.endswith("/chat/completions"):
            reply = error(404, f"no route for {method} {path}")
        else:
            reply = self.replies.popleft() if self.replies else error(500, "no reply queued")
        if reply.hang:
            await asyncio.Event().wait()  # until the test ends and cancels this task
        head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        head += [f"{k}: {v}" for k, v in reply.headers]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        writer.write("\r\n".join(head).encode("latin-1") + reply.body)
        await writer.drain()

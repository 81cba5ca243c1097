"""The openai repair agent against a real OpenAI-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Protocol

import httpx
import pytest

from razard.repair.openai_agent import OpenAIAgent, parse_retry_after
from razard.repair.roster import AgentSpec
from razard.repair.types import AgentFailed, AgentSkipped, FileEdit, RepairAgent, RepairContext
from tests.integration.fake_openai import FakeOpenAI, Reply, completion, error

pytestmark = pytest.mark.integration

TOKEN = "sk-test-0123456789abcdef"
CTX = RepairContext(
    component="inference",
    unit="razar-inference.service",
    layer="sacral",
    error="ModuleNotFoundError: No module named 'torchh'",
    probe_output="connection refused",
    artifacts={"serve.py": "import torchh\n"},
)
EDITS_REPLY = json.dumps(
    {
        "rationale": "typo in the import",
        "edits": [{"path": "serve.py", "search": "import torchh", "replace": "import torch"}],
    }
)
DIFF = "--- a/serve.py\n+++ b/serve.py\n@@ -1 +1 @@\n-import torchh\n+import torch\n"


def spec(timeout: float = 10.0, model: str = "kimi-k2") -> AgentSpec:
    return AgentSpec(
        name="k2-coder",
        kind="openai",
        endpoint_env="KIMI_K2_URL",
        auth="bearer",
        token_env="KIMI_K2_TOKEN",
        model=model,
        timeout=timeout,
        max_attempts=2,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    """A fresh fake Chat Completions server for one test."""
    async with FakeOpenAI() as s:
        yield s


class Counted:
    """An OpenAIAgent with the token, counting the retries it reports through on_retry."""

    def __init__(self, url: str, timeout: float, max_retries: int) -> None:
        self.retries = 0
        self.agent = OpenAIAgent(
            spec(timeout), url, TOKEN, max_retries=max_retries, on_retry=self._count
        )

    def _count(self) -> None:
        self.retries += 1


class MakeAgent(Protocol):
    def __call__(self, timeout: float = 10.0, max_retries: int = 3) -> Counted: ...


@pytest.fixture
async def make_agent(server: FakeOpenAI) -> AsyncIterator[MakeAgent]:
    """Builds counted agents on ``server``; closes them at the end of the test."""
    made: list[Counted] = []

    def make(timeout: float = 10.0, max_retries: int = 3) -> Counted:
        made.append(Counted(server.url, timeout, max_retries))
        return made[-1]

    yield make
    for c in made:
        await c.agent.aclose()


async def test_good_reply_with_edits_becomes_a_proposal(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """A JSON reply with search/replace edits becomes a Proposal with those edits and rationale."""
    server.queue(completion(EDITS_REPLY))
    a = make_agent()
    proposal = await a.agent.propose(CTX)
    assert proposal.agent == "k2-coder"
    assert proposal.rationale == "typo in the import"
    assert proposal.edits == (FileEdit("serve.py", "import torchh", "import torch"),)
    assert proposal.diff == ""
    assert proposal.raw == EDITS_REPLY
    assert a.retries == 0


async def test_good_reply_with_a_unified_diff_inside_a_fence(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """A unified diff in a ```json fenced reply is read into Proposal.diff."""
    content = "Here is the fix:\n```json\n" + json.dumps({"rationale": "r", "diff": DIFF}) + "\n```"
    server.queue(completion(content))
    proposal = await make_agent().agent.propose(CTX)
    assert proposal.diff == DIFF
    assert proposal.edits == ()
    assert proposal.raw == content


async def test_request_carries_model_context_token_and_format(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """The POST goes to /v1/chat/completions with the model, the error text and the bearer token."""
    server.queue(completion(EDITS_REPLY))
    await make_agent().agent.propose(CTX)
    (req,) = server.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == f"Bearer {TOKEN}"
    body = req.json()
    assert body["model"] == "kimi-k2"
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert CTX.error in body["messages"][1]["content"]
    assert "import torchh" in body["messages"][1]["content"]


async def test_endpoint_with_trailing_slash_and_no_token(server: FakeOpenAI) -> None:
    """A base URL ending in / reaches the same path, and no token sends no Authorization header."""
    server.queue(completion(EDITS_REPLY))
    agent = OpenAIAgent(spec(), server.url + "/", None)
    try:
        await agent.propose(CTX)
    finally:
        await agent.aclose()
    (req,) = server.requests
    assert req.path == "/v1/chat/completions"
    assert "authorization" not in req.headers


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ('{"rationale": "fix", "edits": [', "malformed reply: content is not a JSON object"),
        ("I think you should reinstall torch.", "malformed reply: content is not a JSON object"),
        ('["not", "an", "object"]', "malformed reply: content is not a JSON object"),
        ('{"rationale": "x", "edits": [{"path": 3}]}', "malformed reply: edits[0].path"),
        ('{"rationale": "x", "edits": "serve.py"}', "malformed reply: edits must be an array"),
        ('{"rationale": "cannot fix this without a GPU"}', "no change proposed: cannot fix"),
    ],
)
async def test_malformed_content_fails_without_retry(
    server: FakeOpenAI, make_agent: MakeAgent, content: str, reason: str
) -> None:
    """Content that is not a usable JSON proposal fails the attempt with the reason, no retry."""
    server.queue(completion(content))
    a = make_agent()
    with pytest.raises(AgentFailed, match=reason.replace("[", r"\[")):
        await a.agent.propose(CTX)
    assert len(server.requests) == 1
    assert a.retries == 0


async def test_a_body_that_is_not_a_completion_is_malformed(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """A 200 whose body is not JSON, or has no choices, is a malformed reply."""
    server.queue(Reply(200, b"<html>gateway</html>"), Reply(200, b'{"choices": []}'))
    a = make_agent()
    with pytest.raises(AgentFailed, match="malformed reply: the response is not JSON"):
        await a.agent.propose(CTX)
    with pytest.raises(AgentFailed, match=r"malformed reply: no choices\[0\].message.content"):
        await a.agent.propose(CTX)


async def test_429_retry_after_is_honoured_then_succeeds(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """429 with Retry-After: 1 is retried once, about a second later, and the 200 is used."""
    server.queue(error(429, "slow down", ("Retry-After", "1")), completion(EDITS_REPLY))
    a = make_agent()
    started = time.monotonic()
    proposal = await a.agent.propose(CTX)
    waited = time.monotonic() - started
    assert proposal.edits
    assert a.retries == 1
    assert len(server.requests) == 2
    assert waited >= 0.9  # the server's Retry-After, not the 0.5 s default backoff


async def test_500_is_retried_then_succeeds(server: FakeOpenAI, make_agent: MakeAgent) -> None:
    """A 500 is retried after backoff and the following 200 is used."""
    server.queue(error(500, "CUDA out of memory"), completion(EDITS_REPLY))
    a = make_agent()
    proposal = await a.agent.propose(CTX)
    assert proposal.rationale == "typo in the import"
    assert a.retries == 1
    assert len(server.requests) == 2


async def test_5xx_until_retries_run_out_fails_with_the_last_status(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """503 on every request fails after max_retries retries, naming the status and its message."""
    server.queue(*[error(503, "model loading", ("Retry-After", "0"))] * 3)
    a = make_agent(max_retries=2)
    with pytest.raises(AgentFailed, match=r"HTTP 503: model loading \(gave up after 3 requests\)"):
        await a.agent.propose(CTX)
    assert a.retries == 2
    assert len(server.requests) == 3


async def test_retry_after_beyond_the_deadline_fails_at_once(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """A Retry-After longer than the time left fails now instead of sleeping past the deadline."""
    server.queue(error(429, "quota", ("Retry-After", "20")))
    a = make_agent(timeout=5.0)
    started = time.monotonic()
    with pytest.raises(AgentFailed, match="HTTP 429: quota; a retry in 20s would pass the 5s"):
        await a.agent.propose(CTX)
    assert time.monotonic() - started < 4.0
    assert a.retries == 0


async def test_401_is_not_retried_and_never_shows_the_token(
    server: FakeOpenAI, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """401 fails at once with its status; a server echoing the token does not leak it."""
    server.queue(error(401, f"invalid api key {TOKEN}"))
    a = make_agent()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AgentFailed) as info:
        await a.agent.propose(CTX)
    assert str(info.value).startswith("HTTP 401: invalid api key ***")
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(a.agent) and TOKEN not in str(vars(a.agent))
    assert TOKEN not in caplog.text
    assert len(server.requests) == 1
    assert a.retries == 0


async def test_token_never_in_logs_raw_or_messages_across_retries(
    server: FakeOpenAI, make_agent: MakeAgent, caplog: pytest.LogCaptureFixture
) -> None:
    """A retried 503 and a reply echoing the token keep it out of logs, raw and the rationale."""
    echo = json.dumps({"rationale": f"used {TOKEN}", "diff": DIFF})
    server.queue(error(503, f"bad token {TOKEN}", ("Retry-After", "0")), completion(echo))
    a = make_agent()
    caplog.set_level(logging.DEBUG)
    proposal = await a.agent.propose(CTX)
    assert a.retries == 1
    assert TOKEN not in caplog.text
    assert TOKEN not in proposal.raw and TOKEN not in proposal.rationale
    assert "***" in proposal.raw


async def test_a_reply_that_never_comes_fails_at_the_deadline(
    server: FakeOpenAI, make_agent: MakeAgent
) -> None:
    """A server that reads the request and never answers fails the attempt after timeout=1."""
    server.queue(Reply(hang=True))
    a = make_agent(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(AgentFailed, match="no reply within 1s"):
        await a.agent.propose(CTX)
    assert 0.9 <= time.monotonic() - started < 5.0


async def test_unreachable_endpoint_fails_with_cannot_reach(free_port: int) -> None:
    """Nothing listening on the endpoint fails the attempt with "cannot reach" once retries end."""
    agent = OpenAIAgent(spec(), f"http://127.0.0.1:{free_port}/v1", TOKEN, max_retries=0)
    try:
        with pytest.raises(AgentFailed, match="cannot reach http://127.0.0.1") as info:
            await agent.propose(CTX)
    finally:
        await agent.aclose()
    assert TOKEN not in str(info.value)


async def test_given_client_is_used_and_left_open(server: FakeOpenAI) -> None:
    """A caller's httpx client carries the request and is not closed by aclose()."""
    server.queue(completion(EDITS_REPLY))
    async with httpx.AsyncClient(trust_env=False) as client:
        agent: RepairAgent = OpenAIAgent(spec(), server.url, TOKEN, client=client)
        assert (agent.name, agent.kind, agent.max_attempts) == ("k2-coder", "openai", 2)
        await agent.propose(CTX)
        assert isinstance(agent, OpenAIAgent)
        await agent.aclose()
        assert not client.is_closed


def test_empty_or_non_http_endpoint_skips_the_agent() -> None:
    """An agent with no endpoint, or a non-http one, is skipped with a reason naming what to set."""
    with pytest.raises(AgentSkipped, match="endpoint not configured: set KIMI_K2_URL"):
        OpenAIAgent(spec(), "", TOKEN)
    with pytest.raises(AgentSkipped, match="not an http:// or https:// URL"):
        OpenAIAgent(spec(), "ftp://models.example/v1", TOKEN)


def test_token_that_cannot_be_a_header_skips_without_showing_it() -> None:
    """A token with a newline or space is refused up front, and the message does not quote it."""
    for bad in (f"{TOKEN}\nX-Injected: 1", f"{TOKEN} extra"):
        with pytest.raises(AgentSkipped, match="not printable ASCII") as info:
            OpenAIAgent(spec(), "http://127.0.0.1:1/v1", bad)
        assert TOKEN not in str(info.value)


def test_credentials_in_the_endpoint_url_are_not_shown() -> None:
    """user:password in the endpoint URL is masked in the agent's repr."""
    agent = OpenAIAgent(spec(), "http://razar:hunter2@127.0.0.1:1/v1", None)
    assert "hunter2" not in repr(agent)
    assert "//***@127.0.0.1:1/v1/chat/completions" in repr(agent)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    """Retry-After is read as seconds or as an HTTP date; nonsense reads as absent."""
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    in_7s = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after("3", now.timestamp()) == 3.0
    assert parse_retry_after(in_7s, now.timestamp()) == pytest.approx(7.0)
    assert parse_retry_after(format_datetime(now - timedelta(days=1)), now.timestamp()) == 0.0
    assert parse_retry_after("soon", now.timestamp()) is None
    assert parse_retry_after("-4", now.timestamp()) is None
    assert parse_retry_after(None, now.timestamp()) is None

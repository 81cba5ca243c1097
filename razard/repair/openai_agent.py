"""A repair agent that speaks the OpenAI Chat Completions protocol (vLLM, llama.cpp, Ollama,
Moonshot's API: one client reaches them all).

propose(ctx)
  ->  POST {endpoint}/chat/completions   system: the reply format; user: ctx.prompt()
  ->  2xx: choices[0].message.content parsed as a JSON object  ->  Proposal
  ->  429, 5xx, connection lost: wait (Retry-After, else 0.5 s doubling), call on_retry, retry
  ->  3xx: AgentFailed("HTTP 302: redirect to http://host:port not followed"), no retry
  ->  any other status: AgentFailed("HTTP 401: ..."), no retry

One deadline, ``spec.timeout`` seconds, covers the whole call: every request, every wait, every
byte of a reply that drips in. A wait that would pass it fails at once instead of sleeping for
nothing. A reply is read raw (``Accept-Encoding: identity``; a compressed one is refused, so a
small gzip bomb cannot grow in memory) and never past `MAX_REPLY_BYTES`. Redirects are not
followed: the token must not travel to a host the roster does not name. The token goes into the
Authorization header and nowhere else: not into logs, exception messages, ``repr`` or
``Proposal.raw`` (a reply that echoes it has it masked).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any, Final

import httpx

from razard.repair.roster import AgentSpec
from razard.repair.types import AgentFailed, AgentSkipped, FileEdit, Proposal, RepairContext

log = logging.getLogger(__name__)

BACKOFF_BASE: Final = 0.5  # first wait without Retry-After; doubles each retry
BACKOFF_CAP: Final = 8.0
RETRY_AFTER_CAP: Final = 30.0  # the most a server's Retry-After makes us wait
MAX_REPLY_BYTES: Final = 4 * 1024 * 1024
EXCERPT_CHARS: Final = 200
MASK: Final = "***"

SYSTEM_PROMPT: Final = (
    "You repair a failed service on a Linux node by changing its files. "
    "Answer with one JSON object and nothing else, in one of two forms:\n"
    '{"rationale": "<one or two sentences: the cause and the fix>", '
    '"edits": [{"path": "<file as listed>", "search": "<exact text now in the file>", '
    '"replace": "<text to put instead>"}]}\n'
    '{"rationale": "<...>", "diff": "<unified diff, paths relative as listed>"}\n'
    "Each search text must occur exactly once in its file; an empty search replaces the "
    "whole file. Change only the files you are shown, as little as fixes the failure."
)

_URL_RE: Final = re.compile(r"^https?://[^/\s]+")
_USERINFO_RE: Final = re.compile(r"//[^/@]*@")
_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]+")
_FENCE_RE: Final = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)```", re.DOTALL)


class _Secret:
    """A token that does not show itself in repr, str or vars()."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    __str__ = __repr__


class OpenAIAgent:
    """One ``openai`` rung of the roster: asks a Chat Completions endpoint for a patch.

    ``endpoint`` is the resolved base URL (``http://host:port/v1``, with or without a trailing
    slash); ``token`` goes into ``Authorization: Bearer``. Without ``client`` the agent makes its
    own (``trust_env=False``: no proxy or netrc from the environment) and `aclose` closes it; a
    given client is the caller's to configure and close. ``on_retry`` is called once per retry
    (razard counts ``razar_ai_invocation_retries_total`` with it).
    """

    kind: str = "openai"

    def __init__(
        self,
        spec: AgentSpec,
        endpoint: str,
        token: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        if not endpoint:
            where = f"set {spec.endpoint_env}" if spec.endpoint_env else "no endpoint in roster"
            raise AgentSkipped(f"endpoint not configured: {where}")
        if not _URL_RE.match(endpoint):
            raise AgentSkipped(f"endpoint of {spec.name} is not an http:// or https:// URL")
        if token and not _TOKEN_RE.fullmatch(token):
            # checked here: an HTTP library refusing the header would quote it in its error
            raise AgentSkipped(f"token for {spec.name} is not printable ASCII without spaces")
        self.name = spec.name
        self.max_attempts = spec.max_attempts
        self.spec = spec
        self.url = endpoint.rstrip("/") + "/chat/completions"
        self._shown_url = _USERINFO_RE.sub("//***@", self.url, count=1)
        self._token = _Secret(token) if token else None
        self._max_retries = max(0, max_retries)
        self._on_retry = on_retry
        self._owns_client = client is None
        self._client = (
            client
            if client is not None
            else httpx.AsyncClient(trust_env=False, follow_redirects=False)
        )

    def __repr__(self) -> str:
        auth = "bearer" if self._token else "none"
        return f"OpenAIAgent(name={self.name!r}, url={self._shown_url!r}, auth={auth})"

    async def aclose(self) -> None:
        """Close the HTTP client if the agent made it."""
        if self._owns_client:
            await self._client.aclose()

    async def propose(self, ctx: RepairContext) -> Proposal:
        """Ask the endpoint for a patch; raises `AgentFailed` when no usable one comes back."""
        limit = self.spec.timeout
        payload = {
            "model": self.spec.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": ctx.prompt()},
            ],
            "temperature": 0,
            "response_format": {"type": "json_object"},
        }
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        last = ""
        try:
            async with asyncio.timeout_at(deadline):
                for attempt in range(self._max_retries + 1):
                    try:
                        status, reply_headers, body = await self._post(payload, headers)
                    except httpx.TimeoutException:
                        raise TimeoutError from None
                    except httpx.TransportError as e:
                        why = self._clean(str(e)) or type(e).__name__
                        last = f"cannot reach {self._shown_url}: {why}"
                        wait = _backoff(attempt)
                    except httpx.HTTPError as e:  # a reply httpx cannot decode: not transient
                        why = self._clean(str(e)) or type(e).__name__
                        raise AgentFailed(f"malformed reply: {why}") from None
                    else:
                        if 200 <= status < 300:
                            return self._proposal(body)
                        if 300 <= status < 400:
                            where = _origin(self.url, reply_headers.get("location", ""))
                            raise AgentFailed(f"HTTP {status}: redirect to {where} not followed")
                        last = f"HTTP {status}{self._error_excerpt(body)}"
                        if status != 429 and status < 500:
                            raise AgentFailed(last)
                        after = parse_retry_after(reply_headers.get("retry-after"), time.time())
                        wait = min(RETRY_AFTER_CAP, _backoff(attempt) if after is None else after)
                    if attempt == self._max_retries:
                        break
                    if wait >= deadline - loop.time():
                        raise AgentFailed(
                            f"{last}; a retry in {wait:g}s would pass the {limit:g}s deadline"
                        )
                    log.warning(
                        "agent %s: %s; retry %d/%d in %.1fs",
                        self.name,
                        last,
                        attempt + 1,
                        self._max_retries,
                        wait,
                    )
                    if self._on_retry is not None:
                        self._on_retry()
                    await asyncio.sleep(wait)
        except TimeoutError:
            suffix = f" (last: {last})" if last else ""
            raise AgentFailed(f"no reply within {limit:g}s{suffix}") from None
        raise AgentFailed(f"{last} (gave up after {self._max_retries + 1} requests)")

    async def _post(
        self, payload: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, httpx.Headers, bytes]:
        # httpx's own timeout is only a backstop: the asyncio deadline in propose governs.
        backstop = httpx.Timeout(self.spec.timeout + 1.0)
        async with self._client.stream(
            "POST",
            self.url,
            json=payload,
            headers=headers,
            timeout=backstop,
            follow_redirects=False,  # also when the caller's client would follow
        ) as resp:
            encoding = resp.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                shown = self._clean(encoding)[:40]
                raise AgentFailed(
                    f"malformed reply: Content-Encoding {shown!r} refused "
                    "(razard asks for identity)"
                )
            declared = resp.headers.get("content-length", "").strip()
            if declared.isdigit() and int(declared) > MAX_REPLY_BYTES:
                raise AgentFailed(
                    f"malformed reply: {declared} bytes announced, over the "
                    f"{MAX_REPLY_BYTES}-byte cap; not read"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_raw():
                size += len(chunk)
                if size > MAX_REPLY_BYTES:
                    raise AgentFailed(
                        f"malformed reply: larger than the {MAX_REPLY_BYTES}-byte cap; "
                        "stopped reading"
                    )
                chunks.append(chunk)
            return resp.status_code, resp.headers, b"".join(chunks)

    def _clean(self, text: str) -> str:
        """``text`` with the token masked, on one line, cut to `EXCERPT_CHARS`."""
        if self._token is not None:
            text = text.replace(self._token.reveal(), MASK)
        text = " ".join(text.split())
        return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."

    def _error_excerpt(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):  # {"error": {"message": ...}} or {"error": "..."}
            err = data.get("error")
            msg = err.get("message") if isinstance(err, dict) else err
            if isinstance(msg, str):
                text = msg
        text = self._clean(text)
        return f": {text}" if text else ""

    def _proposal(self, body: bytes) -> Proposal:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            text = self._clean(body.decode("utf-8", "replace"))
            raise AgentFailed(f"malformed reply: the response is not JSON: {text}") from None
        choice = _first_choice(data)
        message = choice.get("message") if choice is not None else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise AgentFailed("malformed reply: no choices[0].message.content")
        raw = content
        if self._token is not None:
            raw = raw.replace(self._token.reveal(), MASK)
        obj = _json_object(raw)
        if obj is None:
            cut = choice is not None and choice.get("finish_reason") == "length"
            why = "cut off at the model's length limit" if cut else "content is not a JSON object"
            raise AgentFailed(f"malformed reply: {why}: {self._clean(raw)}")
        return _to_proposal(self.name, obj, raw)


def _first_choice(data: Any) -> dict[str, Any] | None:
    choices = data.get("choices") if isinstance(data, dict) else None
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _json_object(content: str) -> dict[str, Any] | None:
    """The JSON object in ``content``: bare, or inside a ``` fence (```json or plain)."""
    candidates = [content.strip()] + [m.group(1).strip() for m in _FENCE_RE.finditer(content)]
    for text in candidates:
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _to_proposal(agent: str, obj: dict[str, Any], raw: str) -> Proposal:
    rationale = obj.get("rationale", "")
    diff = obj.get("diff", "")
    raw_edits = obj.get("edits", [])
    if not isinstance(rationale, str):
        raise AgentFailed("malformed reply: rationale must be a string")
    if not isinstance(diff, str):
        raise AgentFailed("malformed reply: diff must be a string")
    if not isinstance(raw_edits, list):
        raise AgentFailed("malformed reply: edits must be an array")
    edits: list[FileEdit] = []
    for i, e in enumerate(raw_edits):
        if not isinstance(e, dict):
            raise AgentFailed(f"malformed reply: edits[{i}] must be an object")
        path, search, replace = e.get("path"), e.get("search", ""), e.get("replace")
        if not isinstance(path, str) or not path:
            raise AgentFailed(f"malformed reply: edits[{i}].path must be a non-empty string")
        if not isinstance(search, str) or not isinstance(replace, str):
            raise AgentFailed(f"malformed reply: edits[{i}] search and replace must be strings")
        edits.append(FileEdit(path=path, search=search, replace=replace))
    if not edits and not diff.strip():
        said = f": {' '.join(rationale.split())[:EXCERPT_CHARS]}" if rationale.strip() else ""
        raise AgentFailed(f"no change proposed{said}")
    return Proposal(agent=agent, rationale=rationale, diff=diff, edits=tuple(edits), raw=raw)


def _origin(base: str, location: str) -> str:
    """``scheme://host:port`` of a redirect target: no path, query or credentials shown."""
    try:
        url = httpx.URL(base).join(location.strip())
        if url.scheme not in ("http", "https") or not url.host:
            return "a non-http URL"
        port = url.port or (443 if url.scheme == "https" else 80)
        return f"{url.scheme}://{url.host}:{port}"
    except (httpx.InvalidURL, ValueError, TypeError):
        return "an invalid URL"


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds, or an HTTP date), or None.

    ``now`` is the wall-clock time (``time.time()``) an HTTP date is measured against.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except (ValueError, RecursionError):
        pass
    else:
        return seconds if seconds >= 0 and seconds == seconds else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)

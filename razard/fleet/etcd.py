"""A small asyncio client for etcd's v3 API through its JSON gateway (grpc-gateway).

etcd serves its gRPC API as JSON over HTTP on the client port (``/v3/kv/range``,
``/v3/kv/txn``, ``/v3/lease/grant`` ...; the path is ``/v3/`` from etcd 3.4 on).
Keys and values travel base64-encoded, 64-bit numbers as strings. This module
speaks that and nothing more: the coordination itself (leases, transactions
that compare revisions) is etcd's.

Every call has a deadline (``timeout``, across all endpoints tried); a call
that cannot reach any endpoint raises `EtcdUnavailable`, one etcd refuses
raises `EtcdError`. The password is read from its file when the client
authenticates and is never logged or kept in a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from razard.errors import RazarError

_KEEP_CONNECTION: Final = 300.0  # seconds an idle connection to etcd is kept for reuse
_REQUIRE_LEADER: Final = "Grpc-Metadata-hasleader"  # etcd's require-leader, through the gateway


class EtcdError(RazarError):
    """etcd answered, and said no (or said something this client cannot read)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered within the deadline (down, no quorum, or unreachable)."""


class EtcdAuthError(EtcdError):
    """etcd refused the credentials (or wants some and none are configured)."""


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(data: Any) -> bytes:
    if not isinstance(data, str):
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except ValueError:
        return b""


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that selects every key starting with ``prefix`` (etcd's convention)."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return bytes(raw)
        raw.pop()
    return b"\0"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> KeyValue:
        return cls(
            key=unb64(raw.get("key")).decode("utf-8", "replace"),
            value=unb64(raw.get("value")),
            create_revision=_int(raw.get("create_revision")),
            mod_revision=_int(raw.get("mod_revision")),
            lease=_int(raw.get("lease")),
        )


@dataclass(frozen=True)
class Event:
    """One change read back from etcd's history: a put or a delete at a revision."""

    kind: str  # "PUT" or "DELETE"
    key: str
    revision: int
    value: bytes


# ---- request builders (the JSON of etcd's Compare and RequestOp messages)


def cmp_version(key: str, op: str, version: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "VERSION", "result": op, "version": str(version)}


def cmp_mod_below(prefix: str, revision: int) -> dict[str, Any]:
    """Every key under ``prefix`` was last changed before ``revision`` (none created since)."""
    return {
        "key": b64(prefix),
        "range_end": b64(prefix_end(prefix)),
        "target": "MOD",
        "result": "LESS",
        "mod_revision": str(revision),
    }


def cmp_mod(key: str, revision: int) -> dict[str, Any]:
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def op_put(key: str, value: bytes | str, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def op_range(key: str, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_range": body}


def op_delete(key: str, prefix: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = b64(prefix_end(key))
    return {"request_delete_range": body}


class Etcd:
    """One etcd cluster, reached through any of ``endpoints``."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 5.0,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        username: str = "",
        password_file: Path | None = None,
    ) -> None:
        if not endpoints:
            raise EtcdError("no etcd endpoints configured")
        self.endpoints = tuple(e.rstrip("/") for e in endpoints)
        self.timeout = timeout
        self._ca, self._cert, self._key = ca_file, cert_file, key_file
        self._username = username
        self._password_file = password_file
        self._token: str | None = None
        self._current = 0
        self._last_failure = ""  # why the last endpoint tried did not answer
        self._client: httpx.AsyncClient | None = None
        self.requests = 0  # HTTP requests sent to etcd (calls, retries, watches): what idle costs

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # plain http:// endpoints only: no TLS to verify, so skip loading the system's
            # CA bundle (~75 ms of CPU and ~1 MiB per client); any https:// verifies
            verify: ssl.SSLContext | bool = any(e.startswith("https:") for e in self.endpoints)
            if self._ca is not None or self._cert is not None:
                try:
                    ctx = ssl.create_default_context(
                        cafile=str(self._ca) if self._ca is not None else None
                    )
                    if self._cert is not None and self._key is not None:
                        ctx.load_cert_chain(str(self._cert), str(self._key))
                except (OSError, ssl.SSLError) as e:
                    raise EtcdError(f"cannot load the fleet's TLS files: {e}") from None
                verify = ctx
            # keep the connection between keepalives (one every lease_ttl/3): no TCP or TLS
            # handshake per renewal; a connection etcd closed meanwhile is noticed before
            # reuse, and a call that still meets one retries on a fresh connection
            limits = httpx.Limits(keepalive_expiry=_KEEP_CONNECTION)
            self._client = httpx.AsyncClient(verify=verify, trust_env=False, limits=limits)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Etcd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- transport

    async def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._call(path, body)
        except TimeoutError:
            last = f"; last: {self._last_failure}" if self._last_failure else ""
            raise EtcdUnavailable(
                f"etcd did not answer {path} within {self.timeout:g}s "
                f"({', '.join(self.endpoints)}){last}"
            ) from None

    async def _call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self._username and self._token is None and not path.startswith("auth/"):
            await self._authenticate()
        reauthed = False
        attempt = 0
        self._last_failure = ""
        while True:
            n = len(self.endpoints)
            tls_failures = 0
            for i in range(n):
                idx = (self._current + i) % n
                url = f"{self.endpoints[idx]}/v3/{path}"
                headers = {"Authorization": self._token} if self._token else {}
                # one slow member (no quorum) must not eat the whole deadline
                each = max(0.5, self.timeout / n)
                self.requests += 1
                try:
                    resp = await self._http().post(url, json=body, headers=headers, timeout=each)
                except httpx.HTTPError as e:  # refused, reset, timed out, TLS, bad encoding
                    self._last_failure = f"{self.endpoints[idx]}: {type(e).__name__}: {e}"
                    if _is_tls(e):
                        tls_failures += 1
                    continue
                data = _json(resp)
                if resp.status_code == 200 and "error" not in data:
                    self._current = idx
                    return data
                message = str(data.get("message") or data.get("error") or resp.text[:200])
                if "invalid auth token" in message or "auth token is expired" in message:
                    if self._username and not reauthed:
                        reauthed = True
                        await self._authenticate()
                        return await self._call(path, body)
                if resp.status_code in (401, 403) or "authentication failed" in message:
                    raise EtcdAuthError(f"etcd refused {path}: {message}")
                if "user name is empty" in message or "permission denied" in message:
                    raise EtcdAuthError(f"etcd refused {path}: {message}")
                if resp.status_code >= 500 or _transient(message):
                    self._last_failure = f"{self.endpoints[idx]}: {message}"
                    continue
                raise EtcdError(f"etcd refused {path}: {message}")
            if tls_failures == n:  # no endpoint's certificate checks out: waiting won't help
                raise EtcdUnavailable(f"TLS with etcd failed: {self._last_failure}")
            # every endpoint failed: wait a little (a leader election takes ~1 s) and retry
            # until the deadline in `call` ends it
            attempt += 1
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5))

    async def _authenticate(self) -> None:
        if self._password_file is None:
            raise EtcdAuthError("etcd wants credentials: set fleet.username and password_file")
        try:
            password = self._password_file.read_text().rstrip("\n")
        except OSError as e:
            raise EtcdAuthError(
                f"cannot read fleet.password_file {self._password_file}: {e.strerror or e}"
            ) from None
        self._token = None
        data = await self._call("auth/authenticate", {"name": self._username, "password": password})
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdAuthError("etcd gave no token for the fleet's credentials")
        self._token = token

    # ---- the API razar uses

    async def range(
        self, key: str, *, prefix: bool = False, revision: int = 0
    ) -> tuple[list[KeyValue], int]:
        """The keys at ``key`` (or under it, with ``prefix``) and the store's revision."""
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key))
        if revision:
            body["revision"] = str(revision)
        data = await self.call("kv/range", body)
        kvs = [KeyValue.of(kv) for kv in data.get("kvs") or [] if isinstance(kv, dict)]
        return kvs, _int((data.get("header") or {}).get("revision"))

    async def read(self, ranges: Sequence[tuple[str, bool]]) -> tuple[list[list[KeyValue]], int]:
        """Several ranges, each ``(key, prefix)``, read in one request at one revision (a
        transaction of reads only); the keys of each and that revision."""
        body = {"compare": [], "success": [op_range(k, p) for k, p in ranges], "failure": []}
        data = await self.call("kv/txn", body)
        out: list[list[KeyValue]] = []
        for resp in data.get("responses") or []:
            rng = (resp.get("response_range") or {}) if isinstance(resp, dict) else {}
            kvs = rng.get("kvs") if isinstance(rng, dict) else None
            out.append([KeyValue.of(kv) for kv in kvs or [] if isinstance(kv, dict)])
        if len(out) != len(ranges):
            raise EtcdError(f"etcd answered {len(out)} of {len(ranges)} reads in a transaction")
        return out, _int((data.get("header") or {}).get("revision"))

    async def get(self, key: str) -> KeyValue | None:
        kvs, _ = await self.range(key)
        return kvs[0] if kvs else None

    async def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        body = op_put(key, value, lease)["request_put"]
        data = await self.call("kv/put", body)
        return _int((data.get("header") or {}).get("revision"))

    async def delete(self, key: str, *, prefix: bool = False) -> int:
        body = op_delete(key, prefix)["request_delete_range"]
        data = await self.call("kv/deleterange", body)
        return _int(data.get("deleted"))

    async def txn(
        self,
        compare: Sequence[Mapping[str, Any]],
        success: Sequence[Mapping[str, Any]],
        failure: Sequence[Mapping[str, Any]] = (),
    ) -> tuple[bool, int]:
        """Run a transaction; (whether the comparisons held, the revision after it)."""
        body = {"compare": list(compare), "success": list(success), "failure": list(failure)}
        data = await self.call("kv/txn", body)
        return bool(data.get("succeeded")), _int((data.get("header") or {}).get("revision"))

    async def grant(self, ttl: float) -> int:
        data = await self.call("lease/grant", {"TTL": str(max(1, round(ttl)))})
        lease = _int(data.get("ID"))
        if not lease:
            raise EtcdError(f"etcd granted no lease: {data.get('error') or data}")
        return lease

    async def keepalive(self, lease: int) -> int:
        """Renew ``lease`` once; its TTL now, 0 when it is gone (expired or revoked)."""
        data = await self.call("lease/keepalive", {"ID": str(lease)})
        result = data.get("result") if isinstance(data.get("result"), dict) else data
        return _int((result or {}).get("TTL"))

    async def revoke(self, lease: int) -> None:
        try:
            await self.call("lease/revoke", {"ID": str(lease)})
        except EtcdError as e:
            if "not found" not in str(e):
                raise

    async def status(self) -> dict[str, Any]:
        """The answering member's status (version, leader, raft term)."""
        return await self.call("maintenance/status", {})

    async def watch_once(
        self, prefix: str, start_revision: int, wait: float, *, deletes_only: bool = False
    ) -> bool:
        """Wait up to ``wait`` seconds for a change under ``prefix`` at or after
        ``start_revision`` (only a delete, with ``deletes_only``: etcd filters the puts);
        True when one came (False on timeout or any error: the caller reads again either
        way)."""
        create: dict[str, Any] = {
            "key": b64(prefix),
            "range_end": b64(prefix_end(prefix)),
            "start_revision": str(start_revision),
        }
        if deletes_only:
            create["filters"] = ["NOPUT"]
        body = {"create_request": create}
        url = f"{self.endpoints[self._current]}/v3/watch"
        headers = {"Authorization": self._token} if self._token else {}
        self.requests += 1
        try:
            async with asyncio.timeout(wait):
                async with self._http().stream(
                    "POST", url, json=body, headers=headers, timeout=None
                ) as resp:
                    if resp.status_code != 200:
                        return False
                    async for line in resp.aiter_lines():
                        result = _json_text(line).get("result") or {}
                        if result.get("events") or result.get("canceled"):
                            return bool(result.get("events"))
        except (TimeoutError, httpx.HTTPError):
            return False
        return False

    async def watch(
        self,
        key: str,
        start_revision: int,
        on_event: Callable[[Event], None],
        *,
        wait: float,
        prefix: bool = False,
    ) -> int:
        """Call ``on_event`` for every change at ``key`` (or under it, with ``prefix``) from
        ``start_revision`` on, for up to ``wait`` seconds, on one long-lived stream; the
        last revision seen (``start_revision - 1`` when none). Returns early when etcd
        ends the watch (history compacted, member stopping); raises `EtcdUnavailable` when
        the stream cannot be opened or breaks, `EtcdError` when etcd refuses it."""
        create: dict[str, Any] = {"key": b64(key), "start_revision": str(start_revision)}
        if prefix:
            create["range_end"] = b64(prefix_end(key))
        if self._username and self._token is None:
            await self._authenticate()
        url = f"{self.endpoints[self._current]}/v3/watch"
        headers = {"Authorization": self._token} if self._token else {}
        # a member that loses its leader ends the watch ("no leader") instead of leaving it
        # open and silent while the rest of the cluster moves on
        headers[_REQUIRE_LEADER] = "true"
        last = start_revision - 1
        self.requests += 1
        timeout = httpx.Timeout(self.timeout, read=None)  # quiet for hours is fine
        try:
            async with asyncio.timeout(wait):
                async with self._http().stream(
                    "POST", url, json={"create_request": create}, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status_code != 200:
                        text = (await resp.aread())[:200].decode("utf-8", "replace")
                        raise EtcdError(f"etcd refused a watch: HTTP {resp.status_code} {text}")
                    async for line in resp.aiter_lines():
                        data = _json_text(line)
                        if "error" in data:
                            err = data["error"]
                            why = str(err.get("message") if isinstance(err, dict) else err)
                            if _transient(why):  # no leader, unavailable: ask elsewhere
                                raise EtcdUnavailable(f"etcd ended a watch: {why}")
                            raise EtcdError(f"etcd ended a watch: {why}")
                        result = data.get("result") or {}
                        for ev in result.get("events") or []:
                            kv = KeyValue.of(ev.get("kv") or {})
                            last = max(last, kv.mod_revision)
                            kind = "DELETE" if ev.get("type") == "DELETE" else "PUT"
                            on_event(Event(kind, kv.key, kv.mod_revision, kv.value))
                        if result.get("canceled"):
                            return last
        except TimeoutError:
            return last
        except httpx.HTTPError as e:
            raise EtcdUnavailable(f"etcd watch failed: {type(e).__name__}: {e}") from None
        return last

    async def history(self, prefix: str, start_revision: int = 1, idle: float = 0.5) -> list[Event]:
        """Every put and delete under ``prefix`` since ``start_revision``, in revision order,
        read through a watch until it has been quiet for ``idle`` seconds."""
        body = {
            "create_request": {
                "key": b64(prefix),
                "range_end": b64(prefix_end(prefix)),
                "start_revision": str(start_revision),
            }
        }
        events: list[Event] = []
        url = f"{self.endpoints[self._current]}/v3/watch"
        headers = {"Authorization": self._token} if self._token else {}
        try:
            async with self._http().stream(
                "POST", url, json=body, headers=headers, timeout=None
            ) as resp:
                lines = resp.aiter_lines()
                while True:
                    try:
                        line = await asyncio.wait_for(anext(lines), idle)
                    except (TimeoutError, StopAsyncIteration):
                        break
                    result = _json_text(line).get("result") or {}
                    for ev in result.get("events") or []:
                        kv = KeyValue.of(ev.get("kv") or {})
                        events.append(
                            Event(ev.get("type") or "PUT", kv.key, kv.mod_revision, kv.value)
                        )
        except httpx.TransportError as e:
            raise EtcdUnavailable(f"etcd watch failed: {e}") from None
        return events


def _is_tls(error: BaseException) -> bool:
    """True for a TLS handshake that failed (a certificate mismatch), not a refused port."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_TRANSIENT = ("leader changed", "no leader", "timed out", "unavailable", "too many requests")


def _transient(message: str) -> bool:
    m = message.lower()
    return any(t in m for t in _TRANSIENT)


def _json(resp: httpx.Response) -> dict[str, Any]:
    return _json_text(resp.text)


def _json_text(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {"error": f"not JSON: {text[:200]!r}"}
    return data if isinstance(data, dict) else {"error": "not a JSON object"}

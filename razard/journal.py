"""Structured event output: journald's native protocol, ``razar.log``, and stderr.

Every event razard reports goes out through :meth:`EventLog.emit`, which writes it

- to journald as one datagram with ``RAZAR_*`` fields, so an operator can run
  ``journalctl RAZAR_COMPONENT=vllm RAZAR_EVENT=restart``;
- to ``razar.log`` as one JSON line (the file the original runbooks read);
- optionally to stderr as one human line, for razard in the foreground.

journald may be absent (a development box, a container): that costs one warning
on stderr per process, never an exception. Logging must not take the supervisor
down, so a ``razar.log`` that cannot be written is reported the same way.
"""

from __future__ import annotations

import errno
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

from razard import storage
from razard.errors import StateError

JOURNAL_SOCKET = "/run/systemd/journal/socket"
# Used only after journald refused a datagram as too large: the kernel's default
# send buffer for AF_UNIX datagrams is about 208 KiB, so this leaves room for the
# other fields while keeping a stack trace readable.
TRUNCATED_MESSAGE_BYTES = 64 * 1024
TRUNCATION_MARKER = "\n[razard: message truncated]"

FieldValue = str | int | float | bool | None

_FIELD_NAME = re.compile(r"[A-Z0-9_]+")
_MAX_FIELD_NAME = 64  # journald drops fields with longer names
_RESERVED_LOG_KEYS = frozenset({"ts", "unix", "level"})

_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([A-Za-z0-9_-]*(?:token|secret|password|passwd|api[_-]?key))"
    r"(\"?\s*[=:]\s*\"?)[^\s\"'&,;]+"
)


class Priority(IntEnum):
    """syslog priorities, as journald's ``PRIORITY`` field carries them."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


def redact(value: str) -> str:
    """Return ``value`` with bearer tokens and ``token=``/``password:``-style secrets masked.

    Meant for anything that may carry a credential (URLs, headers, command lines,
    a remote agent's error text) before it reaches a log. Only the secret is
    replaced by ``***``; the key and separator are kept so the line stays readable.
    """
    value = _BEARER.sub(r"\1\2***", value)
    return _SECRET_ASSIGNMENT.sub(r"\1\2***", value)


class _Once:
    """A process-wide "have we said this yet" flag, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False

    def first(self) -> bool:
        """Return True the first time it is called in this process, False after."""
        with self._lock:
            if self._done:
                return False
            self._done = True
            return True

    def reset(self) -> None:
        """Forget that the warning was given (for tests)."""
        with self._lock:
            self._done = False


# Module level, not per EventLog: the promise is one warning per process.
journald_warning = _Once()
logfile_warning = _Once()


class EventLog:
    """Writes each event to journald, ``razar.log`` and optionally stderr."""

    def __init__(
        self,
        log_path: Path | None,
        identifier: str = "razard",
        socket_path: str = JOURNAL_SOCKET,
        mirror_to_stderr: bool = False,
    ) -> None:
        """Send to journald at ``socket_path`` and append to ``log_path`` (None: no file).

        ``identifier`` becomes ``SYSLOG_IDENTIFIER``; ``mirror_to_stderr`` adds a
        human-readable line on stderr for each event.
        """
        self.log_path = log_path
        self.identifier = identifier
        self.socket_path = socket_path
        self.mirror_to_stderr = mirror_to_stderr
        self._socket: socket.socket | None = None
        self._socket_lock = threading.Lock()
        #: called with (event, message, component, fields) after each event is written
        #: (razard's fleet notes quarantines and failure signatures this way); never raise
        self.observers: list[Callable[[str, str, str | None, Mapping[str, FieldValue]], None]] = []
        #: called with an event's journal fields and its time when journald did not take it
        #: (razard's spool for its escalation notifier, `razard.escalation.spool`); never raise
        self.unjournaled: Callable[[Sequence[tuple[str, str]], float], None] | None = None

    def emit(
        self,
        event: str,
        message: str,
        *,
        component: str | None = None,
        layer: str | None = None,
        priority: int = Priority.INFO,
        **fields: FieldValue,
    ) -> None:
        """Record one event everywhere this log writes to.

        The message is given `named` after ``component``: a line of the plain journal
        (``journalctl -u razard``) says which component it is about. ``event`` is a
        short machine name (``restart``, ``quarantine``); extra
        keyword ``fields`` become ``RAZAR_<KEY>`` in journald and keys of the
        JSON line. None values are left out. The message and string fields pass
        through :func:`redact`. Failure to reach journald or the log file is
        reported once on stderr and otherwise ignored.

        Raises:
            ValueError: ``priority`` is not 0-7, or a field name cannot be a
                journald field or collides with ``ts``/``unix``/``level``.
        """
        level = Priority(priority)
        extras = _clean_fields(fields)
        bare = redact(message)
        message = named(component, bare)
        now = time.time()

        if self.log_path is not None:
            _write_log_line(self.log_path, now, level, event, message, component, layer, extras)
        self._send_journald(now, level, event, message, component, layer, extras)
        if self.mirror_to_stderr:  # its line names the component already
            one_line = bare.replace("\n", "\\n")
            say(f"{level.name.lower()} {component or '-'} {event}: {one_line}")
        for observe in self.observers:
            observe(event, bare, component, extras)

    def close(self) -> None:
        """Close the journald socket; a later emit opens a new one."""
        with self._socket_lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send_journald(
        self,
        now: float,
        level: Priority,
        event: str,
        message: str,
        component: str | None,
        layer: str | None,
        extras: dict[str, str | int | float | bool],
    ) -> None:
        tail: list[tuple[str, str]] = [
            ("PRIORITY", str(int(level))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("RAZAR_EVENT", event),
        ]
        if component is not None:
            tail.append(("RAZAR_COMPONENT", component))
        if layer is not None:
            tail.append(("RAZAR_LAYER", layer))
        tail.extend((f"RAZAR_{key.upper()}", _render(value)) for key, value in extras.items())

        fields = [("MESSAGE", message), *tail]
        try:
            try:
                self._send(encode_fields(fields))
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                fields[0] = ("MESSAGE", _truncate(message))
                self._send(encode_fields(fields))
        except OSError as exc:
            # journald absent, stopped, or its queue full: the event is already in
            # razar.log, and blocking or raising here would stall the supervisor.
            if self.unjournaled is not None:
                self.unjournaled(fields, now)
            if journald_warning.first():
                say(
                    f"razard: warning: journald at {self.socket_path} unavailable "
                    f"({exc.strerror or exc}); events go to razar.log only"
                )

    def _send(self, datagram: bytes) -> None:
        with self._socket_lock:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock = self._socket
        # sendto every time rather than connect once: a restarted journald makes
        # a new socket at the same path, and sendto reaches it without reconnecting.
        sock.sendto(datagram, socket.MSG_DONTWAIT, self.socket_path)


def one_line(text: str) -> str:
    """``text`` with every control character (newlines too) made a space: for lines that
    carry text from elsewhere to a reader that splits on them (sd_notify's ``STATUS=``)."""
    return "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)


def say(line: str) -> None:
    """Write ``line`` to stderr, or nothing where stderr is gone.

    Under systemd razard's stderr is a stream socket to journald: when journald is
    stopped (its sockets too) a write there fails with EPIPE, and a warning about that
    very outage must not become an exception in whatever was emitting an event (it took
    the supervision of the component being restarted down with it)."""
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EPIPE and the like; ValueError: stderr closed
        pass


def named(component: str | None, message: str) -> str:
    """``component: message``, unless ``message`` begins with the component's name already
    (``api quarantined: ...``) or there is no component."""
    if not component or message.startswith((f"{component}: ", f"{component} ")):
        return message
    return f"{component}: {message}"


def encode_fields(fields: list[tuple[str, str]]) -> bytes:
    """Encode ``(NAME, value)`` pairs as one journald native-protocol datagram.

    A value holding a newline uses the binary form: ``NAME\\n``, its length as a
    64-bit little-endian integer, the bytes, ``\\n``.
    """
    parts: list[bytes] = []
    for name, value in fields:
        data = value.encode("utf-8", errors="replace")
        key = name.encode("ascii")
        if b"\n" in data:
            parts.append(key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key + b"=" + data + b"\n")
    return b"".join(parts)


def _write_log_line(
    log_path: Path,
    now: float,
    level: Priority,
    event: str,
    message: str,
    component: str | None,
    layer: str | None,
    extras: dict[str, str | int | float | bool],
) -> None:
    ts = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
    record: dict[str, Any] = {
        "ts": ts.replace("+00:00", "Z"),
        "unix": now,
        "level": level.name.lower(),
        "event": event,
        "component": component,
        "layer": layer,
        "message": message,
    }
    record.update(extras)
    try:
        storage.append_jsonl(log_path, record)
    except StateError as exc:
        if logfile_warning.first():
            say(f"razard: warning: events not logged to file: {exc}")


def _clean_fields(fields: dict[str, FieldValue]) -> dict[str, str | int | float | bool]:
    cleaned: dict[str, str | int | float | bool] = {}
    for key, value in fields.items():
        name = f"RAZAR_{key.upper()}"
        if key in _RESERVED_LOG_KEYS:
            raise ValueError(f"event field {key!r} collides with a razar.log key")
        if not _FIELD_NAME.fullmatch(name) or len(name) > _MAX_FIELD_NAME:
            raise ValueError(f"event field {key!r} cannot be a journald field name ({name})")
        if value is None:
            continue
        cleaned[key] = redact(value) if isinstance(value, str) else value
    return cleaned


def _render(value: str | int | float | bool) -> str:
    # Lower-case booleans match what JSON and most journalctl queries expect.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truncate(message: str) -> str:
    data = message.encode("utf-8", errors="replace")
    if len(data) <= TRUNCATED_MESSAGE_BYTES:
        return message
    # errors="ignore" drops a multi-byte character cut in half at the boundary.
    return data[:TRUNCATED_MESSAGE_BYTES].decode("utf-8", errors="ignore") + TRUNCATION_MARKER

"""razarctl's client of razard's control interface: one blocking socket, no event loop.

razarctl runs one call (two for ``stop``) and exits, so most of what it costs is
starting up. :class:`SyncControlClient` makes the calls of
:class:`razard.control.ControlClient` (the asyncio client) with what
:mod:`razard.dbuswire` loads of dbus-fast (its messages, marshaller, unmarshaller,
EXTERNAL authenticator and address parser), without asyncio or dbus-fast's buses,
over a plain socket:

- connect as dbus-fast's bus does: each address of the bus in turn (``unix:path=``,
  ``unix:abstract=``, ``tcp:``), SASL EXTERNAL as this process's uid, ``Hello``;
- call: one method call of ``org.razar.Supervisor1`` (NO_AUTOSTART), then read
  messages until its reply, skipping the bus's signals (NameAcquired).

Arguments, replies, errors and every message an operator reads come from
:mod:`razard.controlapi`, as for the asyncio client. Deadlines: connecting (socket,
authentication, Hello) within the client's deadline, then each call within its own:
every wait on the socket is for at most the time left.
"""

from __future__ import annotations

import math
import os
import select
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from razard.controlapi import (
    BUS_NAME,
    DEFAULT_CALL_TIMEOUT,
    INTERFACE,
    OBJECT_PATH,
    Operation,
    SupervisorControl,
    bus_address,
    bus_where,
    call_error,
    connect_error,
    lost_connection_error,
    no_answer_error,
    operation_of,
)
from razard.dbuswire import (
    Authenticator,
    AuthError,
    AuthExternal,
    DBusError,
    InvalidAddressError,
    Message,
    MessageFlag,
    MessageType,
    Unmarshaller,
    parse_address,
)

P = ParamSpec("P")
R = TypeVar("R")

_AUTH_LINE_MAX = 16 * 1024
"""The longest SASL line accepted from the bus (as dbus-fast's own buses)."""

_HELLO_SERIAL = 1


def _time_left(deadline: float) -> float | None:
    """Seconds to ``deadline`` (monotonic) for a socket timeout; None: no deadline.

    Raises TimeoutError once it has passed.
    """
    if math.isinf(deadline):
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def _unconnected_socket(transport: str, options: Mapping[str, str]) -> tuple[socket.socket, Any]:
    """A socket for one parsed bus address, and what to connect it to (as dbus-fast's
    ``BaseMessageBus._create_socket_for_transport``)."""
    if transport == "unix":
        if "path" in options:
            target: Any = options["path"]
        elif "abstract" in options:
            target = b"\0" + options["abstract"].encode()
        else:
            raise InvalidAddressError("got unix transport with unknown path specifier")
        return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), target
    if transport == "tcp":
        try:
            port = int(options["port"]) if "port" in options else 0
        except ValueError as exc:
            raise InvalidAddressError(
                f"got tcp transport with invalid port: {options['port']!r}"
            ) from exc
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), (options.get("host", ""), port)
    raise InvalidAddressError(f"got unknown address transport: {transport}")


def _connect_socket(address: str, deadline: float) -> socket.socket:
    """A socket connected to the first of ``address``'s transports that answers."""
    last: Exception | None = None
    for transport, options in parse_address(address):
        sock, target = _unconnected_socket(transport, options)
        try:
            sock.settimeout(_time_left(deadline))
            sock.connect(target)
        except Exception as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise last if last is not None else InvalidAddressError("no address to connect to")


def _authenticate(sock: socket.socket, deadline: float) -> None:
    """SASL EXTERNAL as this process's uid, through dbus-fast's authenticator; BEGIN."""
    auth = AuthExternal()
    sock.settimeout(_time_left(deadline))
    sock.sendall(b"\0")
    sock.sendall(Authenticator._format_line(auth._authentication_start(negotiate_unix_fd=False)))
    while True:
        line = b""
        while not line.endswith(b"\r\n"):
            sock.settimeout(_time_left(deadline))
            chunk = sock.recv(1024)
            if not chunk:
                raise AuthError("connection closed during authentication")
            line += chunk
            if len(line) > _AUTH_LINE_MAX:
                raise AuthError("auth line exceeded maximum size")
        response = auth._receive_line(line[:-2].decode())
        sock.settimeout(_time_left(deadline))
        sock.sendall(Authenticator._format_line(response))
        if response == "BEGIN":
            return


class SyncControlClient:
    """razard's control interface over a blocking socket (what razarctl uses).

    ``client.call(SupervisorControl.status)`` runs one operation; its arguments and
    reply are typed by the :class:`SupervisorControl` method. Every call has a
    deadline; every failure is a :class:`~razard.errors.ControlError` (or
    :class:`~razard.errors.UnknownComponent`) with the same message the asyncio
    :class:`razard.control.ControlClient` gives.
    """

    def __init__(self, sock: socket.socket, bus_name: str, address: str, timeout: float) -> None:
        """Wrap a connected, authenticated socket; use :meth:`connect` instead."""
        self._sock = sock
        self._unmarshaller = Unmarshaller(None, sock, False)
        self._serial = _HELLO_SERIAL
        self._bus_name = bus_name
        self._address = address
        self._timeout = timeout

    @classmethod
    def connect(
        cls,
        bus: str = "system",
        address: str | None = None,
        deadline_s: float = DEFAULT_CALL_TIMEOUT,
    ) -> SyncControlClient:
        """Connect to the ``system`` or ``user`` bus, or to ``address`` when given.

        ``deadline_s`` bounds the connection (socket, authentication, Hello) and then
        each call.
        """
        addr = bus_address(bus, address, os.environ)
        deadline = time.monotonic() + deadline_s
        try:
            sock = _connect_socket(addr, deadline)
        except Exception as exc:  # OSError, TimeoutError, InvalidAddressError, ...
            raise connect_error(bus_where(bus, addr), exc, deadline_s) from None
        client = cls(sock, bus, addr, deadline_s)
        try:
            _authenticate(sock, deadline)
            client._hello(deadline)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, Exception):  # AuthError, EOFError, a refused Hello, ...
                raise connect_error(bus_where(bus, addr), exc, deadline_s) from None
            raise
        return client

    def __enter__(self) -> SyncControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect from the bus."""
        self._sock.close()

    @overload
    def call(
        self,
        op: Callable[Concatenate[SupervisorControl, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    def call(
        self, op: Callable[Concatenate[SupervisorControl, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    def call(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the operation ``op`` (a :class:`SupervisorControl` method) in razard; its reply.

        Waits the operation's own deadline (Heal, HealLayer) or this client's.
        Raises UnknownComponent for an unknown ``name``, ControlError for the rest.
        """
        operation = operation_of(op)
        limit = self._timeout if operation.deadline_s is None else operation.deadline_s
        return self._invoke(operation, limit, args, kwargs)

    @overload
    def call_within(
        self,
        deadline_s: float | None,
        op: Callable[Concatenate[SupervisorControl, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    def call_within(
        self,
        deadline_s: float | None,
        op: Callable[Concatenate[SupervisorControl, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    def call_within(
        self, deadline_s: float | None, op: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """:meth:`call` waiting ``deadline_s`` seconds (None: until razard answers).

        Giving up does not stop razard: it carries on with the operation.
        """
        limit = math.inf if deadline_s is None else deadline_s
        return self._invoke(operation_of(op), limit, args, kwargs)

    def _invoke(
        self, op: Operation, limit: float, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        body, name = op.request(args, kwargs)
        message = Message(
            destination=BUS_NAME,
            path=OBJECT_PATH,
            interface=INTERFACE,
            member=op.member,
            # razard is a systemd service, not bus-activated: do not ask the
            # bus to start it, so "not running" is reported as such.
            flags=MessageFlag.NO_AUTOSTART,
            signature=op.in_signature,
            body=body,
            serial=self._next_serial(),
        )
        try:
            reply = self._exchange(message, time.monotonic() + limit)
        except TimeoutError:
            # razard keeps working on the request; only this client gave up.
            raise no_answer_error(op.member, limit) from None
        except (OSError, EOFError) as exc:
            where = bus_where(self._bus_name, self._address)
            raise lost_connection_error(where, op.member, exc) from None
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise call_error(self._bus_name, op.member, name, reply.error_name or "", text)
        return op.reply_from_bus(list(reply.body))

    def _hello(self, deadline: float) -> None:
        """The bus's Hello, the first message of every connection."""
        hello = Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="Hello",
            serial=_HELLO_SERIAL,
        )
        reply = self._exchange(hello, deadline)
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DBusError(reply.error_name or "", text)

    def _next_serial(self) -> int:
        self._serial += 1
        return self._serial

    def _exchange(self, message: Message, deadline: float) -> Message:
        """Send ``message`` and return the bus's reply to it.

        Raises TimeoutError at ``deadline``, EOFError or OSError when the connection
        breaks.
        """
        self._sock.settimeout(_time_left(deadline))
        self._sock.sendall(message._marshall(False))
        # The unmarshaller reads what the socket has; non-blocking, it returns None
        # until a message is whole, and the wait for more is here (a socket timeout
        # inside dbus-fast's compiled reader would not be reported as one).
        self._sock.setblocking(False)
        readable = select.poll()
        readable.register(self._sock, select.POLLIN)
        while True:
            received = self._unmarshaller.unmarshall()
            if received is None:
                left = _time_left(deadline)
                readable.poll(None if left is None else math.ceil(left * 1000))
                continue
            if received.reply_serial == message.serial and received.message_type in (
                MessageType.METHOD_RETURN,
                MessageType.ERROR,
            ):
                return received

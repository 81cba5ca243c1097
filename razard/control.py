"""razard's control interface on D-Bus, and its asyncio client.

The operations, their form on the bus, the names and the errors are defined once in
:mod:`razard.controlapi` (re-exported here); this module derives from that definition

- :class:`ControlInterface`, the D-Bus object razard serves: one method per operation,
  its argument and reply signatures from the operation's annotations, every error
  crossing the bus through one translation (:func:`_dbus_error`);
- :class:`ControlClient`, the asyncio client (tests, a caller that already runs a
  loop): ``await client.call(SupervisorControl.heal, name, False, None, None)``.
  razarctl uses :class:`razard.controlsync.SyncControlClient`, the same calls on a
  blocking socket, which needs no event loop and starts faster.

razard exports one object::

    name       org.razar.Supervisor1
    path       /org/razar/Supervisor1
    interface  org.razar.Supervisor1
      Status Start Stop Restart QuarantineList QuarantineRelease Reload Ladder
      Patches Diff Rollback Heal Chakra HealLayer   (one per operation)
      Version: s (read-only property)

``busctl introspect org.razar.Supervisor1 /org/razar/Supervisor1`` shows each
method's signature; ``tests/integration/test_control.py`` pins them, as the
shipped D-Bus policy and existing callers rely on them.

Heal can take as long as the repair ladder does (with ``long_task``: until the
component is healthy). A client that stops waiting does not stop razard: the
call carries on to its end (there is no Abort method yet).

Errors cross the bus under these names and turn back into razard's exceptions
in the clients (:func:`razard.controlapi.call_error`)::

    UnknownComponent         org.razar.Error.UnknownComponent
    ConfigError              org.razar.Error.InvalidConfig   (message: every problem)
    any other RazarError     org.razar.Error.Failed
      (RepairError included: "nothing to roll back", "no diff stored", ...)
    anything unexpected      org.razar.Error.Internal        (logged here, never sent)

This module holds no supervision logic of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar, overload

from dbus_fast import (
    DBusError,
    Message,
    MessageFlag,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusStr
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from razard import __version__
from razard.controlapi import (
    ARGUMENTS,
    BUS_NAME,
    BUSES,
    DEFAULT_CALL_TIMEOUT,
    DEFAULT_SYSTEM_BUS_ADDRESS,
    ERROR_FAILED,
    ERROR_INTERNAL,
    ERROR_INVALID_CONFIG,
    ERROR_UNKNOWN_COMPONENT,
    HEAL_CALL_TIMEOUT,
    INTERFACE,
    NOT_GIVEN,
    OBJECT_PATH,
    OPERATIONS,
    REPLIES,
    Argument,
    Operation,
    Parameter,
    RazardNotRunning,
    SupervisorControl,
    bus_address,
    bus_where,
    call_error,
    connect_error,
    lost_connection_error,
    no_answer_error,
    operation,
    operation_of,
)
from razard.errors import ConfigError, ControlError, RazarError, UnknownComponent

__all__ = [
    "ARGUMENTS",
    "BUSES",
    "BUS_NAME",
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_SYSTEM_BUS_ADDRESS",
    "ERROR_FAILED",
    "ERROR_INTERNAL",
    "ERROR_INVALID_CONFIG",
    "ERROR_UNKNOWN_COMPONENT",
    "HEAL_CALL_TIMEOUT",
    "INTERFACE",
    "NOT_GIVEN",
    "OBJECT_PATH",
    "OPERATIONS",
    "REPLIES",
    "Argument",
    "ControlClient",
    "ControlInterface",
    "Operation",
    "Parameter",
    "RazardNotRunning",
    "SupervisorControl",
    "bus_address",
    "export_control",
    "operation",
    "operation_of",
    "unexport_control",
]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


# --- the service side -------------------------------------------------------------


def _dbus_error(what: str, exc: Exception) -> DBusError:
    """The D-Bus error a client sees for ``exc`` raised while serving ``what``."""
    if isinstance(exc, UnknownComponent):
        log.info("%s refused: %s", what, exc)
        return DBusError(ERROR_UNKNOWN_COMPONENT, str(exc))
    if isinstance(exc, ConfigError):
        log.warning("%s refused, invalid config: %s", what, exc)
        return DBusError(ERROR_INVALID_CONFIG, str(exc))
    if isinstance(exc, RazarError):
        log.warning("%s failed: %s", what, exc)
        return DBusError(ERROR_FAILED, str(exc))
    # A bug in razard: the operator finds the traceback in the journal; the
    # client gets only the exception's type, never paths or locals.
    log.exception("%s raised an unexpected error", what)
    return DBusError(
        ERROR_INTERNAL,
        f"razard failed internally ({type(exc).__name__}); see its journal",
    )


class ControlInterface(ServiceInterface):
    """The ``org.razar.Supervisor1`` interface, served from a :class:`SupervisorControl`.

    Its methods are made from :data:`OPERATIONS` below the class.
    """

    def __init__(self, supervisor: SupervisorControl) -> None:
        super().__init__(INTERFACE)
        self._supervisor = supervisor

    async def serve(self, op: Operation, wire: Sequence[Any]) -> Any:
        """Run ``op`` on the supervisor with the arguments off the bus; its reply for the bus.

        Every error becomes the D-Bus error the client reads back (see :func:`_dbus_error`).
        """
        try:
            args = [p.from_bus(v) for p, v in zip(op.params, wire, strict=True)]
            result = getattr(self._supervisor, op.method)(*args)
            if inspect.isawaitable(result):
                result = await result
            return op.reply_to_bus(result)
        except Exception as exc:
            raise _dbus_error(op.label(wire), exc) from None

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        """razard's version."""
        return __version__


def _dbus_method(op: Operation) -> Callable[..., Any]:
    """The D-Bus method serving ``op``: dbus-fast reads its signature from the annotations."""

    async def method(self: ControlInterface, *wire: Any) -> Any:
        return await self.serve(op, wire)

    method.__name__ = op.member
    method.__qualname__ = f"{ControlInterface.__name__}.{op.member}"
    method.__doc__ = op.doc
    method.__dict__["__signature__"] = inspect.Signature(
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            *(
                inspect.Parameter(
                    p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=p.wire.signature
                )
                for p in op.params
            ),
        ],
        return_annotation=op.reply_signature,
    )
    return dbus_method(name=op.member)(method)


for _op in OPERATIONS:
    setattr(ControlInterface, _op.member, _dbus_method(_op))


async def export_control(bus: MessageBus, supervisor: SupervisorControl) -> ControlInterface:
    """Serve ``supervisor`` on ``bus`` and own :data:`BUS_NAME`.

    The object is exported before the name is requested, so the first call
    that finds the name also finds the object. The name is requested with
    DO_NOT_QUEUE: a second razard fails here instead of waiting in line.

    Raises ControlError when the name is already owned or the bus policy
    refuses it; nothing stays exported then.
    """
    iface = ControlInterface(supervisor)
    try:
        bus.export(OBJECT_PATH, iface)
    except ValueError as exc:
        raise ControlError(f"{INTERFACE} is already exported on this connection") from exc
    try:
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    except DBusError as exc:
        bus.unexport(OBJECT_PATH, iface)
        raise ControlError(f"cannot own {BUS_NAME} on this bus: {exc.text}") from exc
    except BaseException:
        bus.unexport(OBJECT_PATH, iface)
        raise
    if reply is not RequestNameReply.PRIMARY_OWNER:
        bus.unexport(OBJECT_PATH, iface)
        raise ControlError(f"another razard already owns {BUS_NAME} on this bus")
    log.info("control interface on %s as %s", OBJECT_PATH, BUS_NAME)
    return iface


async def unexport_control(bus: MessageBus, iface: ControlInterface) -> None:
    """Give up :data:`BUS_NAME` and remove the object; safe on a closed bus."""
    if bus.connected:
        try:
            await bus.release_name(BUS_NAME)
        except (DBusError, OSError, EOFError) as exc:
            log.warning("could not release %s: %s", BUS_NAME, exc)
    bus.unexport(OBJECT_PATH, iface)


class ControlClient:
    """The asyncio client of razard's control interface (razarctl's is
    :class:`razard.controlsync.SyncControlClient`).

    ``await client.call(SupervisorControl.status)`` runs one operation; its
    arguments and reply are typed by the :class:`SupervisorControl` method.
    Every call has a deadline; every failure is a :class:`ControlError` (or
    :class:`UnknownComponent`) with a message fit for an operator.
    """

    def __init__(self, bus: MessageBus, bus_name: str, address: str, timeout: float) -> None:
        """Wrap a connected bus; use :meth:`connect` instead."""
        self._bus = bus
        self._bus_name = bus_name
        self._address = address
        self._timeout = timeout

    @classmethod
    async def connect(
        cls,
        bus: str = "system",
        address: str | None = None,
        deadline_s: float = DEFAULT_CALL_TIMEOUT,
    ) -> ControlClient:
        """Connect to the ``system`` or ``user`` bus, or to ``address`` when given.

        ``deadline_s`` bounds the connection and then each call.
        """
        addr = bus_address(bus, address, os.environ)
        try:
            async with asyncio.timeout(deadline_s):
                message_bus = await MessageBus(bus_address=addr).connect()
        except Exception as exc:  # OSError, TimeoutError, AuthError, InvalidAddressError, ...
            raise connect_error(bus_where(bus, addr), exc, deadline_s) from None
        return cls(message_bus, bus, addr, deadline_s)

    async def __aenter__(self) -> ControlClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Disconnect from the bus."""
        self._bus.disconnect()

    @overload
    async def call(
        self,
        op: Callable[Concatenate[SupervisorControl, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def call(
        self, op: Callable[Concatenate[SupervisorControl, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R: ...

    async def call(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run the operation ``op`` (a :class:`SupervisorControl` method) in razard; its reply.

        Waits the operation's own deadline (Heal, HealLayer) or this client's.
        Raises UnknownComponent for an unknown ``name``, ControlError for the rest.
        """
        operation = operation_of(op)
        limit = self._timeout if operation.deadline_s is None else operation.deadline_s
        return await self._invoke(operation, limit, args, kwargs)

    @overload
    async def call_within(
        self,
        deadline_s: float | None,
        op: Callable[Concatenate[SupervisorControl, P], Awaitable[R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    @overload
    async def call_within(
        self,
        deadline_s: float | None,
        op: Callable[Concatenate[SupervisorControl, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...

    async def call_within(
        self, deadline_s: float | None, op: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """:meth:`call` waiting ``deadline_s`` seconds (None: until razard answers).

        Giving up does not stop razard: it carries on with the operation.
        """
        limit = math.inf if deadline_s is None else deadline_s
        return await self._invoke(operation_of(op), limit, args, kwargs)

    async def _invoke(
        self, op: Operation, limit: float, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        body, name = op.request(args, kwargs)
        reply = await self._call(op.member, op.in_signature, body, name=name, deadline_s=limit)
        return op.reply_from_bus(reply)

    async def _call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        name: str | None = None,
        deadline_s: float | None = None,
    ) -> list[Any]:
        """Call ``member``; ``name`` is the component (for UnknownComponent).

        ``deadline_s`` None is the client's deadline, ``math.inf`` none at all.
        """
        msg = Message(
            destination=BUS_NAME,
            path=OBJECT_PATH,
            interface=INTERFACE,
            member=member,
            # razard is a systemd service, not bus-activated: do not ask the
            # bus to start it, so "not running" is reported as such.
            flags=MessageFlag.NO_AUTOSTART,
            signature=signature,
            body=body or [],
        )
        limit = self._timeout if deadline_s is None else deadline_s
        try:
            async with asyncio.timeout(None if math.isinf(limit) else limit):
                reply = await self._bus.call(msg)
        except TimeoutError:
            # razard keeps working on the request; only this client gave up.
            raise no_answer_error(member, limit) from None
        except DBusError as exc:
            raise call_error(self._bus_name, member, name, exc.type, exc.text) from None
        except (OSError, EOFError) as exc:
            where = bus_where(self._bus_name, self._address)
            raise lost_connection_error(where, member, exc) from None
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise call_error(self._bus_name, member, name, reply.error_name or "", text)
        return list(reply.body)

"""razard's control interface on D-Bus, and the client razarctl uses to reach it.

Each control operation is defined once: a method of :class:`SupervisorControl`
marked with :func:`operation`, which gives its D-Bus member name. Everything
else is derived from that one definition:

- the D-Bus method of ``org.razar.Supervisor1`` that :class:`ControlInterface`
  serves: its argument and reply signatures come from the method's annotations
  through :data:`ARGUMENTS` and :data:`REPLIES` (``str`` is ``s``, ``bool`` is
  ``b``, an optional argument crosses the bus as ``""`` or ``-1``, a dict or list
  reply as JSON text), and every error crosses it through one translation;
- the client call, typed by the same annotations:
  ``await client.call(SupervisorControl.heal, name, False, None, None)``;
- what the supervisor implements: mypy checks it against the protocol.

razard exports one object::

    name       org.razar.Supervisor1
    path       /org/razar/Supervisor1
    interface  org.razar.Supervisor1
      Status Start Stop Restart QuarantineList QuarantineRelease Reload Ladder
      Patches Diff Rollback Heal Chakra HealLayer   (one per operation below)
      Version: s (read-only property)

``busctl introspect org.razar.Supervisor1 /org/razar/Supervisor1`` shows each
method's signature; ``tests/integration/test_control.py`` pins them, as the
shipped D-Bus policy and existing callers rely on them.

Heal can take as long as the repair ladder does (with ``long_task``: until the
component is healthy). A client that stops waiting does not stop razard: the
call carries on to its end (there is no Abort method yet).

Errors cross the bus under these names and turn back into razard's exceptions
in :class:`ControlClient`::

    UnknownComponent         org.razar.Error.UnknownComponent
    ConfigError              org.razar.Error.InvalidConfig   (message: every problem)
    any other RazarError     org.razar.Error.Failed
      (RepairError included: "nothing to roll back", "no diff stored", ...)
    anything unexpected      org.razar.Error.Internal        (logged here, never sent)

This module holds no supervision logic of its own.

One module (~700 lines) on purpose: each operation's one definition, the D-Bus method
derived from it and the client call derived from it stay side by side, so no second
definition can drift from the first.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, get_type_hints, overload

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
from razard.errors import ConfigError, ControlError, RazarError, UnknownComponent

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

BUS_NAME = "org.razar.Supervisor1"
OBJECT_PATH = "/org/razar/Supervisor1"
INTERFACE = "org.razar.Supervisor1"

ERROR_UNKNOWN_COMPONENT = "org.razar.Error.UnknownComponent"
ERROR_INVALID_CONFIG = "org.razar.Error.InvalidConfig"
ERROR_FAILED = "org.razar.Error.Failed"
ERROR_INTERNAL = "org.razar.Error.Internal"

BUSES = ("system", "user")
DEFAULT_SYSTEM_BUS_ADDRESS = "unix:path=/run/dbus/system_bus_socket"
DEFAULT_CALL_TIMEOUT = 30.0
"""Seconds razarctl waits for razard to answer one call (connecting included)."""
HEAL_CALL_TIMEOUT = 3600.0
"""Seconds razarctl waits for a Heal or HealLayer by default: the ladder may try many agents."""
NOT_GIVEN = -1
"""An optional count (Heal's ``retries``, ``remote_attempts``) on the bus when the caller gave
none."""

_NO_OWNER_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    }
)
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"


class RazardNotRunning(ControlError):
    """The bus answered but nobody owns :data:`BUS_NAME`: razard is not running there."""


def operation(member: str, *, deadline_s: float | None = None) -> Callable[[F], F]:
    """Mark a :class:`SupervisorControl` method as the D-Bus method ``member``.

    ``deadline_s``: how long a client waits for it by default, instead of its
    per-call deadline (for operations that may run as long as the repair ladder).
    """

    def mark(fn: F) -> F:
        fn.__dict__["__razar_operation__"] = (member, deadline_s)
        return fn

    return mark


class SupervisorControl(Protocol):
    """The control operations: what razard's supervisor offers the control interface.

    Each method is one D-Bus method (its member name in :func:`operation`) and
    one :meth:`ControlClient.call`. Every method may raise
    :class:`~razard.errors.RazarError`; the interface turns it into a D-Bus
    error the client reads back. Optional arguments are None when not given.
    """

    @operation("Status")
    def status(self) -> dict[str, Any]:
        """The supervisor's state.

        ``{"summary", "ready", "pid", "version", "config", "components": [...]}``;
        each component has ``name, unit, layer, priority, state, healthy,
        restarts, quarantined, last_error, since`` (ISO-8601 or None).
        """
        ...

    @operation("Start")
    async def start_component(self, name: str) -> None:
        """Start ``name``, also clearing an operator stop; raises UnknownComponent."""
        ...

    @operation("Stop")
    async def stop_component(self, name: str) -> None:
        """Stop ``name`` and leave it unhealed until started; raises UnknownComponent."""
        ...

    @operation("Restart")
    async def restart_component(self, name: str) -> None:
        """Restart ``name``; raises UnknownComponent."""
        ...

    @operation("QuarantineList")
    def quarantined(self) -> list[dict[str, Any]]:
        """Quarantine records: ``{"component","reason","last_error","attempts","time"}``."""
        ...

    @operation("QuarantineRelease")
    async def release(self, name: str) -> None:
        """Release ``name`` from quarantine.

        Raises UnknownComponent, or ControlError when it is not quarantined.
        """
        ...

    @operation("Reload")
    async def reload(self) -> None:
        """Re-read the config; raises ConfigError (nothing changes) when it is invalid."""
        ...

    @operation("Ladder")
    def ladder(self) -> dict[str, Any]:
        """The repair roster and the thresholds in force.

        ``{"roster": [{"name", "kind", "configured", "skip_reason", "max_attempts",
        "takes_over_after"}], "thresholds": {"rstar", "escalation_warning"},
        "remote_attempts", "long_task", "restart_attempts": {component: int}}``;
        ``takes_over_after`` is set for rStar only, ``escalation_warning`` and
        ``remote_attempts`` are None when off or unbounded.
        """
        ...

    @operation("Patches")
    def patches(self, name: str) -> list[dict[str, Any]]:
        """``name``'s patch records, oldest first; raises UnknownComponent.

        Each has ``patch_id, status, agent, diff_hash, files, reason, time``.
        """
        ...

    @operation("Diff")
    def diff(self, name: str, patch_id: str | None) -> str:
        """The stored diff of ``patch_id`` (None: the latest applied patch).

        Raises UnknownComponent, or RepairError when there is none.
        """
        ...

    @operation("Rollback")
    async def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        """Undo ``name``'s last kept patch (or every kept patch from ``to`` on).

        Restarts the unit; returns the ``reverted`` record. Raises
        UnknownComponent, or RazarError (``...: nothing to roll back``).
        """
        ...

    @operation("Heal", deadline_s=HEAL_CALL_TIMEOUT)
    async def heal(
        self, name: str, long_task: bool, retries: int | None, remote_attempts: int | None
    ) -> dict[str, Any]:
        """Run the handover flow for ``name`` now.

        Returns ``{"healed": bool, "attempts": int, "agent": str|None,
        "patch_id": str|None}``; raises UnknownComponent.
        """
        ...

    @operation("Chakra")
    def chakra(self) -> list[dict[str, Any]]:
        """Each layer: ``layer, state, pulse_age_s, hz, window_s, last_beat, sensor, sources,
        outages, healer, healer_runs, last_heal, healing``."""
        ...

    @operation("HealLayer", deadline_s=HEAL_CALL_TIMEOUT)
    async def heal_layer(self, layer: str, dry_run: bool) -> dict[str, Any]:
        """Run ``layer``'s healer now; the run record (``result, reason, steps, ...``)."""
        ...


# --- what an annotation means on the bus ----------------------------------------


@dataclass(frozen=True)
class Argument:
    """How one argument type crosses the bus."""

    signature: str
    none: object = None
    """What stands for None on the bus (None: the argument cannot be None)."""
    minimum: int | None = None
    """The least value razard accepts (a count), else any."""


ARGUMENTS: dict[object, Argument] = {
    str: Argument("s"),
    bool: Argument("b"),
    str | None: Argument("s", none=""),
    int | None: Argument("i", none=NOT_GIVEN, minimum=0),
}
"""Each argument type an operation may take, and its form on the bus."""

REPLIES: dict[object, tuple[str, type | None]] = {
    type(None): ("", None),
    str: ("s", str),
    dict[str, Any]: ("s", dict),
    list[dict[str, Any]]: ("s", list),
}
"""Each reply type: its signature, and the Python type it is (dict and list go as JSON)."""

_JSON_NAMES: dict[type, str] = {dict: "a JSON object", list: "a JSON list"}


@dataclass(frozen=True)
class Parameter:
    """One argument of an operation."""

    name: str
    wire: Argument

    def from_bus(self, value: Any) -> Any:
        """The value the supervisor gets for ``value`` as it came off the bus."""
        if self.wire.none is not None and value == self.wire.none:
            return None
        if self.wire.minimum is not None and value < self.wire.minimum:
            what = self.name.replace("_", " ")
            raise RazarError(
                f"{what} must be {self.wire.minimum} or more "
                f"(or {self.wire.none}: not given), got {value}"
            )
        return bool(value) if self.wire.signature == "b" else value

    def to_bus(self, value: Any) -> Any:
        return self.wire.none if value is None and self.wire.none is not None else value


@dataclass(frozen=True)
class Operation:
    """One control operation, as read from its :class:`SupervisorControl` method."""

    member: str
    method: str
    params: tuple[Parameter, ...]
    reply_signature: str
    reply_type: type | None
    deadline_s: float | None
    doc: str
    signature: inspect.Signature

    @property
    def in_signature(self) -> str:
        return "".join(p.wire.signature for p in self.params)

    def label(self, wire: Sequence[Any]) -> str:
        """How the journal names one call, e.g. ``Diff(api, '')``."""
        if not wire:
            return self.member
        first, *rest = wire
        return f"{self.member}({', '.join([str(first), *map(repr, rest)])})"

    def reply_to_bus(self, value: Any) -> Any:
        if self.reply_type is None:
            return None
        if self.reply_type is str:
            return value
        # default=str: a stray datetime or Path should not turn a query into an internal error.
        return json.dumps(value, default=str, sort_keys=True)

    def reply_from_bus(self, body: Sequence[Any]) -> Any:
        if self.reply_type is None:
            return None
        if len(body) != 1 or not isinstance(body[0], str):
            raise ControlError(f"razard sent a malformed reply to {self.member}")
        if self.reply_type is str:
            return body[0]
        try:
            value = json.loads(body[0])
        except ValueError:
            value = None
        if not isinstance(value, self.reply_type):
            raise ControlError(
                f"razard sent a malformed reply to {self.member} "
                f"(not {_JSON_NAMES[self.reply_type]})"
            )
        return value


def _operation(fn: Callable[..., Any]) -> Operation:
    member, deadline_s = fn.__dict__["__razar_operation__"]
    hints = get_type_hints(fn)
    signature = inspect.signature(fn)
    names = list(signature.parameters)[1:]  # self
    unknown = [n for n in names if hints[n] not in ARGUMENTS]
    if unknown or hints["return"] not in REPLIES:
        raise TypeError(f"{fn.__qualname__}: no D-Bus form for {unknown or 'its return type'}")
    reply_signature, reply_type = REPLIES[hints["return"]]
    return Operation(
        member=member,
        method=fn.__name__,
        params=tuple(Parameter(n, ARGUMENTS[hints[n]]) for n in names),
        reply_signature=reply_signature,
        reply_type=reply_type,
        deadline_s=deadline_s,
        doc=inspect.getdoc(fn) or "",
        signature=signature,
    )


OPERATIONS: tuple[Operation, ...] = tuple(
    _operation(fn)
    for fn in vars(SupervisorControl).values()
    if callable(fn) and "__razar_operation__" in getattr(fn, "__dict__", {})
)
"""Every control operation, in the order :class:`SupervisorControl` defines them."""

_BY_METHOD = {op.method: op for op in OPERATIONS}


def operation_of(fn: Callable[..., Any]) -> Operation:
    """The operation a :class:`SupervisorControl` method defines; ValueError if none."""
    op = _BY_METHOD.get(getattr(fn, "__name__", ""))
    if op is None or getattr(SupervisorControl, op.method) is not fn:
        raise ValueError(f"{fn!r} is not a control operation (a SupervisorControl method)")
    return op


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


def bus_address(bus: str, address: str | None, environ: Mapping[str, str]) -> str:
    """The D-Bus address razarctl connects to.

    ``address`` wins. Else ``system`` is ``$DBUS_SYSTEM_BUS_ADDRESS`` or the
    standard socket; ``user`` is ``$DBUS_SESSION_BUS_ADDRESS``, or the user
    manager's ``$XDG_RUNTIME_DIR/bus``.
    """
    if bus not in BUSES:
        raise ControlError(f"unknown bus {bus!r}: expected one of {', '.join(BUSES)}")
    if address:
        return address
    if bus == "system":
        return environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS_ADDRESS
    if session := environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return session
    if runtime := environ.get("XDG_RUNTIME_DIR"):
        return f"unix:path={runtime}/bus"
    raise ControlError(
        "no user bus: DBUS_SESSION_BUS_ADDRESS and XDG_RUNTIME_DIR are not set; pass --address"
    )


class ControlClient:
    """The client of razard's control interface (what razarctl uses).

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
        where = f"the {bus} bus at {addr}"
        try:
            async with asyncio.timeout(deadline_s):
                message_bus = await MessageBus(bus_address=addr).connect()
        except TimeoutError:
            raise ControlError(
                f"cannot connect to {where}: no answer in {deadline_s:g} s"
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ControlError(f"cannot connect to {where}: {reason}") from None
        except Exception as exc:  # AuthError, InvalidAddressError, EOFError, ...
            raise ControlError(f"cannot connect to {where}: {exc or type(exc).__name__}") from None
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
        try:
            bound = op.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{op.method}: {exc}") from None
        values = list(bound.arguments.values())[1:]
        body = [p.to_bus(v) for p, v in zip(op.params, values, strict=True)]
        name = bound.arguments.get("name") if op.params and op.params[0].name == "name" else None
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
            raise ControlError(
                f"razard did not answer {member} within {limit:g} s "
                "(it may still be working on it: see `razarctl status`; --timeout waits longer)"
            ) from None
        except DBusError as exc:
            raise self._error(member, name, exc.type, exc.text) from None
        except (OSError, EOFError) as exc:
            where = f"the {self._bus_name} bus at {self._address}"
            raise ControlError(f"lost the connection to {where} during {member}: {exc}") from None
        if reply.message_type is MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise self._error(member, name, reply.error_name or "", text)
        return list(reply.body)

    def _error(self, member: str, name: str | None, error: str, text: str) -> ControlError:
        """Turn a D-Bus error reply into the exception razarctl shows."""
        if error in _NO_OWNER_ERRORS:
            return RazardNotRunning(
                f"razard is not running on the {self._bus_name} bus (no owner of {BUS_NAME})"
            )
        if error == ERROR_UNKNOWN_COMPONENT and name is not None:
            return UnknownComponent(name)
        if error == _ACCESS_DENIED:
            return ControlError(
                f"permission denied: the {self._bus_name} bus refused {member}; "
                "run as root or a member of group razar"
            )
        if error == _NO_REPLY:
            return ControlError(f"razard did not answer {member} (it may have exited): {text}")
        if error in (ERROR_INVALID_CONFIG, ERROR_FAILED, ERROR_INTERNAL, ERROR_UNKNOWN_COMPONENT):
            return ControlError(text)
        return ControlError(f"{member} failed: {error}: {text}")

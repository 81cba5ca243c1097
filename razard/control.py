"""razard's control interface on D-Bus, and the client razarctl uses to reach it.

razard exports one object::

    name       org.razar.Supervisor1
    path       /org/razar/Supervisor1
    interface  org.razar.Supervisor1
      Status() -> s                 the status dict as JSON
      Start(s name)                 also un-stops a component the operator stopped
      Stop(s name)                  operator stop: the unit stops and is not healed
      Restart(s name)
      QuarantineList() -> s         quarantine records as a JSON list
      QuarantineRelease(s name)
      Reload()
      Version: s (read-only property)

Errors cross the bus under these names and turn back into razard's exceptions
in :class:`ControlClient`::

    UnknownComponent         org.razar.Error.UnknownComponent
    ConfigError              org.razar.Error.InvalidConfig   (message: every problem)
    any other RazarError     org.razar.Error.Failed
    anything unexpected      org.razar.Error.Internal        (logged here, never sent)

The supervisor side is behind :class:`SupervisorControl`; this module holds no
supervision logic of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

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
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from razard import __version__
from razard.errors import ConfigError, ControlError, RazarError, UnknownComponent

log = logging.getLogger(__name__)

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

# With postponed annotations dbus-fast reads a plain ``-> None`` as the string
# "None" and fails; this says "no return value" to both it and mypy.
DBusVoid = Annotated[None, DBusSignature("")]

_NO_OWNER_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
    }
)
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"


class SupervisorControl(Protocol):
    """What the control interface needs from the supervisor.

    Every method may raise :class:`~razard.errors.RazarError`; the interface
    turns it into a D-Bus error the client can read.
    """

    def status(self) -> dict[str, Any]:
        """The supervisor's state, JSON-serialisable.

        ``{"summary", "ready", "pid", "version", "config", "components": [...]}``;
        each component has ``name, unit, layer, priority, state, healthy,
        restarts, quarantined, last_error, since`` (ISO-8601 or None).
        """
        ...

    async def start_component(self, name: str) -> None:
        """Start ``name``, also clearing an operator stop; raises UnknownComponent."""
        ...

    async def stop_component(self, name: str) -> None:
        """Stop ``name`` and leave it unhealed until started; raises UnknownComponent."""
        ...

    async def restart_component(self, name: str) -> None:
        """Restart ``name``; raises UnknownComponent."""
        ...

    def quarantined(self) -> list[dict[str, Any]]:
        """Quarantine records: ``{"component","reason","last_error","attempts","time"}``."""
        ...

    async def release(self, name: str) -> None:
        """Release ``name`` from quarantine.

        Raises UnknownComponent, or ControlError when it is not quarantined.
        """
        ...

    async def reload(self) -> None:
        """Re-read the config; raises ConfigError (nothing changes) when it is invalid."""
        ...


def _dbus_error(member: str, exc: Exception) -> DBusError:
    """The D-Bus error a client sees for ``exc`` raised while serving ``member``."""
    if isinstance(exc, UnknownComponent):
        log.info("%s refused: %s", member, exc)
        return DBusError(ERROR_UNKNOWN_COMPONENT, str(exc))
    if isinstance(exc, ConfigError):
        log.warning("%s refused, invalid config: %s", member, exc)
        return DBusError(ERROR_INVALID_CONFIG, str(exc))
    if isinstance(exc, RazarError):
        log.warning("%s failed: %s", member, exc)
        return DBusError(ERROR_FAILED, str(exc))
    # A bug in razard: the operator finds the traceback in the journal; the
    # client gets only the exception's type, never paths or locals.
    log.exception("%s raised an unexpected error", member)
    return DBusError(
        ERROR_INTERNAL,
        f"razard failed internally ({type(exc).__name__}); see its journal",
    )


def _to_json(value: object) -> str:
    # default=str: a stray datetime or Path should not turn a status query into
    # an internal error.
    return json.dumps(value, default=str, sort_keys=True)


class ControlInterface(ServiceInterface):
    """The ``org.razar.Supervisor1`` interface, served from a :class:`SupervisorControl`."""

    def __init__(self, supervisor: SupervisorControl) -> None:
        super().__init__(INTERFACE)
        self._supervisor = supervisor

    @dbus_method()
    def Status(self) -> DBusStr:
        """The status dict as JSON."""
        try:
            return _to_json(self._supervisor.status())
        except Exception as exc:
            raise _dbus_error("Status", exc) from None

    @dbus_method()
    async def Start(self, name: DBusStr) -> DBusVoid:
        """Start a component (clears an operator stop)."""
        try:
            await self._supervisor.start_component(name)
        except Exception as exc:
            raise _dbus_error(f"Start({name})", exc) from None

    @dbus_method()
    async def Stop(self, name: DBusStr) -> DBusVoid:
        """Stop a component; razard leaves it stopped."""
        try:
            await self._supervisor.stop_component(name)
        except Exception as exc:
            raise _dbus_error(f"Stop({name})", exc) from None

    @dbus_method()
    async def Restart(self, name: DBusStr) -> DBusVoid:
        """Restart a component."""
        try:
            await self._supervisor.restart_component(name)
        except Exception as exc:
            raise _dbus_error(f"Restart({name})", exc) from None

    @dbus_method()
    def QuarantineList(self) -> DBusStr:
        """The quarantine records as a JSON list."""
        try:
            return _to_json(self._supervisor.quarantined())
        except Exception as exc:
            raise _dbus_error("QuarantineList", exc) from None

    @dbus_method()
    async def QuarantineRelease(self, name: DBusStr) -> DBusVoid:
        """Release a component from quarantine."""
        try:
            await self._supervisor.release(name)
        except Exception as exc:
            raise _dbus_error(f"QuarantineRelease({name})", exc) from None

    @dbus_method()
    async def Reload(self) -> DBusVoid:
        """Re-read the config file."""
        try:
            await self._supervisor.reload()
        except Exception as exc:
            raise _dbus_error("Reload", exc) from None

    @dbus_property(access=PropertyAccess.READ)
    def Version(self) -> DBusStr:
        """razard's version."""
        return __version__


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
    """A typed client for razard's control interface (what razarctl uses).

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

    async def status(self) -> dict[str, Any]:
        """razard's status dict (see :meth:`SupervisorControl.status`)."""
        value = json.loads(await self._call_str("Status"))
        if not isinstance(value, dict):
            raise ControlError("razard sent a malformed status (not a JSON object)")
        return value

    async def start(self, name: str) -> None:
        """Start ``name`` (also clears an operator stop)."""
        await self._call("Start", name)

    async def stop(self, name: str) -> None:
        """Stop ``name``; razard leaves it stopped."""
        await self._call("Stop", name)

    async def restart(self, name: str) -> None:
        """Restart ``name``."""
        await self._call("Restart", name)

    async def quarantine_list(self) -> list[dict[str, Any]]:
        """The quarantine records."""
        value = json.loads(await self._call_str("QuarantineList"))
        if not isinstance(value, list):
            raise ControlError("razard sent a malformed quarantine list (not a JSON list)")
        return value

    async def quarantine_release(self, name: str) -> None:
        """Release ``name`` from quarantine."""
        await self._call("QuarantineRelease", name)

    async def reload(self) -> None:
        """Make razard re-read its config; ControlError lists every problem."""
        await self._call("Reload")

    async def _call_str(self, member: str) -> str:
        body = await self._call(member)
        if len(body) != 1 or not isinstance(body[0], str):
            raise ControlError(f"razard sent a malformed reply to {member}")
        return body[0]

    async def _call(self, member: str, name: str | None = None) -> list[Any]:
        msg = Message(
            destination=BUS_NAME,
            path=OBJECT_PATH,
            interface=INTERFACE,
            member=member,
            # razard is a systemd service, not bus-activated: do not ask the
            # bus to start it, so "not running" is reported as such.
            flags=MessageFlag.NO_AUTOSTART,
            signature="s" if name is not None else "",
            body=[name] if name is not None else [],
        )
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._bus.call(msg)
        except TimeoutError:
            # razard keeps working on the request; only this client gave up.
            raise ControlError(
                f"razard did not answer {member} within {self._timeout:g} s "
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
            return ControlError(
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

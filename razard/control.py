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
      Ladder() -> s                 the repair roster and thresholds as JSON
      Patches(s name) -> s          patch records as a JSON list, oldest first
      Diff(s name, s patch) -> s    a patch's stored diff (patch "" = the latest applied)
      Rollback(s name, s to) -> s   undo kept patches (to "" = the last one); the
                                    ``reverted`` record as JSON
      Heal(s name, b long_task, i retries, i remote_attempts) -> s
                                    re-run the handover for one component
                                    (-1 = not given); the outcome as JSON
      Chakra() -> s                 each layer agent's pulse, sensor and healer runs as JSON
      HealLayer(s layer, b dry_run) -> s
                                    run a layer's healer now; its run record as JSON
      Version: s (read-only property)

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

The supervisor side is behind :class:`SupervisorControl`; this module holds no
supervision logic of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
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
from dbus_fast.annotations import DBusBool, DBusInt32, DBusSignature, DBusStr
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
HEAL_CALL_TIMEOUT = 3600.0
"""Seconds razarctl waits for a Heal by default: the ladder may try many agents."""
NOT_GIVEN = -1
"""Heal's ``retries`` and ``remote_attempts`` on the bus when the caller gave none."""

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


class RazardNotRunning(ControlError):
    """The bus answered but nobody owns :data:`BUS_NAME`: razard is not running there."""


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

    def ladder(self) -> dict[str, Any]:
        """The repair roster and the thresholds in force.

        ``{"roster": [{"name", "kind", "configured", "skip_reason", "max_attempts",
        "takes_over_after"}], "thresholds": {"rstar", "escalation_warning"},
        "remote_attempts", "long_task", "restart_attempts": {component: int}}``;
        ``takes_over_after`` is set for rStar only, ``escalation_warning`` and
        ``remote_attempts`` are None when off or unbounded.
        """
        ...

    def patches(self, name: str) -> list[dict[str, Any]]:
        """``name``'s patch records, oldest first; raises UnknownComponent.

        Each has ``patch_id, status, agent, diff_hash, files, reason, time``.
        """
        ...

    def diff(self, name: str, patch_id: str | None) -> str:
        """The stored diff of ``patch_id`` (None: the latest applied patch).

        Raises UnknownComponent, or RepairError when there is none.
        """
        ...

    async def rollback(self, name: str, to: str | None) -> dict[str, Any]:
        """Undo ``name``'s last kept patch (or every kept patch from ``to`` on).

        Restarts the unit; returns the ``reverted`` record. Raises
        UnknownComponent, or RazarError (``...: nothing to roll back``).
        """
        ...

    async def heal(
        self, name: str, long_task: bool, retries: int | None, remote_attempts: int | None
    ) -> dict[str, Any]:
        """Run the handover flow for ``name`` now.

        Returns ``{"healed": bool, "attempts": int, "agent": str|None,
        "patch_id": str|None}``; raises UnknownComponent.
        """
        ...

    def chakra(self) -> list[dict[str, Any]]:
        """Each layer: ``layer, state, pulse_age_s, hz, window_s, last_beat, sensor, sources,
        outages, healer, healer_runs, last_heal, healing``."""
        ...

    async def heal_layer(self, layer: str, dry_run: bool) -> dict[str, Any]:
        """Run ``layer``'s healer now; the run record (``result, reason, steps, ...``)."""
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


def _optional_count(what: str, value: int) -> int | None:
    """A count as it crossed the bus: :data:`NOT_GIVEN` is None, other negatives are refused."""
    if value == NOT_GIVEN:
        return None
    if value < 0:
        raise RazarError(f"{what} must be 0 or more (or {NOT_GIVEN}: not given), got {value}")
    return value


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

    @dbus_method()
    def Ladder(self) -> DBusStr:
        """The repair roster and thresholds as JSON."""
        try:
            return _to_json(self._supervisor.ladder())
        except Exception as exc:
            raise _dbus_error("Ladder", exc) from None

    @dbus_method()
    def Patches(self, name: DBusStr) -> DBusStr:
        """A component's patch records as a JSON list, oldest first."""
        try:
            return _to_json(self._supervisor.patches(name))
        except Exception as exc:
            raise _dbus_error(f"Patches({name})", exc) from None

    @dbus_method()
    def Diff(self, name: DBusStr, patch_id: DBusStr) -> DBusStr:
        """A patch's stored diff; ``patch_id`` "" is the latest applied patch."""
        try:
            return self._supervisor.diff(name, patch_id or None)
        except Exception as exc:
            raise _dbus_error(f"Diff({name}, {patch_id!r})", exc) from None

    @dbus_method()
    async def Rollback(self, name: DBusStr, to: DBusStr) -> DBusStr:
        """Undo kept patches (``to`` "" = the last one); the ``reverted`` record as JSON."""
        try:
            return _to_json(await self._supervisor.rollback(name, to or None))
        except Exception as exc:
            raise _dbus_error(f"Rollback({name}, {to!r})", exc) from None

    @dbus_method()
    async def Heal(
        self, name: DBusStr, long_task: DBusBool, retries: DBusInt32, remote_attempts: DBusInt32
    ) -> DBusStr:
        """Re-run the handover for one component; the outcome as JSON (-1: not given)."""
        try:
            outcome = await self._supervisor.heal(
                name,
                bool(long_task),
                _optional_count("retries", retries),
                _optional_count("remote attempts", remote_attempts),
            )
            return _to_json(outcome)
        except Exception as exc:
            raise _dbus_error(f"Heal({name})", exc) from None

    @dbus_method()
    def Chakra(self) -> DBusStr:
        """Each layer agent's pulse, sensor reading and healer runs as a JSON list."""
        try:
            return _to_json(self._supervisor.chakra())
        except Exception as exc:
            raise _dbus_error("Chakra", exc) from None

    @dbus_method()
    async def HealLayer(self, layer: DBusStr, dry_run: DBusBool) -> DBusStr:
        """Run a layer's healer now (``dry_run``: plan only); its run record as JSON."""
        try:
            return _to_json(await self._supervisor.heal_layer(layer, bool(dry_run)))
        except Exception as exc:
            raise _dbus_error(f"HealLayer({layer})", exc) from None

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
        await self._call("Start", "s", [name], name=name)

    async def stop(self, name: str) -> None:
        """Stop ``name``; razard leaves it stopped."""
        await self._call("Stop", "s", [name], name=name)

    async def restart(self, name: str) -> None:
        """Restart ``name``."""
        await self._call("Restart", "s", [name], name=name)

    async def quarantine_list(self) -> list[dict[str, Any]]:
        """The quarantine records."""
        value = json.loads(await self._call_str("QuarantineList"))
        if not isinstance(value, list):
            raise ControlError("razard sent a malformed quarantine list (not a JSON list)")
        return value

    async def quarantine_release(self, name: str) -> None:
        """Release ``name`` from quarantine."""
        await self._call("QuarantineRelease", "s", [name], name=name)

    async def reload(self) -> None:
        """Make razard re-read its config; ControlError lists every problem."""
        await self._call("Reload")

    async def ladder(self) -> dict[str, Any]:
        """The repair roster and thresholds (see :meth:`SupervisorControl.ladder`)."""
        value = json.loads(await self._call_str("Ladder"))
        if not isinstance(value, dict):
            raise ControlError("razard sent a malformed ladder (not a JSON object)")
        return value

    async def patches(self, name: str) -> list[dict[str, Any]]:
        """``name``'s patch records, oldest first."""
        value = json.loads(await self._call_str("Patches", "s", [name], name=name))
        if not isinstance(value, list):
            raise ControlError("razard sent a malformed patch list (not a JSON list)")
        return value

    async def diff(self, name: str, patch_id: str | None = None) -> str:
        """The stored diff of ``patch_id`` (None: the latest applied patch)."""
        return await self._call_str("Diff", "ss", [name, patch_id or ""], name=name)

    async def rollback(self, name: str, to: str | None = None) -> dict[str, Any]:
        """Undo ``name``'s last kept patch (or all from ``to``); the ``reverted`` record.

        Raises :class:`RazardNotRunning` when razard is not on the bus.
        """
        value = json.loads(await self._call_str("Rollback", "ss", [name, to or ""], name=name))
        if not isinstance(value, dict):
            raise ControlError("razard sent a malformed rollback record (not a JSON object)")
        return value

    async def heal(
        self,
        name: str,
        long_task: bool = False,
        retries: int | None = None,
        remote_attempts: int | None = None,
        deadline_s: float | None = HEAL_CALL_TIMEOUT,
    ) -> dict[str, Any]:
        """Run the handover flow for ``name``; the outcome dict.

        ``deadline_s`` replaces the client's per-call deadline for this call;
        None waits until razard answers. Giving up does not stop razard.
        """
        body = [
            name,
            long_task,
            NOT_GIVEN if retries is None else retries,
            NOT_GIVEN if remote_attempts is None else remote_attempts,
        ]
        text = await self._call_str(
            "Heal",
            "sbii",
            body,
            name=name,
            deadline_s=math.inf if deadline_s is None else deadline_s,
        )
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ControlError("razard sent a malformed heal outcome (not a JSON object)")
        return value

    async def chakra(self) -> list[dict[str, Any]]:
        """Each layer agent's state (see :meth:`SupervisorControl.chakra`)."""
        value = json.loads(await self._call_str("Chakra"))
        if not isinstance(value, list):
            raise ControlError("razard sent a malformed chakra report (not a JSON list)")
        return value

    async def heal_layer(self, layer: str, dry_run: bool = False) -> dict[str, Any]:
        """Run ``layer``'s healer now; waits as long as the healer may run."""
        text = await self._call_str(
            "HealLayer", "sb", [layer, dry_run], deadline_s=HEAL_CALL_TIMEOUT
        )
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ControlError("razard sent a malformed heal record (not a JSON object)")
        return value

    async def _call_str(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        name: str | None = None,
        deadline_s: float | None = None,
    ) -> str:
        reply = await self._call(member, signature, body, name=name, deadline_s=deadline_s)
        if len(reply) != 1 or not isinstance(reply[0], str):
            raise ControlError(f"razard sent a malformed reply to {member}")
        return reply[0]

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

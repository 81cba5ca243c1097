"""razard's control interface as data: its operations, their form on the bus, its names.

Each control operation is defined once: a method of :class:`SupervisorControl`
marked with :func:`operation`, which gives its D-Bus member name. Everything
else is derived from that one definition (:data:`OPERATIONS`):

- the D-Bus method of ``org.razar.Supervisor1`` that :mod:`razard.control` serves:
  its argument and reply signatures come from the method's annotations through
  :data:`ARGUMENTS` and :data:`REPLIES` (``str`` is ``s``, ``bool`` is ``b``, an
  optional argument crosses the bus as ``""`` or ``-1``, a dict or list reply as
  JSON text), and every error crosses it through one translation;
- the client calls, typed by the same annotations, of :class:`razard.control.ControlClient`
  (asyncio) and :class:`razard.controlsync.SyncControlClient` (razarctl's, blocking):
  ``client.call(SupervisorControl.heal, name, False, None, None)``; both read razard's
  reply and errors back through :meth:`Operation.request`, :meth:`Operation.reply_from_bus`
  and :func:`call_error`, so the two cannot tell an operator different things;
- what the supervisor implements: mypy checks it against the protocol.

This module imports no D-Bus library: razarctl loads it (and its blocking client)
without dbus-fast's asyncio bus (issue 18: razarctl's start-to-exit).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, get_type_hints

from razard.errors import ControlError, RazarError, UnknownComponent

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

    def request(
        self, args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> tuple[list[Any], str | None]:
        """A client's call as it goes on the bus: its body, and the component it names
        (for :class:`~razard.errors.UnknownComponent`), or None."""
        try:
            bound = self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.method}: {exc}") from None
        values = list(bound.arguments.values())[1:]
        body = [p.to_bus(v) for p, v in zip(self.params, values, strict=True)]
        name = (
            bound.arguments.get("name") if self.params and self.params[0].name == "name" else None
        )
        return body, name

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


# --- what a client tells the operator -------------------------------------------------


def bus_where(bus: str, address: str) -> str:
    """How an error names the bus: ``the user bus at unix:path=...``."""
    return f"the {bus} bus at {address}"


def connect_error(where: str, exc: BaseException, deadline_s: float) -> ControlError:
    """The error for a connection to ``where`` (:func:`bus_where`) that failed with ``exc``
    (TimeoutError: nothing answered within ``deadline_s``)."""
    if isinstance(exc, TimeoutError):
        return ControlError(f"cannot connect to {where}: no answer in {deadline_s:g} s")
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return ControlError(f"cannot connect to {where}: {reason}")
    # AuthError, InvalidAddressError, EOFError, a refused Hello, ...
    return ControlError(f"cannot connect to {where}: {exc or type(exc).__name__}")


def no_answer_error(member: str, deadline_s: float) -> ControlError:
    """razard did not answer ``member`` in time; it keeps working on it, only the client
    gave up."""
    return ControlError(
        f"razard did not answer {member} within {deadline_s:g} s "
        "(it may still be working on it: see `razarctl status`; --timeout waits longer)"
    )


def lost_connection_error(where: str, member: str, exc: BaseException) -> ControlError:
    return ControlError(f"lost the connection to {where} during {member}: {exc}")


def call_error(bus: str, member: str, name: str | None, error: str, text: str) -> ControlError:
    """The exception razarctl shows for a D-Bus error reply ``error`` (``text``: its
    message) to ``member`` on ``bus``; ``name`` is the component the call named."""
    if error in _NO_OWNER_ERRORS:
        return RazardNotRunning(f"razard is not running on the {bus} bus (no owner of {BUS_NAME})")
    if error == ERROR_UNKNOWN_COMPONENT and name is not None:
        return UnknownComponent(name)
    if error == _ACCESS_DENIED:
        return ControlError(
            f"permission denied: the {bus} bus refused {member}; "
            "run as root or a member of group razar"
        )
    if error == _NO_REPLY:
        return ControlError(f"razard did not answer {member} (it may have exited): {text}")
    if error in (ERROR_INVALID_CONFIG, ERROR_FAILED, ERROR_INTERNAL, ERROR_UNKNOWN_COMPONENT):
        return ControlError(text)
    return ControlError(f"{member} failed: {error}: {text}")

"""A typed async client of systemd's manager (``org.freedesktop.systemd1``) over D-Bus.

dbus-fast's proxies build their methods at run time; razard wraps the few calls
it needs in typed methods instead (`Systemd.start(unit) -> str`) and talks raw
messages, which also keeps every call under one deadline.

Unit state arrives as ``PropertiesChanged`` signals on each watched unit's object
path, matched per path so razard never polls and never wakes for units it does
not supervise. When the bus connection drops, or systemd re-executes
(``daemon-reexec``) or reloads, `Systemd.run` reconnects, re-adds the matches,
re-subscribes and calls the ``on_reconnect`` hooks so the supervisor reconciles.

One module (~620 lines): nearly all of it is `Systemd`, whose calls, signal matches and
reconnect share one connection and one view of the units.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from razard.errors import SystemdError, UnitNotFound

log = logging.getLogger(__name__)

SYSTEMD: Final = "org.freedesktop.systemd1"
MANAGER_PATH: Final = "/org/freedesktop/systemd1"
MANAGER: Final = "org.freedesktop.systemd1.Manager"
UNIT_IFACE: Final = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE: Final = "org.freedesktop.systemd1.Service"
PROPS_IFACE: Final = "org.freedesktop.DBus.Properties"
DBUS: Final = "org.freedesktop.DBus"
#: The one match rule for every unit's property changes (units live under this path):
#: razard follows hundreds of units, and a rule per unit costs a round trip each and
#: meets the system bus's default of 512 rules per connection (dbus-daemon's
#: ``max_match_rules_per_connection``).
UNITS_RULE: Final = (
    f"type='signal',sender='{SYSTEMD}',interface='{PROPS_IFACE}',member='PropertiesChanged',"
    f"path_namespace='{MANAGER_PATH}/unit'"
)

DEFAULT_CALL_TIMEOUT: Final = 30.0
#: D-Bus calls in flight at once. dbus-fast (5.2) writes each message straight into the
#: socket and drops the connection when the send buffer is full (EAGAIN) instead of
#: waiting: 500 concurrent calls (a boot or resync of 500 units) cut razard off the bus.
MAX_CALLS_IN_FLIGHT = 64
DEFAULT_JOB_TIMEOUT: Final = 90.0
_DONE_JOBS_KEPT: Final = 256

#: The unit properties razard follows, by the interface that carries them.
_UNIT_PROPS: Final = {"ActiveState", "SubState", "LoadState", "InvocationID", "Job"}
_SERVICE_PROPS: Final = {
    "Result",
    "NRestarts",
    "MainPID",
    "ExecMainStatus",
    "ExecMainCode",
    "ExecMainStartTimestampMonotonic",
}


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """What systemd says about one unit right now (one per watched unit, hundreds: slots,
    and its state words shared through `_word`)."""

    name: str
    load_state: str = "stub"
    active_state: str = "inactive"
    sub_state: str = "dead"
    result: str = "success"
    n_restarts: int = 0
    main_pid: int = 0
    exec_main_status: int = 0
    exec_main_code: int = 0  # CLD_EXITED=1, CLD_KILLED=2, CLD_DUMPED=3
    invocation_id: str = ""
    job: int = 0  # the id of the job systemd is running on the unit (start, stop, restart); 0: none
    #: when the main process was exec'd, CLOCK_MONOTONIC seconds (time.monotonic()); 0: never
    exec_main_start: float = 0.0

    @property
    def running(self) -> bool:
        return self.active_state in ("active", "reloading", "activating")

    @property
    def dead(self) -> bool:
        """The unit is down: failed, inactive, or waiting for systemd's own auto-restart."""
        return self.active_state in ("failed", "inactive") or self.sub_state == "auto-restart"

    def describe(self) -> str:
        """One line an operator understands, e.g. ``failed (exit-code, status 3)``."""
        s = f"{self.active_state}/{self.sub_state}"
        if self.result and self.result != "success":
            s += f" result={self.result}"
        if self.exec_main_code == 1 and self.exec_main_status:
            s += f" status={self.exec_main_status}"
        elif self.exec_main_code in (2, 3):
            s += f" signal={self.exec_main_status}"
        return s


UnitCallback = Callable[[UnitStatus], None]
ReconnectHook = Callable[[], Awaitable[None]]


def unit_path(unit: str) -> str:
    """The unit's D-Bus object path, as systemd names it (its ``bus_label_escape``): a
    letter, or a digit after the first character, stays; any other byte is ``_xx``.
    systemd loads the unit when a call reaches that path, as ``LoadUnit`` would, so
    reading a unit's properties takes one round trip instead of two."""
    out = []
    for i, b in enumerate(unit.encode()):
        c = chr(b)
        if c.isascii() and (c.isalpha() or (i > 0 and c.isdigit())):
            out.append(c)
        else:
            out.append(f"_{b:02x}")
    return f"{MANAGER_PATH}/unit/{''.join(out) or '_'}"


async def _together(calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await ``calls`` concurrently, their messages sent in the given order; every one
    ends before this returns, and the first error (in that order) is raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    if not tasks:
        return []
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results


def _unwrap(v: Any) -> Any:
    return v.value if isinstance(v, Variant) else v


#: at most this many distinct words are shared (systemd's states and results are a few dozen)
_WORDS_KEPT: Final = 256
_words: dict[str, str] = {}


def _word(value: Any) -> str:
    """``value`` as a string, one object per distinct word: each message carries its own
    copy of ``active``, ``running``, ``loaded``..., and every watched unit's status would
    keep four of them."""
    text = str(value)
    word = _words.get(text)
    if word is None:
        if len(_words) >= _WORDS_KEPT:
            return text
        word = _words[text] = text
    return word


_WORD_PROPS: Final = {
    "LoadState": "load_state",
    "ActiveState": "active_state",
    "SubState": "sub_state",
    "Result": "result",
}
_NUMBER_PROPS: Final = {
    "NRestarts": "n_restarts",
    "MainPID": "main_pid",
    "ExecMainStatus": "exec_main_status",
    "ExecMainCode": "exec_main_code",
}


def _apply(status: UnitStatus, props: dict[str, Any]) -> UnitStatus:
    fields: dict[str, Any] = {}
    for key, attr in _WORD_PROPS.items():
        if key in props:
            fields[attr] = _word(_unwrap(props[key]))
    for key, attr in _NUMBER_PROPS.items():
        if key in props:
            fields[attr] = _unwrap(props[key])
    if "Job" in props:
        raw = _unwrap(props["Job"])  # (id, object path); (0, "/") when there is none
        fields["job"] = int(raw[0]) if isinstance(raw, list | tuple) and raw else 0
    if "ExecMainStartTimestampMonotonic" in props:
        fields["exec_main_start"] = int(_unwrap(props["ExecMainStartTimestampMonotonic"])) / 1e6
    if "InvocationID" in props:
        raw = _unwrap(props["InvocationID"])
        fields["invocation_id"] = bytes(raw).hex() if isinstance(raw, bytes | list) else str(raw)
    return replace(status, **fields) if fields else status


class Systemd:
    """Typed async access to one systemd manager (system or user) over its bus."""

    def __init__(
        self,
        bus: str = "system",
        address: str | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._bus_kind = bus
        self._address = address
        self._timeout = call_timeout
        self._bus: MessageBus | None = None
        self._watch: dict[str, list[UnitCallback]] = {}
        self._paths: dict[str, str] = {}  # object path -> unit name
        self._status: dict[str, UnitStatus] = {}
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._done_jobs: OrderedDict[str, str] = OrderedDict()
        self._hooks: list[ReconnectHook] = []
        self._connect_hooks: list[Callable[[MessageBus], Awaitable[None]]] = []
        self._refresh_tasks: set[asyncio.Task[None]] = set()
        self._resync = asyncio.Event()
        self._up = asyncio.Event()
        self._owner = ""  # unique bus name of systemd: the only sender razard believes
        self._in_flight = asyncio.Semaphore(MAX_CALLS_IN_FLIGHT)

    # ----------------------------------------------------------- connection

    @property
    def bus(self) -> MessageBus:
        if self._bus is None or not self._bus.connected:
            raise SystemdError(f"not connected to the {self._bus_kind} bus")
        return self._bus

    @property
    def connected(self) -> bool:
        return self._bus is not None and self._bus.connected

    def on_reconnect(self, hook: ReconnectHook) -> None:
        """Run ``hook`` after every reconnect, reload or re-exec of systemd (to reconcile)."""
        self._hooks.append(hook)

    def on_connect(self, hook: Callable[[MessageBus], Awaitable[None]]) -> None:
        """Run ``hook(bus)`` on every new connection (e.g. to export the control interface)."""
        self._connect_hooks.append(hook)

    async def wait_connected(self) -> None:
        """Return once the bus connection is up (at once when it already is)."""
        while not self.connected:
            self._up.clear()
            await self._up.wait()

    async def connect(self) -> None:
        """Connect, add signal matches and subscribe to systemd's signals."""
        try:
            if self._address:
                bus = MessageBus(bus_address=self._address)
            else:
                kind = BusType.SYSTEM if self._bus_kind == "system" else BusType.SESSION
                bus = MessageBus(bus_type=kind)
            async with asyncio.timeout(self._timeout):
                await bus.connect()
        except (OSError, TimeoutError, ValueError) as e:
            raise SystemdError(
                f"cannot connect to the {self._bus_kind} bus"
                f"{' at ' + self._address if self._address else ''}: {e}"
            ) from e
        except Exception as e:  # dbus-fast raises its own auth/address errors
            raise SystemdError(f"cannot connect to the {self._bus_kind} bus: {e}") from e
        bus.add_message_handler(self._on_message)
        self._bus = bus
        try:
            await self._setup()
        except SystemdError:
            # never keep a half-set-up connection: its handler would see signals twice
            self._bus = None
            bus.disconnect()
            raise
        self._up.set()
        for chook in self._connect_hooks:
            try:
                await chook(bus)
            except Exception:
                log.exception("connect hook failed")

    async def _setup(self) -> None:
        await self._add_match(
            f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
            f"interface='{MANAGER}',member='JobRemoved'"
        )
        await self._add_match(
            f"type='signal',sender='{SYSTEMD}',path='{MANAGER_PATH}',"
            f"interface='{MANAGER}',member='Reloading'"
        )
        await self._add_match(
            f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',"
            f"arg0='{SYSTEMD}'"
        )
        # before any unit is read, so no change after a read can be missed; `_on_message`
        # keeps the watched units' signals and drops the others'
        await self._add_match(UNITS_RULE)
        await self._refresh_owner()
        await self._subscribe()

    async def _refresh_owner(self) -> None:
        """Learn systemd's unique name, waiting (within the call deadline) for it to appear.

        A manager that has just started may not have joined its bus yet.
        """
        deadline = asyncio.get_running_loop().time() + self._timeout
        while True:
            try:
                (owner,) = await self._call(
                    "/org/freedesktop/DBus", DBUS, "GetNameOwner", "s", [SYSTEMD], dest=DBUS
                )
            except SystemdError as e:
                if "NameHasNoOwner" not in str(e):
                    raise
                if asyncio.get_running_loop().time() > deadline:
                    raise SystemdError(
                        f"systemd did not join the bus within {self._timeout:g}s"
                    ) from e
                await asyncio.sleep(0.05)
                continue
            self._owner = str(owner)
            return

    async def close(self) -> None:
        for fut in self._jobs.values():
            if not fut.done():
                fut.cancel()
        for t in list(self._refresh_tasks):
            t.cancel()
        if self._bus is not None:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            self._bus = None

    async def run(self) -> None:
        """Keep the connection alive for the life of razard; reconcile after any disruption."""
        delay = 0.1
        while True:
            bus = self._bus
            if bus is not None and bus.connected:
                # shield: cancelling our waiter must not cancel the bus's own disconnect future
                disconnected = asyncio.ensure_future(
                    asyncio.shield(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
                )
                resync = asyncio.ensure_future(self._resync.wait())
                try:
                    await asyncio.wait({disconnected, resync}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for f in (disconnected, resync):
                        if not f.done():
                            f.cancel()
                        elif not f.cancelled():
                            f.exception()  # the EOFError of a dropped bus: expected, handled
                if self._resync.is_set() and bus.connected:
                    self._resync.clear()
                    # systemd reloaded or re-executed: subscriptions and job ids may be gone
                    await asyncio.sleep(0.05)
                    try:
                        await self._refresh_owner()
                        await self._subscribe()
                    except SystemdError as e:
                        log.warning("re-subscribing to systemd failed: %s; retrying", e)
                        await asyncio.sleep(0.5)
                        self._resync.set()
                        continue
                    await self._run_hooks()
                    continue
                log.warning("lost the %s bus connection; reconnecting", self._bus_kind)
                for fut in self._jobs.values():
                    if not fut.done():
                        fut.set_exception(SystemdError("bus connection lost while waiting for job"))
                self._jobs.clear()
            try:
                await self.connect()
            except SystemdError as e:
                log.warning("reconnect failed: %s; retrying in %.1fs", e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            log.info("reconnected to the %s bus", self._bus_kind)
            await self._run_hooks()

    async def _run_hooks(self) -> None:
        for hook in self._hooks:
            try:
                await hook()
            except Exception:
                log.exception("reconcile hook failed")

    async def _subscribe(self) -> None:
        try:
            await self._call(MANAGER_PATH, MANAGER, "Subscribe", "", [])
        except SystemdError as e:
            if "AlreadySubscribed" not in str(e):  # kept across a plain reload: fine
                raise

    async def _add_match(self, rule: str) -> None:
        await self._call("/org/freedesktop/DBus", DBUS, "AddMatch", "s", [rule], dest=DBUS)

    # ----------------------------------------------------------- raw calls

    async def _call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str,
        body: list[Any],
        *,
        dest: str = SYSTEMD,
        unit: str | None = None,
    ) -> list[Any]:
        msg = Message(
            destination=dest,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body,
        )
        try:
            async with self._in_flight, asyncio.timeout(self._timeout):
                reply = await self.bus.call(msg)
        except TimeoutError:
            raise SystemdError(f"{member} timed out after {self._timeout:g}s", unit) from None
        except (OSError, EOFError) as e:
            raise SystemdError(f"{member} failed: bus connection lost ({e})", unit) from e
        if reply is None:
            raise SystemdError(f"{member}: no reply", unit)
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else reply.error_name
            if reply.error_name in (
                "org.freedesktop.systemd1.NoSuchUnit",
                "org.freedesktop.systemd1.LoadFailed",
            ):
                raise UnitNotFound(str(text), unit)
            raise SystemdError(f"{member}: {text} ({reply.error_name})", unit)
        return list(reply.body)

    # ----------------------------------------------------------- signals

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged":
            # only the bus itself may say who owns systemd's name
            if msg.sender == DBUS and msg.body and msg.body[0] == SYSTEMD:
                self._owner = msg.body[2]
                if msg.body[2]:  # systemd is back on the bus (after re-exec)
                    self._resync.set()
            return
        if not self._owner or msg.sender != self._owner:
            return  # anyone may send signals to razard; only systemd's count
        if msg.member == "PropertiesChanged" and msg.path in self._paths:
            self._on_properties(msg.path, msg.body)
        elif msg.member == "JobRemoved" and msg.interface == MANAGER:
            _id, job, _unit, result = msg.body
            fut = self._jobs.pop(job, None)
            if fut is not None and not fut.done():
                fut.set_result(result)
            else:
                self._done_jobs[job] = result
                while len(self._done_jobs) > _DONE_JOBS_KEPT:
                    self._done_jobs.popitem(last=False)
        elif msg.member == "Reloading" and msg.interface == MANAGER:
            if msg.body and msg.body[0] is False:
                self._resync.set()

    def _on_properties(self, path: str, body: list[Any]) -> None:
        unit = self._paths[path]
        iface, changed, invalidated = body
        if iface not in (UNIT_IFACE, SERVICE_IFACE):
            return
        old = self._status.get(unit, UnitStatus(unit))
        new = _apply(old, changed)
        wanted = _UNIT_PROPS | _SERVICE_PROPS
        if any(p in wanted for p in invalidated):
            self._spawn_refresh(unit)
        if new != old:
            self._status[unit] = new
            self._notify(unit, new)

    def _notify(self, unit: str, status: UnitStatus) -> None:
        for cb in list(self._watch.get(unit, ())):
            try:
                cb(status)
            except Exception:
                log.exception("unit watcher for %s failed", unit)

    def _spawn_refresh(self, unit: str) -> None:
        async def refresh() -> None:
            with contextlib.suppress(SystemdError):
                st = await self.status(unit)
                self._notify(unit, st)

        t = asyncio.get_running_loop().create_task(refresh())
        self._refresh_tasks.add(t)
        t.add_done_callback(self._refresh_tasks.discard)

    # ----------------------------------------------------------- typed API

    async def load(self, unit: str) -> str:
        """Load ``unit`` (from its unit file if needed); returns its object path."""
        (path,) = await self._call(MANAGER_PATH, MANAGER, "LoadUnit", "s", [unit], unit=unit)
        return str(path)

    async def status(self, unit: str) -> UnitStatus:
        """Current status of ``unit`` read from systemd (and cached for the watchers)."""
        return await self._read(unit, unit_path(unit))

    async def _read(self, unit: str, path: str) -> UnitStatus:
        """The unit's status at ``path``: both property sets asked for at once (one round
        trip, not two)."""
        calls = [self._call(path, PROPS_IFACE, "GetAll", "s", [UNIT_IFACE], unit=unit)]
        if unit.endswith(".service"):
            calls.append(self._call(path, PROPS_IFACE, "GetAll", "s", [SERVICE_IFACE], unit=unit))
        replies = await _together(calls)
        st = UnitStatus(unit)
        for (props,) in replies:
            st = _apply(st, props)
        if st.load_state == "not-found":
            raise UnitNotFound("no such unit (LoadState=not-found)", unit)
        self._status[unit] = st
        return st

    def cached(self, unit: str) -> UnitStatus | None:
        """The last status seen for a watched unit, without a bus round trip."""
        return self._status.get(unit)

    async def watch(self, unit: str, callback: UnitCallback) -> UnitStatus:
        """Call ``callback`` with the unit's status on every change; returns the current status."""
        path = unit_path(unit)
        # every unit's changes already come (`UNITS_RULE`, added at connect, before any
        # read): none after the read can be missed
        self._paths.setdefault(path, unit)
        self._watch.setdefault(unit, []).append(callback)
        return await self._read(unit, path)

    async def watch_all(
        self, watches: Sequence[tuple[str, UnitCallback]]
    ) -> list[UnitStatus | SystemdError]:
        """`watch` for many units at once: each unit's status, or the error that unit got.

        What every unit is, is read in one ``ListUnitsByNames`` call (`UNITS_RULE`, added
        at connect, already brings their changes); a service's own properties (main PID,
        result, exec times) only for the units that are not cleanly stopped: a stopped unit's come
        with the signals of its next start. At boot, when hundreds of units are all
        stopped, that is one round trip instead of two property dumps per unit."""
        units = [unit for unit, _ in watches]
        for unit, callback in watches:
            self._paths.setdefault(unit_path(unit), unit)
            self._watch.setdefault(unit, []).append(callback)
        (rows,) = await self._call(MANAGER_PATH, MANAGER, "ListUnitsByNames", "as", [units])
        found = {str(row[0]): row for row in rows}
        out: list[UnitStatus | SystemdError] = []
        reads: dict[int, Awaitable[UnitStatus]] = {}
        for i, unit in enumerate(units):
            row = found.get(unit)
            st = None
            if row is not None:
                _name, _desc, load_state, active_state, sub_state, _following, _path, job = row[:8]
                st = UnitStatus(
                    unit,  # razard's own string for the name, not the message's copy
                    load_state=_word(load_state),
                    active_state=_word(active_state),
                    sub_state=_word(sub_state),
                    job=int(job),
                )
            if st is None or st.load_state == "not-found":
                out.append(UnitNotFound("no such unit (LoadState=not-found)", unit))
                continue
            out.append(st)
            if unit.endswith(".service") and st.active_state != "inactive":
                reads[i] = self._read(unit, unit_path(unit))
            else:
                self._status[unit] = st
        results = await asyncio.gather(*reads.values(), return_exceptions=True)
        for i, got in zip(reads, results, strict=True):
            if isinstance(got, SystemdError):
                out[i] = got
            elif isinstance(got, BaseException):
                raise got
            else:
                out[i] = got
        return out

    async def unwatch(self, unit: str, callback: UnitCallback | None = None) -> None:
        """Stop calling ``callback`` (or every callback) for ``unit``."""
        cbs = self._watch.get(unit, [])
        if callback is not None and callback in cbs:
            cbs.remove(callback)
        if callback is None or not cbs:
            self._watch.pop(unit, None)
            for path, name in list(self._paths.items()):
                if name == unit:
                    del self._paths[path]

    async def _job(self, member: str, unit: str, wait: bool, deadline: float) -> str:
        (job,) = await self._call(MANAGER_PATH, MANAGER, member, "ss", [unit, "replace"], unit=unit)
        if not wait:
            return "queued"
        return await self._wait_job(str(job), member, unit, deadline)

    async def start_transient(
        self,
        unit: str,
        properties: list[tuple[str, str, Any]],
        *,
        job_timeout: float = DEFAULT_JOB_TIMEOUT,
    ) -> str:
        """``systemd-run``: create and start the transient ``unit`` with ``properties``
        (name, D-Bus signature, value); returns the start job's result. For a
        ``Type=oneshot`` unit the job ends when the process has exited."""
        body = [unit, "fail", [[k, Variant(sig, v)] for k, sig, v in properties], []]
        (job,) = await self._call(
            MANAGER_PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", body, unit=unit
        )
        return await self._wait_job(str(job), "StartTransientUnit", unit, job_timeout)

    async def _wait_job(self, job: str, member: str, unit: str, deadline: float) -> str:
        if job in self._done_jobs:
            return self._done_jobs.pop(job)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._jobs[job] = fut
        try:
            async with asyncio.timeout(deadline):
                return await fut
        except TimeoutError:
            raise SystemdError(f"{member} job did not finish within {deadline:g}s", unit) from None
        finally:
            self._jobs.pop(job, None)

    async def start(
        self, unit: str, *, wait: bool = True, job_timeout: float = DEFAULT_JOB_TIMEOUT
    ) -> str:
        """Start ``unit``; with ``wait`` returns the job result (``done``, ``failed``, ...)."""
        return await self._job("StartUnit", unit, wait, job_timeout)

    async def stop(
        self, unit: str, *, wait: bool = True, job_timeout: float = DEFAULT_JOB_TIMEOUT
    ) -> str:
        """Stop ``unit``; with ``wait`` returns the job result."""
        return await self._job("StopUnit", unit, wait, job_timeout)

    async def restart(
        self, unit: str, *, wait: bool = True, job_timeout: float = DEFAULT_JOB_TIMEOUT
    ) -> str:
        """Restart ``unit``; with ``wait`` returns the job result."""
        return await self._job("RestartUnit", unit, wait, job_timeout)

    async def reset_failed(self, unit: str) -> None:
        """Clear the unit's failed state (and its start-limit counter)."""
        with contextlib.suppress(UnitNotFound):
            await self._call(MANAGER_PATH, MANAGER, "ResetFailedUnit", "s", [unit], unit=unit)

    async def kill(self, unit: str, signal: int, who: str = "all") -> None:
        """Send ``signal`` to the unit's processes (``who``: main, control or all)."""
        await self._call(MANAGER_PATH, MANAGER, "KillUnit", "ssi", [unit, who, signal], unit=unit)

    async def unit_by_pid(self, pid: int) -> str | None:
        """The name of the unit a process belongs to, or None when systemd knows none."""
        try:
            (path,) = await self._call(MANAGER_PATH, MANAGER, "GetUnitByPID", "u", [pid])
        except SystemdError:
            return None
        (name,) = await self._call(str(path), PROPS_IFACE, "Get", "ss", [UNIT_IFACE, "Id"])
        return str(_unwrap(name))

    async def properties(self, unit: str, interface: str = SERVICE_IFACE) -> dict[str, Any]:
        """All properties of ``unit`` on ``interface`` (e.g. ``CPUUsageNSec``, ``MemoryCurrent``,
        ``CPUWeight``, ``MemoryHigh``, ``ControlGroup`` on the Service interface)."""
        path = await self.load(unit)
        (props,) = await self._call(path, PROPS_IFACE, "GetAll", "s", [interface], unit=unit)
        return {k: _unwrap(v) for k, v in props.items()}

    async def set_properties(
        self, unit: str, properties: dict[str, tuple[str, Any]], *, runtime: bool = True
    ) -> None:
        """``systemctl set-property [--runtime]``: e.g. ``{"CPUWeight": ("t", 20)}``."""
        body = [unit, runtime, [[k, Variant(sig, v)] for k, (sig, v) in properties.items()]]
        await self._call(MANAGER_PATH, MANAGER, "SetUnitProperties", "sba(sv)", body, unit=unit)

    async def list_units(self, states: list[str] | None = None) -> list[tuple[str, str, str]]:
        """Loaded units as (name, active state, sub state), filtered by active/sub state."""
        (rows,) = await self._call(
            MANAGER_PATH, MANAGER, "ListUnitsFiltered", "as", [list(states or [])]
        )
        return [(str(r[0]), str(r[3]), str(r[4])) for r in rows]

    async def daemon_reload(self) -> None:
        """Make systemd re-read unit files (``systemctl daemon-reload``)."""
        await self._call(MANAGER_PATH, MANAGER, "Reload", "", [])

    async def version(self) -> str:
        """systemd's version string, e.g. ``252.38-1~deb12u1``."""
        (v,) = await self._call(MANAGER_PATH, PROPS_IFACE, "Get", "ss", [MANAGER, "Version"])
        return str(_unwrap(v))

"""razarctl's blocking client: dbus-fast's wire layer without asyncio, and the same errors.

`razard.dbuswire` loads dbus-fast's messages, (un)marshaller and authenticator
without the package's ``__init__`` (issue 18: razarctl's start-to-exit); the whole
package must still import after it. `SyncControlClient` must tell an operator what
the asyncio `ControlClient` tells for each way connecting fails: both run here
against the same sockets. (Calls and their errors through a real bus:
``tests/integration/test_control.py``, which runs the real razarctl.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from razard.control import ControlClient
from razard.controlsync import SyncControlClient
from razard.errors import ControlError

#: What dbus-fast's package ``__init__`` loads and the wire layer must not.
NOT_LOADED = ("asyncio", "ssl", "dbus_fast.aio", "dbus_fast.service", "dbus_fast.message_bus")


def _fresh(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_wire_layer_loads_no_asyncio_and_leaves_the_package_importable() -> None:
    """After `razard.dbuswire` (and the blocking client), none of asyncio or dbus-fast's
    buses is loaded and no half-made ``dbus_fast`` package is left in ``sys.modules``;
    a later ``import dbus_fast.aio`` gets the real package, with the same Message."""
    out = _fresh(f"""
        import json, sys
        import razard.controlsync, razard.dbuswire as wire
        before = [m for m in {NOT_LOADED!r} if m in sys.modules]
        left = "dbus_fast" in sys.modules
        import dbus_fast, dbus_fast.aio
        from dbus_fast._private.unmarshaller import Unmarshaller
        from dbus_fast.aio import MessageBus
        print(json.dumps({{
            "before": before,
            "package_left": left,
            "same_message": dbus_fast.Message is wire.Message,
            "same_unmarshaller": Unmarshaller is wire.Unmarshaller,
            "bus": MessageBus.__name__,
            "after": [m for m in {NOT_LOADED!r} if m in sys.modules],
        }}))
    """)
    seen = json.loads(out.splitlines()[-1])
    assert seen["before"] == [] and seen["package_left"] is False
    assert seen["same_message"] and seen["same_unmarshaller"] and seen["bus"] == "MessageBus"
    assert set(seen["after"]) == set(NOT_LOADED)  # the read above is real


def test_a_message_survives_the_wire_layer_round_trip() -> None:
    """A method call marshalled by the wire layer's Message reads back whole through its
    Unmarshaller (what the blocking client sends and reads)."""
    from razard.dbuswire import Message, MessageFlag, Unmarshaller

    sent = Message(
        destination="org.razar.Supervisor1",
        path="/org/razar/Supervisor1",
        interface="org.razar.Supervisor1",
        member="Heal",
        flags=MessageFlag.NO_AUTOSTART,
        signature="sbii",
        body=["web", True, -1, 3],
        serial=7,
    )
    a, b = socket.socketpair()
    with a, b:
        a.sendall(sent._marshall(False))
        got = Unmarshaller(None, b, False).unmarshall()
    assert got is not None
    assert (got.member, got.serial, got.signature, list(got.body)) == ("Heal", 7, "sbii", sent.body)
    assert got.flags == MessageFlag.NO_AUTOSTART


# --- connecting fails: both clients say the same ----------------------------------


class FakeBus:
    """A unix socket at ``path`` whose every connection gets ``answer``."""

    def __init__(self, path: Path, answer: Callable[[socket.socket], None]) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.answer(conn)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(timeout=10)


def _read_auth_line(conn: socket.socket) -> None:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = conn.recv(1024)
        if not chunk:
            return
        data += chunk


def _until_hung_up(conn: socket.socket) -> None:
    while conn.recv(1024):
        pass


def _reject(conn: socket.socket) -> None:
    _read_auth_line(conn)
    conn.sendall(b"REJECTED EXTERNAL\r\n")
    _until_hung_up(conn)


def _hang_up(conn: socket.socket) -> None:
    _read_auth_line(conn)


def _say_nothing(conn: socket.socket) -> None:
    _until_hung_up(conn)  # the client gives up at its deadline


@pytest.fixture
def fake_bus(tmp_path: Path) -> Iterator[Callable[[Callable[[socket.socket], None]], str]]:
    buses: list[FakeBus] = []

    def start(answer: Callable[[socket.socket], None]) -> str:
        bus = FakeBus(tmp_path / f"bus{len(buses)}", answer)
        buses.append(bus)
        return f"unix:path={bus.path}"

    yield start
    for bus in buses:
        bus.close()


async def _both(address: str, deadline_s: float = 30.0) -> tuple[str, str]:
    """The errors of the asyncio client and of the blocking client connecting to ``address``."""
    with pytest.raises(ControlError) as by_asyncio:
        await ControlClient.connect("user", address, deadline_s=deadline_s)
    with pytest.raises(ControlError) as by_sync:
        SyncControlClient.connect("user", address, deadline_s=deadline_s)
    return str(by_asyncio.value), str(by_sync.value)


async def test_missing_socket_reads_the_same(tmp_path: Path) -> None:
    address = f"unix:path={tmp_path}/none"
    by_asyncio, by_sync = await _both(address)
    assert by_sync == by_asyncio
    assert by_sync == f"cannot connect to the user bus at {address}: No such file or directory"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("nope:path=/x", "got unknown address transport: nope"),
        ("unix:dir=/x", "got unix transport with unknown path specifier"),
        ("tcp:host=127.0.0.1,port=x", "got tcp transport with invalid port: 'x'"),
        ("unix", "address did not contain a transport"),
    ],
)
async def test_bad_address_reads_the_same(address: str, reason: str) -> None:
    by_asyncio, by_sync = await _both(address)
    assert by_sync == by_asyncio
    assert by_sync == f"cannot connect to the user bus at {address}: {reason}"


async def test_rejected_authentication_reads_the_same(
    fake_bus: Callable[[Callable[[socket.socket], None]], str],
) -> None:
    address = fake_bus(_reject)
    by_asyncio, by_sync = await _both(address)
    assert by_sync == by_asyncio
    assert by_sync.endswith(": authentication failed: REJECTED: ['EXTERNAL']")


async def test_hang_up_during_authentication_reads_the_same(
    fake_bus: Callable[[Callable[[socket.socket], None]], str],
) -> None:
    address = fake_bus(_hang_up)
    by_asyncio, by_sync = await _both(address)
    assert by_sync == by_asyncio
    assert by_sync.endswith(": connection closed during authentication")


async def test_silent_bus_hits_the_connect_deadline_the_same(
    fake_bus: Callable[[Callable[[socket.socket], None]], str],
) -> None:
    address = fake_bus(_say_nothing)
    by_asyncio, by_sync = await _both(address, deadline_s=0.2)
    assert by_sync == by_asyncio
    assert by_sync == f"cannot connect to the user bus at {address}: no answer in 0.2 s"

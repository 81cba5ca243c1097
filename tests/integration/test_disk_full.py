"""A full state directory: razard keeps supervising, says it is degraded, tears no file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from razard.errors import StateError
from razard.storage import append_jsonl
from razard.usermanager import UserManager
from tests.integration.harness import Razard, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tmpfs"),
]


COMPONENT = """
    [[component]]
    name = "{name}"
    layer = "crown"
    priority = 1
    command = ["/bin/sleep", "100000"]
    restart = {{ attempts = 20, backoff_base = 0.05, backoff_cap = 0.2 }}
    """


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of the test's own."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte; the filler file, to delete to free the space."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def whole_lines(path: Path) -> int:
    lines = [x for x in path.read_bytes().split(b"\n") if x.strip()]
    for x in lines:
        json.loads(x)
    return len(lines)


def test_an_append_that_does_not_fit_leaves_no_torn_record(small_fs: Path) -> None:
    """On ENOSPC mid-record the half written is cut off again: the file holds whole lines."""
    log = small_fs / "razar.log"
    append_jsonl(log, {"event": "first"})
    fill(small_fs)
    with pytest.raises(StateError, match="cannot append"):
        append_jsonl(log, {"event": "big", "message": "x" * 200_000})
    assert log.read_bytes() == b'{"event": "first"}\n'


def test_razard_on_a_full_disk_keeps_healing_reports_degraded_and_recovers(
    user_manager: UserManager, journald: object, tmp_path: Path, small_fs: Path
) -> None:
    """The state dir fills up: a killed component is still restarted, razard says DEGRADED
    (journal, STATUS=, razar_degraded) and writes no torn file; with space back it saves again."""
    name = f"df-{uuid.uuid4().hex[:6]}"
    r = Razard(user_manager, tmp_path, COMPONENT.format(name=name))
    r.state_dir = small_fs / "state"  # the config is written again with it
    r.write_config(COMPONENT.format(name=name))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_path = tmp_path / "notify.sock"
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    r.extra_env["NOTIFY_SOCKET"] = str(notify_path)
    statuses: list[str] = []

    def status_said(word: str) -> bool:
        try:
            while True:
                msg = notify.recv(4096).decode()
                statuses.extend(
                    line.removeprefix("STATUS=")
                    for line in msg.splitlines()
                    if line.startswith("STATUS=")
                )
        except TimeoutError:
            pass
        return bool(statuses) and word in statuses[-1]  # what systemctl status shows now

    unit = f"razar-{name}.service"
    try:
        r.start()
        r.wait_state(name, "healthy")
        filler = fill(small_fs)
        pid = r.main_pid(unit)
        r.um.systemctl("kill", "--signal=SIGKILL", unit)  # a state change razard must save
        wait_for(lambda: r.main_pid(unit) not in (0, pid), 30, "the restart on a full disk")
        r.wait_state(name, "healthy")
        wait_for(lambda: status_said("DEGRADED"), 30, "STATUS=DEGRADED")
        assert "razar_degraded 1.0" in r.metrics_text()
        journal = subprocess.run(
            ["journalctl", "--no-pager", "-o", "cat", f"_PID={r.proc.pid}"],  # type: ignore[union-attr]
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert "supervising on without saving" in journal
        whole_lines(r.state_dir / "razar.log")
        json.loads((r.state_dir / "razar_state.json").read_text())  # the old one, whole
        assert not list(r.state_dir.glob(".*.tmp"))  # no temp file left behind

        filler.unlink()  # space comes back
        pid = r.main_pid(unit)
        r.um.systemctl("kill", "--signal=SIGKILL", unit)
        wait_for(lambda: r.main_pid(unit) not in (0, pid), 30, "a restart with space back")
        wait_for(lambda: not status_said("DEGRADED") and statuses, 30, "STATUS without DEGRADED")
        assert "razar_degraded 0.0" in r.metrics_text()
        state = json.loads((r.state_dir / "razar_state.json").read_text())
        assert state["components"][name]["restarts"] >= 2  # saved again, with both restarts
        whole_lines(r.state_dir / "razar.log")
    finally:
        r.stop()
        r.cleanup_units([unit])
        notify.close()

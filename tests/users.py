"""Throwaway local users for the tests that play other people on the node."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Held shared while a test's users exist; the group ``razar`` that the tests made is
#: removed by whoever finds it free (tests in other xdist workers may still use it).
_LOCK = Path("/run/razar-tests-users.lock")
#: Present while the group ``razar`` is one the tests made (not the machine's own).
_MADE = Path("/run/razar-tests-group-made")


@dataclass
class Users:
    outsider: str  # an ordinary user
    operator: str  # a member of group razar


@contextlib.contextmanager
def throwaway_users(prefix: str) -> Iterator[Users]:
    """Two system users, ``<prefix>out-*`` and ``<prefix>op-*`` (in group razar, made if
    the machine has none); removed again, with the group when it was made here."""
    tag = uuid.uuid4().hex[:6]
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            grp.getgrnam("razar")
        except KeyError:
            subprocess.run(["groupadd", "--system", "razar"], check=True)
            _MADE.touch()
        outsider, operator = f"{prefix}out-{tag}", f"{prefix}op-{tag}"
        base = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        try:
            _shadow_tool([*base, "--no-user-group", outsider])
            _shadow_tool([*base, "--no-user-group", "--groups", "razar", operator])
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield Users(outsider, operator)
        finally:
            for name in (outsider, operator):
                _shadow_tool(["userdel", name], check=False)
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else's users now
                if _MADE.exists():
                    subprocess.run(["groupdel", "razar"], check=False)
                    _MADE.unlink()


def _shadow_tool(argv: list[str], *, check: bool = True) -> None:
    """Run useradd/userdel, again while another process holds /etc/passwd's lock."""
    for _ in range(50):
        cp = subprocess.run(argv, capture_output=True, text=True, check=False)
        if cp.returncode == 0 or "lock" not in cp.stderr:
            break
        time.sleep(0.1)
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()}")

"""Other users on the node against a real razard (issue 14).

razard runs as root next to users who log in or run jobs. Each test here runs
the attack as a throwaway unprivileged user it creates (``setpriv``), against a
razard whose state directory sits where any user can reach it (under a 0755
directory, as ``/var/lib`` is), and checks what an operator would see.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from razard.sandbox import UserManager
from tests.integration.harness import Razard, sleepers, wait_for

PYTHON = "/usr/bin/python3"  # the system's, runnable by anyone; the code run needs stdlib only

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates users"),
    pytest.mark.skipif(
        not (all(shutil.which(t) for t in ("setpriv", "useradd")) and Path(PYTHON).exists()),
        reason="needs setpriv, useradd and /usr/bin/python3",
    ),
]


@dataclass
class Users:
    outsider: str  # an ordinary user
    operator: str  # a member of group razar


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    """Two throwaway system users; group razar is made if the machine has none."""
    tag = uuid.uuid4().hex[:6]
    made_group = False
    try:
        grp.getgrnam("razar")
    except KeyError:
        subprocess.run(["groupadd", "--system", "razar"], check=True)
        made_group = True
    outsider, operator = f"rzt-hout-{tag}", f"rzt-hop-{tag}"
    base = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    subprocess.run([*base, "--no-user-group", outsider], check=True)
    subprocess.run([*base, "--no-user-group", "--groups", "razar", operator], check=True)
    try:
        yield Users(outsider, operator)
    finally:
        for name in (outsider, operator):
            subprocess.run(["userdel", name], check=False)
        if made_group:
            subprocess.run(["groupdel", "razar"], check=False)


def as_user_argv(user: str, *argv: str) -> list[str]:
    pw = pwd.getpwnam(user)
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", *argv]


def run_as(user: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run python ``code`` as ``user`` (``sys.argv[1:]`` = ``args``)."""
    return subprocess.run(
        as_user_argv(user, PYTHON, "-c", textwrap.dedent(code), *args),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/"},
        check=False,
    )


#: tries to open each path read-only and flock it; prints {path: "locked" | error name}
TRY_LOCKS = """
    import fcntl, json, os, sys
    out = {}
    for path in sys.argv[1:]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            out[path] = type(e).__name__
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            out[path] = "locked"
        except OSError as e:
            out[path] = type(e).__name__
        os.close(fd)
    print(json.dumps(out))
"""

#: holds an exclusive flock on argv[1] (opened read-only) until killed; says "held"
HOLD_LOCK = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def exposed(user_manager: UserManager, journald: object) -> Iterator[Callable[[str], Razard]]:
    """Razards whose state directories any user could reach: under a 0755 directory."""
    base = Path(tempfile.mkdtemp(prefix="razar-hostile-", dir="/var/tmp"))
    base.chmod(0o755)
    made: list[Razard] = []

    def make(components: str) -> Razard:
        where = base / f"r{len(made)}"
        where.mkdir(mode=0o755)
        r = Razard(user_manager, where, components)
        made.append(r)
        return r

    try:
        yield make
    finally:
        for r in made:
            r.stop()
            names = [
                line.split('"')[1]
                for line in r.config.read_text().splitlines()
                if line.strip().startswith("name = ")
            ]
            r.cleanup_units([f"razar-{n}.service" for n in names])
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------- 1: locks and permissions


def test_outsiders_cannot_read_state_or_take_locks_operators_read_only(
    exposed: Callable[[str], Razard], users: Users
) -> None:
    """The state directory is root:razar 2750: an outsider opens nothing in it; an
    operator (group razar) reads razar.log and the state file but can open no lock."""
    r = exposed(sleepers(["calm"]))
    r.start()
    r.wait_state("calm", "healthy")
    state = r.state_dir
    st = state.stat()
    assert stat.S_IMODE(st.st_mode) & 0o007 == 0, oct(st.st_mode)
    assert st.st_gid == grp.getgrnam("razar").gr_gid
    locks = [state / "razard.lock", state / "repair.lock"]
    assert all(p.exists() for p in locks), sorted(p.name for p in state.iterdir())
    readable = [state / "razar.log", state / "razar_state.json"]
    targets = [str(p) for p in [*locks, *readable]]

    outsider = run_as(users.outsider, TRY_LOCKS, *targets)
    assert outsider.returncode == 0, outsider.stderr
    assert json.loads(outsider.stdout) == dict.fromkeys(targets, "PermissionError")

    operator = run_as(users.operator, TRY_LOCKS, *targets)
    assert operator.returncode == 0, operator.stderr
    seen = json.loads(operator.stdout)
    assert {p: seen[str(p)] for p in locks} == dict.fromkeys(locks, "PermissionError")
    assert all(seen[str(p)] != "PermissionError" for p in readable), seen
    for p in readable:
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p


def test_a_lock_held_on_razar_log_does_not_stop_healing(
    exposed: Callable[[str], Razard], users: Users
) -> None:
    """An operator holding razar.log's flock (a read-only descriptor is enough) cannot
    freeze razard: a SIGKILLed component is still restarted and reported healthy."""
    r = exposed(sleepers(["victim"]))
    r.start()
    r.wait_state("victim", "healthy")
    log = r.state_dir / "razar.log"
    holder = subprocess.Popen(
        as_user_argv(users.operator, PYTHON, "-c", textwrap.dedent(HOLD_LOCK), str(log)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/"},
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == "held", holder.stderr.read() if holder.stderr else ""
        old = r.main_pid("razar-victim.service")
        os.kill(old, signal.SIGKILL)
        wait_for(
            lambda: (p := r.main_pid("razar-victim.service")) not in (0, old) and p,
            60,
            "victim to run again under a new MainPID",
        )
        assert r.wait_state("victim", "healthy", timeout=60)["restarts"] >= 1
    finally:
        holder.kill()
        holder.wait()

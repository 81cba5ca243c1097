"""Shared fixtures: journald, a private systemd user manager, a free TCP port.

The real parts are started as ARCHITECTURE.md describes ("Real parts, and how
tests start them"); tests that need them are skipped, with the reason, where
they cannot run (not root, systemd not installed).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from razard.usermanager import JOURNALD, SYSTEMD, UserManager, ensure_journald, start_user_manager
from razard.usermanager import stop_journald as _stop_journald
from tests import canary

_SESSION_START = time.time()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a canary token (see tests/canary.py) shows up where it must not."""
    if getattr(session.config, "workerinput", None) is not None:
        return
    roots = []
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        try:
            roots.append(factory.getbasetemp())
        except (OSError, ValueError):
            pass
    hits = canary.leaks_in_files(roots) + canary.leaks_in_journal(_SESSION_START - 1)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if hits:
        if reporter is not None:
            reporter.write_sep("=", "SECRET TOKENS LEAKED", red=True)
            for hit in hits:
                reporter.write_line(hit)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter is not None:
        reporter.write_line(
            f"token check: no canary token in the journal or in {len(roots)} temp tree(s)"
        )


def _skip_without_systemd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a private systemd user manager and journald are started")
    if not SYSTEMD.exists():
        pytest.skip(f"needs {SYSTEMD} (systemd is not installed)")


_restarted_journalds: list[subprocess.Popen[bytes]] = []


@pytest.fixture(scope="session")
def journald() -> Iterator[subprocess.Popen[bytes] | None]:
    """A journald on /run/systemd/journal/socket; the one this session started, or None."""
    _skip_without_systemd()
    if not JOURNALD.exists():
        pytest.skip(f"needs {JOURNALD}")
    proc = ensure_journald()
    yield proc
    _stop_journald(proc)
    while _restarted_journalds:
        _stop_journald(_restarted_journalds.pop())


@pytest.fixture(autouse=True)
def _journald_alive(request: pytest.FixtureRequest) -> None:
    """Before each test that needs journald: one that someone else started (and stopped
    since: another test run on this machine) is replaced, so the test finds one."""
    if "journald" in request.fixturenames:
        proc = ensure_journald()
        if proc is not None:
            _restarted_journalds.append(proc)


@pytest.fixture(scope="session")
def user_manager(
    tmp_path_factory: pytest.TempPathFactory, journald: subprocess.Popen[bytes] | None
) -> Iterator[UserManager]:
    """A private ``systemd --user`` shared by the session (its units log to journald)."""
    _skip_without_systemd()
    um = start_user_manager(tmp_path_factory.mktemp("um"))
    try:
        yield um
    finally:
        um.stop()


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port

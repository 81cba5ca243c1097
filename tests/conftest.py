"""Shared fixtures: journald, a private systemd user manager, a free TCP port.

The real parts are started as ARCHITECTURE.md describes ("Real parts, and how
tests start them"); tests that need them are skipped, with the reason, where
they cannot run (not root, systemd not installed).

Under pytest-xdist (``make test`` runs ``-n``) each worker has its own user
manager (its own bus, unit directory and cgroup), and journald is shared: a
worker starts one only while holding a lock file in the run's base temporary
directory, so two never race, and no worker stops it (another may still be
logging); the controlling process stops every journald the run started, last.
Without xdist the one process plays both parts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import pytest

from razard.usermanager import JOURNALD, SYSTEMD, UserManager, ensure_journald, start_user_manager
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


#: The tiers in the order a run starts them: the longest files first (a booted node, the
#: demo, razards), so that under xdist's --dist loadfile the many short unit files fill
#: the workers at the end instead of a node boot starting last.
_TIER_ORDER = ("system", "e2e", "integration", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the items by tier (stable: within a tier, as collected)."""

    def tier(item: pytest.Item) -> int:
        here = Path(__file__).parent
        parts = item.path.relative_to(here).parts if item.path.is_relative_to(here) else ()
        return _TIER_ORDER.index(parts[0]) if parts and parts[0] in _TIER_ORDER else 0

    items.sort(key=tier)


def _skip_without_systemd() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: a private systemd user manager and journald are started")
    if not SYSTEMD.exists():
        pytest.skip(f"needs {SYSTEMD} (systemd is not installed)")


def _is_worker(config: pytest.Config) -> bool:
    return getattr(config, "workerinput", None) is not None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Hand each xdist worker this process's ``COLUMNS`` (or its absence)."""
    node.workerinput["razar_columns"] = os.environ.get("COLUMNS")


def pytest_configure(config: pytest.Config) -> None:
    """A worker's environment as the controller's: xdist's workers are started with
    ``COLUMNS=80``, which would wrap razarctl's tables where a plain run does not."""
    if _is_worker(config):
        columns = config.workerinput.get("razar_columns")  # type: ignore[attr-defined]
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


def _run_dir(config: pytest.Config) -> Path:
    """The base temporary directory of the whole run: under xdist every worker's own
    is ``<it>/popen-gwN``."""
    base: Path = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    return base.parent if _is_worker(config) else base


def _journalds_file(config: pytest.Config) -> Path:
    return _run_dir(config) / "journald.pids"


def _ensure_shared_journald(config: pytest.Config) -> None:
    """A journald listens when this returns; one this run starts is written down (pid and
    start time) for `pytest_unconfigure` of the controlling process to stop."""
    with open(_run_dir(config) / "journald.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = ensure_journald()
        if proc is not None:
            started = psutil.Process(proc.pid).create_time()
            with _journalds_file(config).open("a") as f:
                f.write(f"{proc.pid} {started}\n")
            if proc.stderr is not None:
                proc.stderr.close()  # nobody reads it; the process outlives this worker


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the journalds this run started, once every worker is done."""
    factory = getattr(config, "_tmp_path_factory", None)
    if _is_worker(config) or getattr(factory, "_basetemp", None) is None:
        return  # a worker, or a run that made no temporary directory (so started nothing)
    try:
        path = _journalds_file(config)
        lines = path.read_text().splitlines()
    except (OSError, ValueError):
        return
    for line in lines:
        pid, started = line.split()
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(int(pid))
            same = abs(p.create_time() - float(started)) < 0.01
            if same and Path(p.exe()) == JOURNALD.resolve():  # /lib is a link on Debian
                p.terminate()
                try:
                    p.wait(5)
                except psutil.TimeoutExpired:
                    p.kill()
    path.unlink()


@pytest.fixture(scope="session")
def journald(pytestconfig: pytest.Config) -> None:
    """A journald on /run/systemd/journal/socket (this run's or one that was there)."""
    _skip_without_systemd()
    if not JOURNALD.exists():
        pytest.skip(f"needs {JOURNALD}")
    _ensure_shared_journald(pytestconfig)


@pytest.fixture(autouse=True)
def _journald_alive(request: pytest.FixtureRequest) -> None:
    """Before each test that needs journald: one that someone else started (and stopped
    since: another test run on this machine) is replaced, so the test finds one."""
    if "journald" in request.fixturenames:
        _ensure_shared_journald(request.config)


@pytest.fixture(scope="session")
def user_manager(tmp_path_factory: pytest.TempPathFactory, journald: None) -> Iterator[UserManager]:
    """A private ``systemd --user`` shared by the session, or by the xdist worker (its
    units log to journald)."""
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

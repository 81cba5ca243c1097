"""Secure by default: every socket razard listens on is bound to loopback."""

from __future__ import annotations

from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard, free_port

pytestmark = pytest.mark.integration


def test_razard_listens_on_loopback_only_by_default(
    user_manager: UserManager, journald: object, tmp_path: Path
) -> None:
    """With no metrics_address (and the notifier on), razard's only listeners are on 127.0.0.1."""
    r = Razard(
        user_manager,
        tmp_path,
        f"""
        [escalation]
        poll_interval = 0.5

        [escalation.operator]
        url = "http://127.0.0.1:{free_port()}"
        """,
    )
    r.start()
    try:
        assert r.proc is not None
        listening = [
            c
            for c in psutil.Process(r.proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        ]
        assert listening, "razard listens on nothing (metrics should be up)"
        assert {c.laddr.port for c in listening} == {r.metrics_port}
        assert all(c.laddr.ip in ("127.0.0.1", "::1") for c in listening), listening
    finally:
        r.stop()

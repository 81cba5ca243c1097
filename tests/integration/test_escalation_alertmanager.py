"""A real Alertmanager (Debian's prometheus-alertmanager) receives, dedups and resolves
razar's alerts; everything is checked through its own /api/v2/alerts."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from razard.config import load_config
from razard.escalation.history import read_escalations
from razard.escalation.notifier import EscalationNotifier
from razard.journal import EventLog, Priority
from tests import canary
from tests.integration.harness import free_port, wait_for

pytestmark = pytest.mark.integration

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    """Alertmanager on a free loopback port, no cluster, a receiver that sends nowhere."""
    if not shutil.which(ALERTMANAGER):
        pytest.skip(f"needs {ALERTMANAGER} (apt-get install prometheus-alertmanager)")
    am = tmp_path / "am"
    am.mkdir()
    (am / "am.yml").write_text(
        textwrap.dedent("""\
        route:
          receiver: "null"
          group_wait: 1h
        receivers:
          - name: "null"
        """)
    )
    port = free_port()
    log = (am / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            f"--storage.path={am / 'data'}",
            f"--config.file={am / 'am.yml'}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (am / "am.log").read_text()
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, "alertmanager to be ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def alerts_of(url: str, component: str) -> list[dict[str, Any]]:
    """Alertmanager's current (not resolved) alerts for ``component``."""
    got = httpx.get(f"{url}/api/v2/alerts", timeout=5).json()
    return [a for a in got if a["labels"].get("component") == component]


async def test_alertmanager_receives_dedups_and_resolves(
    journald: object, alertmanager: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One alert with razar's labels; a repeat is the same alert; recovery resolves it."""
    comp = f"am-{uuid.uuid4().hex[:8]}"
    ident = f"razard-{comp}"
    token = canary.token("alertmanager")
    monkeypatch.setenv("RAZAR_TEST_AM_TOKEN", token)
    cfg_path = tmp_path / "razard.toml"
    cfg_path.write_text(
        textwrap.dedent(f"""\
        [razard]
        state_dir = "{tmp_path / "state"}"

        [[component]]
        name = "{comp}"
        layer = "sacral"
        priority = 10
        command = ["/bin/sleep", "1000"]

        [escalation]
        repeat_interval = 1.0
        host = "gpu-node-7"

        [escalation.alertmanager]
        url = "{alertmanager}"
        token_env = "RAZAR_TEST_AM_TOKEN"
        """)
    )
    config = load_config(cfg_path)
    n = EscalationNotifier(
        config.escalation,
        config.daemon.state_dir,
        lambda: config.components,
        EventLog(None, identifier="razar-notifier-test"),
        identifier=ident,
    )
    n.lock()
    events = EventLog(None, identifier=ident)
    events.emit(
        "operator_alert",
        f"{comp} quarantined: restart budget spent; last error: Xid 79",
        component=comp,
        layer="sacral",
        priority=Priority.ALERT,
    )
    async with n.client() as client:

        async def until(pred: Any, within: float = 120.0) -> None:
            # by a deadline, not a count of passes: a journald shared with parallel test
            # workers can be slow to hand the entry to the notifier's journalctl (and
            # Alertmanager to take a resolve); 60 s was missed once
            loop = asyncio.get_running_loop()
            deadline = loop.time() + within
            while loop.time() < deadline:
                await n.run_once(client)
                if await asyncio.to_thread(pred):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"not reached within {within:g}s")

        await until(lambda: alerts_of(alertmanager, comp))
        (alert,) = alerts_of(alertmanager, comp)
        assert alert["labels"] == {
            "alertname": "RazarComponentQuarantined",
            "component": comp,
            "layer": "sacral",
            "severity": "critical",
            "host": "gpu-node-7",
            "signature": "quarantined",
        }
        assert "restart budget spent" in alert["annotations"]["description"]
        assert alert["annotations"]["summary"].startswith(f"{comp} on gpu-node-7: quarantined")
        assert alert["status"]["state"] == "active"

        await asyncio.sleep(1.1)  # still firing after the repeat interval: sent again
        r = await n.run_once(client)
        assert r.delivered == 1
        assert len(alerts_of(alertmanager, comp)) == 1  # Alertmanager's dedup: the same alert

        events.emit("state_healthy", "healthy (probe ok)", component=comp, layer="sacral")
        await until(lambda: not alerts_of(alertmanager, comp))

    history = read_escalations(config.daemon.state_dir)
    assert [(h["reason"], h["targets"]) for h in history] == [
        ("quarantine", {"alertmanager": "delivered"}),
        ("quarantine", {"alertmanager": "delivered"}),
        ("resolved", {"alertmanager": "delivered"}),
    ]
    assert history[1]["repeat_of"] == history[0]["id"] == history[2]["resolves"]
    assert canary.leaks_in_files([config.daemon.state_dir]) == []

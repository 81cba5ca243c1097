"""`razarctl rollback` with razard not running: the real CLI, real files, a bus without razard.

The patch is applied and kept with the real patch engine; razarctl finds no
owner of razard's name on a private dbus-daemon and rolls back directly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from razard.config import load_config
from razard.layout import HISTORY_FILE
from razard.repair.patch import PatchEngine
from razard.repair.types import FileEdit, Proposal
from tests.integration.test_control import start_dbus_daemon, stop_dbus_daemon

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon"),
]

RAZARCTL = str(Path(sys.executable).with_name("razarctl"))
APP = b"#!/bin/sh\n# web\nport=80\nexec sleep infinity\n"


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    """A private dbus-daemon on which nobody owns razard's name."""
    run_dir = tmp_path / "bus"
    run_dir.mkdir()
    proc, address = start_dbus_daemon(run_dir)
    try:
        yield address
    finally:
        stop_dbus_daemon(proc)


def write_config(tmp_path: Path) -> Path:
    """A razard.toml with component `web` whose artifact is srv/app.sh."""
    srv = tmp_path / "srv"
    srv.mkdir()
    (srv / "app.sh").write_bytes(APP)
    (srv / "app.sh").chmod(0o750)
    config = tmp_path / "razard.toml"
    state, app = tmp_path / "state", srv / "app.sh"
    config.write_text(
        f"""[razard]
state_dir = "{state}"
bus = "user"

[[component]]
name = "web"
layer = "root"
priority = 1
command = ["/bin/sh", "{app}"]
artifacts = ["app.sh"]
artifact_root = "{srv}"
"""
    )
    return config


def razarctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real razarctl against ``address``."""
    return subprocess.run(
        [RAZARCTL, "--bus", "user", "--address", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ.copy(),
    )


def test_rollback_without_razard_restores_the_files(bus_address: str, tmp_path: Path) -> None:
    """With razard down, rollback restores the kept patch byte for byte and records it."""
    config = write_config(tmp_path)
    cfg = load_config(config)
    comp = cfg.component("web")
    assert comp is not None
    engine = PatchEngine(cfg.daemon.state_dir)
    proposal = Proposal(agent="registry", edits=(FileEdit("app.sh", "port=80", "port=8080"),))
    applied = engine.apply(comp, engine.check(comp, proposal))
    engine.keep(comp, applied)
    app = tmp_path / "srv" / "app.sh"
    assert app.read_bytes() == APP.replace(b"port=80", b"port=8080")

    run = razarctl(bus_address, "rollback", "web", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert app.read_bytes() == APP
    assert "razard is not running on the user bus" in run.stderr
    assert f"rolled back web: reverted patch {applied.patch_id}; files: app.sh" in run.stdout
    assert "razar-web.service was NOT restarted" in run.stdout
    assert "systemctl --user restart razar-web.service" in run.stdout
    history = [
        json.loads(line)
        for line in (cfg.daemon.state_dir / HISTORY_FILE).read_text().splitlines()
        if line.strip()
    ]
    reverted = [r for r in history if r["status"] == "reverted"]
    assert len(reverted) == 1
    assert reverted[0]["by"] == "operator" and reverted[0]["patch_id"] == applied.patch_id

    again = razarctl(bus_address, "rollback", "web", "--config", str(config))
    assert again.returncode == 1
    assert "razarctl: web: nothing to roll back (no kept patch)" in again.stderr
    assert "Traceback" not in again.stderr
    assert app.read_bytes() == APP


def test_rollback_without_razard_needs_a_usable_config(bus_address: str, tmp_path: Path) -> None:
    """A missing config is one clear error (exit 1); an unknown component exits 2."""
    missing = tmp_path / "nope.toml"
    run = razarctl(bus_address, "rollback", "web", "--config", str(missing))
    assert run.returncode == 1
    assert "razard is not running" in run.stderr and "--config FILE" in run.stderr
    assert f"{missing}: (file): No such file or directory" in run.stderr
    assert "Traceback" not in run.stderr

    config = write_config(tmp_path)
    unknown = razarctl(bus_address, "rollback", "db", "--config", str(config))
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == "razarctl: unknown component 'db'"

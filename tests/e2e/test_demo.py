"""The README's first command, run as a new user would, and what it shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo starts a private systemd and needs root")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_readme_demo_heals_the_crash_and_quarantines_the_loop() -> None:
    """`make demo` shows razarctl status with the crash healed and the loop quarantined."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme.split("##")[0], "the README must open with `make demo`"
    env = {**os.environ, "COLUMNS": "200"}  # as wide as an operator's terminal: rows unwrapped
    p = subprocess.run(
        ["make", "-s", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = p.stdout
    assert p.returncode == 0, f"make demo failed ({p.returncode}):\n{out}\n{p.stderr}"
    assert "OK: crash healed, crash loop quarantined" in out
    table = out.split("==> razarctl status", 1)[1]
    for name, state in [
        ("api", "healthy"),
        ("gpu-feeder", "healthy"),
        ("flaky-model", "healthy"),
        ("broken-indexer", "quarantined"),
    ]:
        assert re.search(rf"{re.escape(name)}\s.*\b{state}\b", table), f"{name} not {state}"
    assert "torn down" in out
    # nothing of the demo is left running
    leftovers = subprocess.run(
        ["pgrep", "-f", "razar-demo-"], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []

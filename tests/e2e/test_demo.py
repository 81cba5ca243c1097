"""The README's first command, run as a new user would, and what it shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def sections(out: str) -> dict[str, str]:
    """The demo's output by heading: "(a)" ... "(e)" and "boot"."""
    found: dict[str, str] = {}
    for chunk in out.split("\n=== ")[1:]:
        heading = chunk.split("\n", 1)[0]
        m = re.match(r"\(([a-e])\)", heading)
        found[f"({m.group(1)})" if m else "boot"] = chunk
    return found


def row(table: str, name: str) -> str:
    """The line of a razarctl table whose first column is ``name``."""
    for line in table.splitlines():
        if line.split()[:1] == [name]:
            return line
    raise AssertionError(f"no row for {name} in:\n{table}")


def test_make_demo_installs_only_what_the_demo_uses() -> None:
    """`make demo` runs the demo's set-up, not the tests' (no Prometheus & co. on the host)."""
    p = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "scripts/setup.sh demo" in p.stdout, p.stdout
    assert "setup.sh test" not in p.stdout, p.stdout
    test = subprocess.run(
        ["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "scripts/setup.sh test" in test.stdout, test.stdout
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    demo_part = setup.split('if [ "$what" = test ]', 1)[0]
    for test_only in ("prometheus", "alertmanager", "journal-remote", "debootstrap", "nspawn"):
        assert test_only not in demo_part.split("# ---- what the demo uses", 1)[1], test_only


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo starts a private systemd and needs root")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_readme_demo_shows_the_whole_product(journald: None) -> None:
    """`make demo` shows, each under its heading: a crash healed, a registry fix rolled back,
    a layer down and healed, a crash loop quarantined, and status, incident and metrics.

    The run's shared journald is up first, so the demo finds it and leaves it running:
    a journald of the demo's own would stop with the demo, under other workers' tests."""
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme.split("##")[0], "the README must open with `make demo`"
    env = {**os.environ, "COLUMNS": "200"}  # as wide as an operator's terminal: rows unwrapped
    t0 = time.monotonic()
    p = subprocess.run(
        ["make", "-s", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    wall = time.monotonic() - t0
    print(f"make demo took {wall:.1f}s")  # measured, not asserted
    out = p.stdout
    assert p.returncode == 0, f"make demo failed ({p.returncode}):\n{out}\n{p.stderr}"
    assert "[FAILED]" not in out, out
    assert re.search(r"==> OK: all \d+ checks passed", out), out
    assert re.search(r"==> demo took \d+\.\ds", out), out
    s = sections(out)
    assert set(s) == {"boot", "(a)", "(b)", "(c)", "(d)", "(e)"}, list(s)

    boot = s["boot"]
    assert "razard READY after" in boot
    table = boot.split("$ razarctl status", 1)[1]
    assert re.search(r"\bhealthy\b", row(table, "gateway")), "the registry healed it at boot"
    assert re.search(r"\bquarantined\b", row(table, "broken-indexer"))

    # (a) the operator's kill, a new process from systemd, razard's records of it
    a = s["(a)"]
    assert "$ systemctl --user kill -s SIGKILL razar-api.service" in a
    old = re.search(r"api is active as pid (\d+)", a)
    new = re.search(r"razar-api.service active again, new pid (\d+)", a)
    assert old and new and old.group(1) != new.group(1), a
    assert "signal=9" in a and "restart 1/3" in a, a

    # (b) the registry's patch on disk, then the operator's rollback
    b = s["(b)"]
    assert re.search(r"registry\s+kept\s+app\.conf", b), b
    assert "-mode = brokn" in b and "+mode = ok" in b, b
    assert "registry healed gateway" in b, b
    assert "$ razarctl rollback gateway" in b
    assert re.search(r"rolled back gateway: reverted patch \S+; files: app\.conf", b), b
    assert "razard restarted gateway" in b

    # (c) the layer's outage and its healer, in the journal and in the unit's own output
    c = s["(c)"]
    assert "third_eye layer down" in c, c
    assert "third_eye_inference_flush" in c and "third_eye layer beating again" in c, c
    assert "inference: flushing the request queue" in c, c  # the healer's SIGUSR1 arrived
    pids = re.search(r"inference restarted \(pid (\d+) -> (\d+)\)", c)
    assert pids and pids.group(1) != pids.group(2), c
    assert re.search(r"third_eye\s+up\b", c.split("$ razarctl chakra", 1)[1]), c

    # (d) the crash loop in quarantine, and how to get it back
    d = s["(d)"]
    listing = d.split("$ razarctl quarantine list", 1)[1]
    assert "restart budget of 3 spent" in row(listing, "broken-indexer")
    assert "razarctl quarantine release broken-indexer" in d

    # (e) where an operator looks
    e = s["(e)"]
    status = e.split("$ razarctl status", 1)[1].split("$ ", 1)[0]
    for name, state in [
        ("api", "healthy"),
        ("inference", "healthy"),
        ("gateway", "quarantined"),  # rolled back to its bug; the registry does not repeat
        ("broken-indexer", "quarantined"),
    ]:
        assert re.search(rf"\b{state}\b", row(status, name)), f"{name} not {state}:\n{status}"
    incident = e.split("$ razarctl incident gateway", 1)[1].split("$ curl", 1)[0]
    events = ["patch_applied", "patch_kept", "repair_healed", "patch_reverted", "state_quarantined"]
    positions = [incident.find(ev) for ev in events]
    assert -1 not in positions and positions == sorted(positions), incident  # oldest first
    metrics = e.split("$ curl -s http://127.0.0.1:", 1)[1]
    for sample in (
        'razar_component_restarts_total{component="api",layer="throat"} 1.0',
        'razar_component_quarantined{component="broken-indexer",layer="crown"} 1.0',
        'razar_patches_total{action="applied",component="gateway"} 1.0',
        'razar_chakra_outages_total{chakra="third_eye"} 1.0',
    ):
        assert sample in metrics, f"{sample} not in:\n{metrics}"

    assert "torn down" in out
    # nothing of this demo is left running
    base = re.search(r"under (\S*razar-demo-\S+)", out)
    assert base, out
    leftovers = subprocess.run(
        ["pgrep", "-f", base.group(1)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []

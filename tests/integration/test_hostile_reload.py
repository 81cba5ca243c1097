"""A running razard handed broken configs on reload (razarctl reload and SIGHUP) rejects each,
names the file and key, and starts or stops nothing: every unit keeps its MainPID."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard, wait_for

pytestmark = pytest.mark.integration

NAMES = ("hr-a", "hr-b", "hr-c")


def sleeper(name: str, priority: int = 10, extra: str = "") -> str:
    return f"""
[[component]]
name = "{name}"
layer = "crown"
priority = {priority}
command = ["/bin/sleep", "100000"]
restart = {{ attempts = 3, backoff_base = 0.1, backoff_cap = 0.5 }}
{extra}
"""


GOOD = "".join(sleeper(n) for n in NAMES)

#: (case, text appended to or replacing the components, a word of the key the error names)
BROKEN: list[tuple[str, str | bytes, str]] = [
    ("toml syntax", GOOD + "\n[[component]\n", "(syntax)"),
    ("not UTF-8", b"\xff\xfe[razard]\x00", "(file)"),
    ("wrong type", GOOD.replace("priority = 10", 'priority = "10"', 1), "hr-a).priority"),
    ("unknown key", GOOD + "bogus = 1\n", "hr-c).bogus"),
    ("bad layer, others removed", sleeper("hr-a").replace('"crown"', '"navel"'), "layer"),
    (
        "duplicate name with a new one",
        GOOD + sleeper("hr-new") + sleeper("hr-a"),
        "name",
    ),
    (
        "a change and a removal, one bad key",
        sleeper("hr-a", extra='environment = { MODE = "x" }')
        + sleeper("hr-new", priority=-1)
        + sleeper("hr-b", extra="start_timeout = -5"),
        "start_timeout",
    ),  # fmt: skip
    ("empty components", "[[component]]\n", "name"),
]


@pytest.fixture
def running(user_manager: UserManager, journald: object, tmp_path: Path) -> Iterator[Razard]:
    r = Razard(user_manager, tmp_path, GOOD)
    r.start()
    yield r
    r.stop()
    r.cleanup_units([f"razar-{n}.service" for n in (*NAMES, "hr-new")])


def pids(r: Razard) -> dict[str, int]:
    return {n: r.main_pid(f"razar-{n}.service") for n in NAMES}


def test_broken_configs_on_reload_change_nothing(running: Razard) -> None:
    """Each broken config is rejected on reload with its key named; no unit starts or stops."""
    r = running
    for n in NAMES:
        r.wait_state(n, "healthy")
    before = pids(r)
    assert all(before.values()), before
    header = r.config.read_text().split("[[component]]", 1)[0]
    rejected = 0
    for k, (case, body, key) in enumerate(BROKEN):
        if isinstance(body, bytes):
            r.config.write_bytes(body)
        else:
            r.config.write_text(header + body)
        seen = len([e for e in r.events() if e["event"] == "config_rejected"])
        if k % 2 == 0:  # razarctl reload: the answer carries every problem
            p = r.ctl("reload", check=False)
            assert p.returncode != 0, (case, p.stdout)
            assert str(r.config) in p.stderr and key in p.stderr, (case, p.stderr)
            assert "Traceback" not in p.stderr
        else:  # SIGHUP: the problems go to the journal and razar.log
            r.send(signal.SIGHUP)
            wait_for(
                lambda: len([e for e in r.events() if e["event"] == "config_rejected"]) > seen,  # noqa: B023
                20,
                f"config_rejected for {case}",
            )
            event = [e for e in r.events() if e["event"] == "config_rejected"][-1]
            assert key in event["message"] and str(r.config) in event["message"], (case, event)
        assert r.proc is not None and r.proc.poll() is None, "razard died"
        assert pids(r) == before, case
        status = r.status()
        assert status is not None
        assert {c["name"] for c in status["components"]} == set(NAMES), case
        assert not (r.um.unit_dir / "razar-hr-new.service").exists(), case
        rejected += 1
    for n in NAMES:
        assert r.component(n)["state"] == "healthy"
        active = r.um.systemctl("is-active", f"razar-{n}.service", check=False).stdout.strip()
        assert active == "active", n
    assert pids(r) == before
    assert not [e for e in r.events() if e["event"] in ("component_removed", "component_added")]
    print(f"broken configs rejected on reload: {rejected}/{len(BROKEN)}; MainPIDs unchanged: 3/3")

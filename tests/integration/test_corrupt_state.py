"""Corrupted state and logs: razard starts anyway, sets the bad file aside, adopts its units."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.integration.conftest import Factory
from tests.integration.harness import Razard, sleepers

pytestmark = pytest.mark.integration

STATE_CORRUPTIONS = {
    "truncated": b'{"version": 1, "components": {"a": {"restarts": 0, "sta',
    "garbage": b"\x00\xff\xfe not json at all \x89PNG\r\n",
    "array": b'[{"version": 1}]',
    "wrong types": json.dumps(
        {
            "version": 1,
            "components": {
                "{a}": {"restarts": "many", "status": 7, "since": "yesterday", "pid": [1]},
                "{b}": "healthy",
            },
            "boot": {"waves": "all", "settled_waves": "two", "done": "yes"},
        }
    ).encode(),
    "other version": b'{"version": 999, "components": {}}',
}


@pytest.fixture
def two(razard: Factory) -> tuple[Razard, list[str]]:
    """A razard (not started) with two sleepers of a fresh name each."""
    tag = uuid.uuid4().hex[:6]
    names = [f"cs-a-{tag}", f"cs-b-{tag}"]
    return razard(sleepers(names, waves=2)), names


@pytest.mark.parametrize("case", list(STATE_CORRUPTIONS))
def test_a_corrupt_state_file_is_set_aside_and_running_units_are_adopted(
    two: tuple[Razard, list[str]], case: str
) -> None:
    """razard starts on a bad razar_state.json, keeps it aside for a person, warns, and adopts
    the units that are still running instead of restarting them."""
    r, (a, b) = two
    r.start()
    r.wait_state(a, "healthy")
    r.wait_state(b, "healthy")
    pids = {n: r.main_pid(f"razar-{n}.service") for n in (a, b)}
    r.stop()  # SIGTERM: units keep running

    bad = STATE_CORRUPTIONS[case].replace(b"{a}", a.encode()).replace(b"{b}", b.encode())
    state_file = r.state_dir / "razar_state.json"
    state_file.write_bytes(bad)
    r.start()
    for n in (a, b):
        r.wait_state(n, "healthy")
        assert r.main_pid(f"razar-{n}.service") == pids[n], f"{n} was restarted"
    aside = list(r.state_dir.glob("razar_state.json.unusable-*"))
    # every case is set aside, "wrong types" too (its boot progress cannot be read)
    assert len(aside) == 1 and aside[0].read_bytes() == bad
    discarded = [e for e in r.events() if e["event"] == "state_discarded"]
    assert discarded and str(aside[0]) in str(discarded[-1]["message"])
    if case == "wrong types":  # none of its untrusted values is carried over
        current = r.status()
        assert current is not None  # check=True: a failing razarctl raises instead
        status = {c["name"]: c for c in current["components"]}
        assert status[a]["restarts"] == 0
    assert json.loads(state_file.read_text())["version"] == 1  # written fresh and whole


def test_corrupt_logs_and_records_do_not_stop_razard(two: tuple[Razard, list[str]]) -> None:
    """Garbage in razar.log, a JSON array where lines are expected, a torn patch history and
    an unreadable quarantine record: razard starts, appends whole lines, lists what it can."""
    r, (a, b) = two
    sd = r.state_dir
    sd.mkdir(parents=True, exist_ok=True)
    (sd / "razar.log").write_bytes(b'{"ts": "x", "event": "ok"}\n\x00\x01garbage\n{"torn": ')
    (sd / "razar_ai_invocations.json").write_text('[{"component": "x"}, {"component": "y"}]')
    (sd / "patch_history.jsonl").write_text('{"component": "x", "status": "kept"}\nnot json\n')
    (sd / "quarantine").mkdir()
    (sd / "quarantine" / "ghost.json").write_bytes(b"\xff\xfe{")
    r.start()
    r.wait_state(a, "healthy")
    r.wait_state(b, "healthy")
    listed = json.loads(r.ctl("quarantine", "list", "--json").stdout)
    assert {"component": "ghost", "reason": "unreadable"}.items() <= listed[0].items()
    lines = (sd / "razar.log").read_bytes().split(b"\n")
    assert lines[2] == b'{"torn": '  # the torn record stays alone on its line
    tail = [json.loads(line) for line in lines[3:] if line.strip()]  # every new line parses
    events = [rec.get("event") for rec in tail]
    assert events[0] == "razard_starting" and "razard_ready" in events
    assert r.ctl("patches", a).returncode == 0

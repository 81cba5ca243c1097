"""razarctl logs and incident on a real razard, systemd user manager and journald."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard, crash_loop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def quarantined(
    user_manager: UserManager, journald: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Razard, str]]:
    """A razard whose one component crash-loops into quarantine (a fresh name per run, so
    records of earlier runs in the same journal do not count). The tests only read its
    logs and incident, so the module shares it."""
    base = tmp_path_factory.mktemp("triage")
    name = f"tri-{uuid.uuid4().hex[:8]}"
    loop = crash_loop(base, name, "fatal: shard 3 corrupt at offset 0x7f3a")
    r = Razard(user_manager, base, loop)
    try:
        r.start()
        r.wait_state(name, "quarantined")
        yield r, name
    finally:
        r.stop()
        r.cleanup_units([f"razar-{name}.service"])


def json_lines(text: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_logs_filters_by_event_layer_and_priority_like_journalctl(
    quarantined: tuple[Razard, str],
) -> None:
    """--event, --layer and -p select razard's records through journal fields, and the
    printed journalctl command shows the same records on its own."""
    crashed, name = quarantined
    out = crashed.ctl("logs", name, "--event", "state_quarantined", "-o", "json").stdout
    rows = json_lines(out)
    assert len(rows) == 1
    assert rows[0]["RAZAR_COMPONENT"] == name and rows[0]["RAZAR_LAYER"] == "heart"
    restarts = json_lines(
        crashed.ctl("logs", "--component", name, "--event", "state_restarting", "-o", "json").stdout
    )
    assert len(restarts) == 2  # the budget: two restarts, then quarantine

    crit = json_lines(crashed.ctl("logs", "--layer", "heart", "-p", "crit", "-o", "json").stdout)
    assert name in {r.get("RAZAR_COMPONENT") for r in crit}
    assert all(int(r["PRIORITY"]) <= 2 for r in crit)

    command = crashed.ctl(
        "logs", name, "--event", "state_quarantined", "-o", "json", "--print-command"
    ).stdout.strip()
    assert command.startswith("journalctl ")
    direct = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)
    assert [r["__CURSOR"] for r in json_lines(direct.stdout)] == [r["__CURSOR"] for r in rows]


def test_logs_of_a_component_include_its_unit_output(
    quarantined: tuple[Razard, str],
) -> None:
    """Without filters a component's logs hold its own stderr as well as razard's records."""
    crashed, name = quarantined
    text = crashed.ctl("logs", name, "-o", "cat").stdout
    assert "fatal: shard 3 corrupt" in text  # the unit's own output
    assert "quarantined" in text  # razard's record


def test_incident_is_one_timeline_in_table_json_and_markdown(
    quarantined: tuple[Razard, str],
) -> None:
    """The incident shows the failures, restarts and quarantine in order, as a table, JSON
    for machines and Markdown for a ticket, without needing razard's bus."""
    crashed, name = quarantined
    cfg = str(crashed.config)
    body = json.loads(crashed.ctl("incident", name, "--config", cfg, "--json").stdout)
    kinds = [e["kind"] for e in body["entries"]]
    events = [e["event"] for e in body["entries"]]
    assert body["layer"] == "heart"
    assert kinds.count("restart") == 2
    assert events.index("state_quarantined") > max(
        i for i, e in enumerate(events) if e == "state_restarting"
    )
    assert "component_failed" in events
    assert [e["unix"] for e in body["entries"]] == sorted(e["unix"] for e in body["entries"])
    assert body["entries"][0]["source"] == "journal"
    assert body["summary"]["last_state_event"] == "state_quarantined"

    md = crashed.ctl("incident", name, "--config", cfg, "--markdown").stdout
    assert md.startswith(f"## Incident timeline: {name}\n")
    assert "| quarantine | state_quarantined |" in md

    table = crashed.ctl("incident", name, "--config", cfg).stdout
    assert "state_quarantined" in table and "restart" in table

    later = crashed.ctl("incident", name, "--config", cfg, "--since", "@4000000000", "--json")
    assert json.loads(later.stdout)["entries"] == []


def test_incident_falls_back_to_razar_log_and_refuses_bad_input(
    quarantined: tuple[Razard, str],
) -> None:
    """With no journal records razar.log is read; an unknown component or time is a clear
    error with exit 2."""
    crashed, name = quarantined
    cfg = str(crashed.config)
    from razard.triage import load_incident

    entries = load_incident(
        name, "heart", crashed.state_dir, crashed.state_dir / "razar.log", use_journal=False
    )
    assert {e.source for e in entries} == {"razar.log"}
    assert "state_quarantined" in [e.event for e in entries]

    bad = crashed.ctl("incident", "no-such", "--config", cfg, check=False)
    assert bad.returncode == 2 and "no-such" in bad.stderr
    when = crashed.ctl("incident", name, "--config", cfg, "--since", "last tuesday", check=False)
    assert when.returncode == 2 and "--since" in when.stderr and "last tuesday" in when.stderr

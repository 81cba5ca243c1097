"""razarctl escalations: what was sent to people, read from operator_escalations.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from razard.ctl import main
from razard.escalation.history import append_escalation


def setup(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    config = tmp_path / "razard.toml"
    config.write_text(f'[razard]\nstate_dir = "{state}"\nbus = "user"\n')
    base = {"host": "n1", "layer": "sacral", "count": 3, "event": "raised"}
    append_escalation(
        state,
        {
            **base,
            "id": "e1",
            "ts": 100.0,
            "time": "1970-01-01T00:01:40.000Z",
            "component": "vllm",
            "reason": "recurring",
            "signature": "CUDA error: out of memory",
            "targets": {"alertmanager": "queued"},
            "delivered": False,
        },
    )
    append_escalation(
        state,
        {"id": "e1", "event": "delivery", "ts": 130.0, "targets": {"alertmanager": "delivered"}},
    )
    append_escalation(
        state,
        {
            **base,
            "id": "e2",
            "ts": 200.0,
            "time": "1970-01-01T00:03:20.000Z",
            "component": "api",
            "reason": "quarantine",
            "signature": "fatal: shard corrupt",
            "targets": {"operator": "failed"},
            "delivered": False,
        },
    )
    return config


def test_escalations_table_and_json_show_the_latest_delivery_state(tmp_path: Path) -> None:
    """The outbox's later delivery wins; --undelivered and --component narrow the list."""
    config = str(setup(tmp_path))
    runner = CliRunner()
    out = runner.invoke(main, ["escalations", "--config", config, "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert [(r["id"], r["delivered"]) for r in rows] == [("e1", True), ("e2", False)]
    table = runner.invoke(main, ["escalations", "--config", config]).output
    assert "alertmanager: delivered" in table and "operator: failed" in table
    undelivered = runner.invoke(
        main, ["escalations", "--config", config, "--undelivered", "--json"]
    )
    assert [r["id"] for r in json.loads(undelivered.output)] == ["e2"]
    vllm = runner.invoke(main, ["escalations", "--config", config, "--component", "vllm", "--json"])
    assert [r["component"] for r in json.loads(vllm.output)] == ["vllm"]


def test_escalations_with_a_bad_config_or_time_is_a_clear_error(tmp_path: Path) -> None:
    """A config that cannot be read, or a time razarctl cannot read, is named; exit non-zero."""
    runner = CliRunner()
    bad = tmp_path / "bad.toml"
    bad.write_text("[razard\n")
    out = runner.invoke(main, ["escalations", "--config", str(bad)])
    assert out.exit_code == 1 and str(bad) in out.output
    config = str(setup(tmp_path))
    when = runner.invoke(main, ["escalations", "--config", config, "--since", "soonish"])
    assert when.exit_code == 2 and "soonish" in when.output

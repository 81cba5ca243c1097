"""agents.healing.base.main: what every healer executable does with its command line."""

from __future__ import annotations

import json

import pytest

from agents.healing.base import HealContext, HealResult, main


def _heal(ctx: HealContext) -> HealResult:
    return HealResult("demo_heal", ctx.layer, "healed", f"dry run: {ctx.dry_run}")


def test_dry_run_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run reaches the healer and the JSON; --help exits 0 with the description;
    an unknown option exits 2 with no JSON and the healer not run."""
    assert main("demo_heal", "heart", _heal, ["--dry-run"], env={}) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["result"], out["dry_run"], out["reason"]) == ("healed", True, "dry run: True")
    assert main("demo_heal", "heart", _heal, ["--help"], env={}, description="Heals demo.") == 0
    shown = capsys.readouterr().out
    assert "Usage: demo_heal [OPTIONS]" in shown and "Heals demo." in shown
    assert "--dry-run" in shown
    assert main("demo_heal", "heart", _heal, ["--force"], env={}) == 2
    caught = capsys.readouterr()
    assert caught.out == "" and "No such option '--force'" in caught.err

"""scripts/escalation_notifier.py's command line: its usage errors and config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from razard.escalation.cli import main


def test_once_and_follow_are_alternatives(capsys: pytest.CaptureFixture[str]) -> None:
    """--once with --follow is a usage error: exit 2, the reason on stderr, nothing run."""
    assert main(["--once", "--follow"]) == 2
    assert "--once and --follow are alternatives" in capsys.readouterr().err


def test_help_and_unknown_option(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists the options and exits 0; an unknown option exits 2."""
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage: escalation_notifier.py" in out
    assert all(o in out for o in ("--config", "--once", "--follow", "--journal-arg"))
    assert main(["--bogus"]) == 2
    assert "No such option '--bogus'" in capsys.readouterr().err


def test_bad_config_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config that cannot be read exits 2 and names the file; one without [escalation]
    exits 0 saying there is nothing to do."""
    missing = tmp_path / "nope.toml"
    assert main(["--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    quiet = tmp_path / "razard.toml"
    quiet.write_text(f'[razard]\nstate_dir = "{tmp_path / "state"}"\n')
    assert main(["--config", str(quiet), "--once"]) == 0
    assert "no enabled [escalation] table" in capsys.readouterr().out

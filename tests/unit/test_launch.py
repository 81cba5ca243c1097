"""razard's entry point reads a plain daemon command line without click, exactly as the
click CLI reads it, and hands everything else to click (issue 18: click stays out of the
daemon's memory)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from razard.cli import cli
from razard.launch import run_args

PLAIN = [
    [],
    ["--config", "/etc/razar/razard.toml"],
    ["--config=/srv/node a/razard.toml"],
    ["--retries", "0"],
    ["--retries=10000", "--config", "x.toml"],
    ["--remote-attempts", "3", "--long-task"],
    ["--debug", "--config", "rel/razard.toml", "--retries", "7", "--remote-attempts=0"],
    ["--long-task", "--debug"],
]

#: for click to read: help, version, subcommands, bad or missing values, repeats, unknowns
NOT_PLAIN = [
    ["--help"],
    ["-h"],
    ["--version"],
    ["check-config", "x.toml"],
    ["demo"],
    ["--retries", "-1"],
    ["--retries", "10001"],
    ["--retries", "ten"],
    ["--retries", "+5"],
    ["--retries"],
    ["--config"],
    ["--config="],
    ["--config", "--debug"],
    ["--config", "a.toml", "--config", "b.toml"],
    ["--debug", "--debug"],
    ["--debug=1"],
    ["--conf", "a.toml"],
    ["--", "a"],
    ["extra"],
]


def click_params(argv: list[str]) -> dict[str, object]:
    with cli.make_context("razard", list(argv)) as ctx:
        return dict(ctx.params)


@pytest.mark.parametrize("argv", PLAIN, ids=" ".join)
def test_a_plain_command_line_is_read_as_click_reads_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAZARD_DEBUG", raising=False)
    got = run_args(argv, {})
    assert got is not None
    assert got == click_params(argv)


@pytest.mark.parametrize("argv", NOT_PLAIN, ids=" ".join)
def test_anything_else_goes_to_click(argv: list[str]) -> None:
    assert run_args(argv, {}) is None


def test_razard_debug_in_the_environment_goes_to_click() -> None:
    assert run_args(["--config", "x.toml"], {"RAZARD_DEBUG": "0"}) is None


def _razard(*args: str) -> subprocess.CompletedProcess[str]:
    """``razard ARGS`` through the entry point; stderr ends with whether click was loaded."""
    code = (
        "import sys\n"
        "from razard.launch import main\n"
        f"sys.argv = ['razard', *{list(args)!r}]\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('click loaded:', 'click' in sys.modules, file=sys.stderr)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_the_daemon_path_says_what_is_wrong_without_loading_click(tmp_path: Path) -> None:
    bad = tmp_path / "razard.toml"
    bad.write_text("[razard]\nstate_dir = 5\n")
    r = _razard("--config", str(bad))
    assert r.returncode == 2, r.stderr
    assert "razard: invalid config, not starting:" in r.stderr
    assert str(bad) in r.stderr
    assert "click loaded: False" in r.stderr


def test_a_bad_option_gets_clicks_error(tmp_path: Path) -> None:
    r = _razard("--retries", "-1", "--config", str(tmp_path / "none.toml"))
    assert r.returncode == 2
    assert "Invalid value for '--retries'" in r.stderr
    assert "click loaded: True" in r.stderr

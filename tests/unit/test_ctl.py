"""razarctl's pure parts: the journalctl command line, the status table and JSON."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.text import Text

from razard.control import bus_address
from razard.ctl import (
    COMPONENT_KEYS,
    journal_argv,
    main,
    quarantine_table,
    status_json,
    status_table,
)
from razard.errors import ControlError

STATUS: dict[str, Any] = {
    "summary": "2 healthy, 1 restarting, 1 quarantined",
    "ready": True,
    "pid": 4242,
    "version": "0.1.0",
    "config": "/etc/razard/razard.toml",
    "components": [
        {
            "name": "vllm",
            "unit": "razar-vllm.service",
            "layer": "heart",
            "priority": 2,
            "state": "quarantined",
            "healthy": False,
            "restarts": 5,
            "quarantined": True,
            "last_error": "CUDA error: out of memory",
            "since": "2024-05-01T12:00:00",
            "extra": "not part of the stable output",
        },
        {
            "name": "gpu-exporter",
            "unit": "razar-gpu-exporter.service",
            "layer": "sacral",
            "priority": 1,
            "state": "restarting",
            "healthy": False,
            "restarts": 2,
            "quarantined": False,
            "last_error": None,
            "since": None,
        },
        {
            "name": "api",
            "unit": "razar-api.service",
            "layer": "throat",
            "priority": 2,
            "state": "healthy",
            "healthy": True,
            "restarts": 0,
            "quarantined": False,
            "last_error": None,
            "since": "2024-05-01T11:00:00",
        },
        {
            "name": "netcheck",
            "unit": "razar-netcheck.service",
            "layer": "root",
            "priority": 0,
            "state": "healthy",
            "healthy": True,
        },
    ],
}


def render(table: Any) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    return console.export_text()


def test_journal_argv_matches_component_or_its_unit() -> None:
    """By default: ISO times, no pager, razard's records OR the unit under either manager."""
    assert journal_argv("vllm", "razar-vllm.service", None, False, "short", None) == [
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        "RAZAR_COMPONENT=vllm",
        "+",
        "_SYSTEMD_UNIT=razar-vllm.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-vllm.service",
        "+",
        "SYSLOG_IDENTIFIER=razar-vllm",
    ]


def test_journal_argv_foreign_unit_has_no_identifier_match() -> None:
    """A unit razard did not write is matched by unit only, not by a guessed identifier."""
    argv = journal_argv("nv", "nvidia-persistenced.service", None, False, "short", None)
    assert not any(a.startswith("SYSLOG_IDENTIFIER=") for a in argv)


def test_journal_argv_without_unit_matches_component_only() -> None:
    """Without a unit only razard's own records about the component are matched."""
    argv = journal_argv("vllm", None, None, False, "short", None)
    assert argv == ["journalctl", "--no-pager", "-o", "short-iso", "RAZAR_COMPONENT=vllm"]


def test_journal_argv_options_come_before_matches() -> None:
    """--since, -n, -f and -o json are passed through ahead of the match terms."""
    argv = journal_argv("api", "razar-api.service", "1h ago", True, "json", 100)
    assert argv[:10] == [
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "--since",
        "1h ago",
        "-n",
        "100",
        "-f",
        "RAZAR_COMPONENT=api",
    ]
    assert argv[10:] == [
        "+",
        "_SYSTEMD_UNIT=razar-api.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-api.service",
        "+",
        "SYSLOG_IDENTIFIER=razar-api",
    ]


def test_journal_argv_cat_and_zero_lines() -> None:
    """`-o cat` maps to journalctl's cat and `-n 0` is kept (not dropped as falsy)."""
    argv = journal_argv("api", None, "", False, "cat", 0)
    assert argv == ["journalctl", "--no-pager", "-o", "cat", "-n", "0", "RAZAR_COMPONENT=api"]


def test_journal_argv_rejects_unknown_output() -> None:
    """An output mode razarctl does not offer is refused."""
    with pytest.raises(ValueError, match="unknown output 'verbose'"):
        journal_argv("api", None, None, False, "verbose", None)


def test_status_table_rows_sorted_with_states_and_errors() -> None:
    """The table lists each component by priority then name, with state, health and error."""
    lines = render(status_table(STATUS)).splitlines()
    header = lines[0].split()
    assert header[:6] == ["component", "unit", "layer", "state", "health", "restarts"]
    assert "last error" in lines[0] and header[-1] == "since"
    assert [line.split()[0] for line in lines[1:]] == ["netcheck", "gpu-exporter", "api", "vllm"]
    vllm = lines[4].split()
    assert vllm[:6] == ["vllm", "razar-vllm.service", "heart", "quarantined", "no", "5"]
    assert "CUDA error: out of memory" in lines[4]
    assert lines[4].endswith("2024-05-01 12:00:00")
    assert lines[3].split()[3:5] == ["healthy", "yes"]
    # Missing values are shown as "-", not "None".
    assert "None" not in "\n".join(lines)
    assert lines[1].split()[5:] == ["-", "-", "-"]


def test_status_table_colours_states() -> None:
    """healthy is green, restarting yellow, quarantined red."""
    table = status_table(STATUS)
    cells = [cell for cell in table.columns[3].cells if isinstance(cell, Text)]
    states = {cell.plain: str(cell.style) for cell in cells}
    assert states == {"healthy": "green", "restarting": "yellow", "quarantined": "red"}


def test_status_json_has_stable_keys_in_order() -> None:
    """status --json keeps the summary and exactly the stable keys, sorted by priority, name."""
    data = status_json(STATUS)
    assert data["summary"] == STATUS["summary"]
    assert [c["name"] for c in data["components"]] == ["netcheck", "gpu-exporter", "api", "vllm"]
    assert all(tuple(c) == COMPONENT_KEYS for c in data["components"])
    assert data["components"][0]["last_error"] is None


def test_quarantine_table_lists_records() -> None:
    """The quarantine table shows component, reason, error and attempts."""
    text = render(
        quarantine_table(
            [
                {
                    "component": "vllm",
                    "reason": "ladder exhausted",
                    "last_error": "CUDA error: out of memory",
                    "attempts": 7,
                    "time": "2024-05-01T12:30:00",
                }
            ]
        )
    )
    row = text.splitlines()[1]
    assert row.split()[:3] == ["vllm", "ladder", "exhausted"]
    assert "CUDA error: out of memory" in row and "7" in row
    assert row.endswith("2024-05-01 12:30:00")


def test_bus_address_choice() -> None:
    """--address wins; else the bus's variable; the user bus falls back to XDG_RUNTIME_DIR."""
    env = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/s", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert bus_address("user", "unix:path=/x", env) == "unix:path=/x"
    assert bus_address("user", None, env) == "unix:path=/s"
    assert bus_address("user", None, {"XDG_RUNTIME_DIR": "/run/user/7"}) == (
        "unix:path=/run/user/7/bus"
    )
    assert bus_address("system", None, {}) == "unix:path=/run/dbus/system_bus_socket"
    assert bus_address("system", None, {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/y"}) == (
        "unix:path=/y"
    )
    with pytest.raises(ControlError, match="no user bus"):
        bus_address("user", None, {})


def test_cli_error_is_one_line_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no user bus at all, razarctl prints one razarctl: line and exits 1."""
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("RAZAR_BUS", "user")
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    assert result.output.startswith("razarctl: no user bus")
    assert result.exception is None or isinstance(result.exception, SystemExit)

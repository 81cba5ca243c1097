"""razarctl's pure parts: journalctl argv, status/ladder/patches tables, lines, heal's deadline."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.table import Table
from rich.text import Text

from razard import controlsync
from razard.control import HEAL_CALL_TIMEOUT, SupervisorControl, bus_address
from razard.ctl import app, main
from razard.ctl.components import (
    COMPONENT_KEYS,
    quarantine_table,
    status_json,
    status_lines,
    status_table,
    status_text,
)
from razard.ctl.repairs import (
    heal_line,
    ladder_summary,
    ladder_table,
    patches_table,
    rollback_line,
    rollback_restart_line,
)
from razard.errors import ControlError
from razard.escalation.trust import uid_matches
from razard.triage import LogQuery

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


#: root (and this uid) only: journald's _UID / _SYSTEMD_OWNER_UID, which no sender chooses
OWN = uid_matches()
OWNER = uid_matches("_SYSTEMD_OWNER_UID")


def render(table: Any) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(table)
    return console.export_text()


def test_logs_argv_matches_component_or_its_unit() -> None:
    """By default: ISO times, no pager, razard's records OR the unit under either manager."""
    assert LogQuery(
        component="vllm",
        unit="razar-vllm.service",
        since=None,
        follow=False,
        output="short",
        lines=None,
    ).argv() == [
        "journalctl",
        "--no-pager",
        "-o",
        "short-iso",
        "RAZAR_COMPONENT=vllm",
        *OWN,
        "+",
        "_SYSTEMD_UNIT=razar-vllm.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-vllm.service",
        *OWNER,
        "+",
        "SYSLOG_IDENTIFIER=razar-vllm",
        *OWN,
    ]


def test_logs_argv_foreign_unit_has_no_identifier_match() -> None:
    """A unit razard did not write is matched by unit only, not by a guessed identifier."""
    argv = LogQuery(
        component="nv",
        unit="nvidia-persistenced.service",
        since=None,
        follow=False,
        output="short",
        lines=None,
    ).argv()
    assert not any(a.startswith("SYSLOG_IDENTIFIER=") for a in argv)


def test_logs_argv_without_unit_matches_component_only() -> None:
    """Without a unit only razard's own records about the component are matched."""
    argv = LogQuery(
        component="vllm", unit=None, since=None, follow=False, output="short", lines=None
    ).argv()
    assert argv == ["journalctl", "--no-pager", "-o", "short-iso", "RAZAR_COMPONENT=vllm", *OWN]


def test_logs_argv_options_come_before_matches() -> None:
    """--since, -n, -f and -o json are passed through ahead of the match terms."""
    argv = LogQuery(
        component="api",
        unit="razar-api.service",
        since="@1700000000",
        follow=True,
        output="json",
        lines=100,
    ).argv()
    assert argv[:10] == [
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "--since",
        "@1700000000",
        "-n",
        "100",
        "-f",
        "RAZAR_COMPONENT=api",
    ]
    assert argv[10:] == [
        *OWN,
        "+",
        "_SYSTEMD_UNIT=razar-api.service",
        "+",
        "_SYSTEMD_USER_UNIT=razar-api.service",
        *OWNER,
        "+",
        "SYSLOG_IDENTIFIER=razar-api",
        *OWN,
    ]


def test_logs_argv_cat_and_zero_lines() -> None:
    """`-o cat` maps to journalctl's cat and `-n 0` is kept (not dropped as falsy)."""
    argv = LogQuery(
        component="api", unit=None, since="", follow=False, output="cat", lines=0
    ).argv()
    assert argv == [
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-n",
        "0",
        "RAZAR_COMPONENT=api",
        *OWN,
    ]


def test_logs_argv_rejects_unknown_output() -> None:
    """An output mode razarctl does not offer is refused."""
    with pytest.raises(ValueError, match="unknown output 'verbose'"):
        LogQuery(
            component="api", unit=None, since=None, follow=False, output="verbose", lines=None
        ).argv()


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


def test_piped_status_is_rich_s_table_line_for_line() -> None:
    """Piped, `status` lays its table out itself (rich stays unloaded): the same text, space
    for space, that rich prints for the same rows when they fit the pipe's 200 columns."""
    summary = Text(STATUS["summary"])
    console = Console(record=True, width=200, color_system=None)
    console.print(summary, soft_wrap=True)
    console.print(status_table(STATUS))
    assert "\n".join(status_lines(STATUS)) + "\n" == console.export_text()
    empty = {"summary": "no components", "components": []}
    assert status_lines(empty) == ["no components", render(status_table(empty)).rstrip("\n")]


def test_piped_status_never_folds_a_row_and_shows_no_control_characters() -> None:
    """A long error stays on its component's line (grep finds it whole); a newline in it
    is a space and a terminal escape is shown as "?", never passed to the terminal."""
    long_error = "x" * 300
    status = {
        "summary": "2 failed",
        "components": [
            {"name": "a", "unit": "a.service", "state": "failed", "last_error": long_error},
            {"name": "b", "unit": "b.service", "state": "failed", "last_error": "one\n\x1b[2Jtwo"},
        ],
    }
    lines = status_lines(status)
    assert len(lines) == 4
    assert lines[2].startswith("a ") and long_error in lines[2]
    assert lines[3].startswith("b ") and "one ?[2Jtwo" in lines[3]
    assert "\x1b" not in "\n".join(lines)


def _seen(renderable: Table | Text, width: int) -> list[list[tuple[str, bool, str | None]]]:
    """What a terminal ``width`` columns wide shows: each character with its boldness and
    colour (not the escape sequences, which rich may split differently)."""
    console = Console(width=width, force_terminal=True, color_system="standard")
    return [
        [
            (
                ch,
                bool(seg.style and seg.style.bold),
                seg.style.color.name if seg.style and seg.style.color else None,
            )
            for seg in line
            for ch in seg.text
        ]
        for line in console.render_lines(renderable, console.options, pad=False)
    ]


@pytest.mark.parametrize("width", [127, 200])  # 127: the table's own width
def test_terminal_status_looks_as_rich_s_table(width: int) -> None:
    """On a terminal `status` lays out the table itself when it fits (rich's table costs a
    quarter of a second at 500 rows): the same characters, bold headers and coloured
    state and health, column for column, as rich's table."""
    fast = status_text(STATUS, width)
    assert fast is not None
    assert _seen(fast, width) == _seen(status_table(STATUS), width)
    empty = {"summary": "none", "components": []}
    fast = status_text(empty, width)
    assert fast is not None and _seen(fast, width) == _seen(status_table(empty), width)
    assert status_text(STATUS, 126) is None  # narrower: rich folds the last error


@pytest.mark.parametrize(
    "error",
    ["x" * 150, "[bold]not markup[/bold]", "disk :warning: full", "caf\u00e9", "one\ntwo"],
)
def test_terminal_status_leaves_to_rich_what_rich_lays_out_otherwise(error: str) -> None:
    """A table wider than the terminal (rich folds the error), or a cell rich reads
    (markup, an emoji code, non-ASCII, a control character): rich's table prints it."""
    status = {
        "summary": "1 failed",
        "components": [{"name": "a", "unit": "a.service", "state": "failed", "last_error": error}],
    }
    assert status_text(status, 120) is None
    assert status_text({**status, "components": []}, 120) is not None


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


LADDER: dict[str, Any] = {
    "roster": [
        {
            "name": "registry",
            "kind": "registry",
            "configured": True,
            "skip_reason": None,
            "max_attempts": 1,
            "takes_over_after": None,
        },
        {
            "name": "Kimi-cho",
            "kind": "opencode",
            "configured": False,
            "skip_reason": "opencode is not installed",
            "max_attempts": 2,
            "takes_over_after": None,
        },
        {
            "name": "rStar",
            "kind": "openai",
            "configured": True,
            "skip_reason": None,
            "max_attempts": 3,
            "takes_over_after": 9,
        },
    ],
    "thresholds": {"rstar": 9, "escalation_warning": None},
    "remote_attempts": None,
    "long_task": False,
    "restart_attempts": {},
}


def test_ladder_table_rows_in_roster_order() -> None:
    """The ladder table numbers rungs in order, says yes/no, the skip reason and rStar's turn."""
    lines = render(ladder_table(LADDER)).splitlines()
    assert lines[0].split()[:3] == ["#", "agent", "kind"]
    assert lines[1].split() == ["1", "registry", "registry", "yes", "-", "1", "-"]
    assert lines[2].split()[:4] == ["2", "Kimi-cho", "opencode", "no"]
    assert "opencode is not installed" in lines[2]
    assert lines[3].split() == ["3", "rStar", "openai", "yes", "-", "3", "after", "9", "attempts"]


def test_ladder_summary_names_each_threshold() -> None:
    """The summary line says the rStar threshold, warning off, unbounded remote attempts."""
    assert ladder_summary(LADDER) == [
        "rStar threshold 9 attempts; escalation warning off; remote attempts unbounded; "
        "long task off"
    ]
    off = {**LADDER, "thresholds": {"rstar": 0, "escalation_warning": 2}, "long_task": True}
    assert ladder_summary(off)[0].startswith("rStar disabled; escalation warning after 2 ")


def test_patches_table_shows_each_field_and_colours_status() -> None:
    """The patches table has time, id, agent, status, files and reason; status is coloured."""
    records = [
        {
            "patch_id": "20260102T030405Z-a1b2c3",
            "status": "kept",
            "agent": "registry",
            "files": ["app.sh", "conf.d/main.conf"],
            "time": "2026-01-02T03:04:05",
        },
        {
            "patch_id": "20260102T030500Z-d4e5f6",
            "status": "refused",
            "agent": "Crown",
            "files": ["../x"],
            "reason": "../x: '..' is not allowed in a path",
            "time": "2026-01-02T03:05:00",
        },
    ]
    table = patches_table(records)
    lines = render(table).splitlines()
    assert lines[0].split() == ["time", "patch", "agent", "status", "files", "reason"]
    assert lines[1].split() == [
        "2026-01-02",
        "03:04:05",
        "20260102T030405Z-a1b2c3",
        "registry",
        "kept",
        "app.sh,",
        "conf.d/main.conf",
        "-",
    ]
    assert "'..' is not allowed" in lines[2]
    styles = {c.plain: str(c.style) for c in table.columns[3].cells if isinstance(c, Text)}
    assert styles == {"kept": "green", "refused": "red"}


def test_rollback_line_names_patch_later_patches_and_files() -> None:
    """The rollback line names the reverted patch, any later ones it undid, and the files."""
    record = {"patch_id": "P1", "undone": ["P1", "P2"], "files": ["a", "b"]}
    assert (
        rollback_line("web", record)
        == "rolled back web: reverted patch P1 (and later P2); files: a, b"
    )
    assert (
        rollback_line("web", {"patch_id": "P1"}) == "rolled back web: reverted patch P1; files: -"
    )


def test_rollback_restart_line_follows_the_record() -> None:
    """Restarted, not restarted (quarantined), or not said: each reads as what razard did."""
    assert rollback_restart_line("web", {"restarted": True}) == "razard restarted web"
    assert "did not restart web (it is quarantined)" in rollback_restart_line(
        "web", {"restarted": False}
    )
    assert rollback_restart_line("web", {}) == "razard restarts web unless it is quarantined"


def test_heal_line_healed_and_not() -> None:
    """Healed names the agent and patch; not healed gives the attempt count."""
    healed = {"healed": True, "attempts": 1, "agent": "registry", "patch_id": "P"}
    assert heal_line("web", healed) == "web: healed by registry (patch P)"
    assert heal_line("web", {"healed": True, "attempts": 1, "agent": None, "patch_id": None}) == (
        "web: healed"
    )
    assert heal_line("web", {"healed": False, "attempts": 4}) == "web: not healed after 4 attempts"


class _FakeClient:
    """Stands in for SyncControlClient: records heal's deadline, or raises what it is told."""

    deadlines: list[float | None] = []
    raise_on_heal: BaseException | None = None

    @classmethod
    def connect(cls, *args: Any, **kwargs: Any) -> _FakeClient:
        return cls()

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def call_within(
        self, deadline_s: float | None, op: Callable[..., Any], *args: Any
    ) -> dict[str, Any]:
        assert op is SupervisorControl.heal
        if self.raise_on_heal is not None:
            raise self.raise_on_heal
        self.deadlines.append(deadline_s)
        return {"healed": True, "attempts": 1, "agent": "registry", "patch_id": "P"}


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[_FakeClient]:
    """razarctl talking to a _FakeClient instead of a bus."""
    monkeypatch.setattr(controlsync, "SyncControlClient", _FakeClient)
    monkeypatch.setattr(_FakeClient, "deadlines", [])
    monkeypatch.setattr(_FakeClient, "raise_on_heal", None)
    return _FakeClient


def test_heal_waits_an_hour_forever_or_as_told(fake_client: type[_FakeClient]) -> None:
    """heal waits HEAL_CALL_TIMEOUT, without limit with --long-task, or the given --timeout."""
    runner = CliRunner()
    assert runner.invoke(main, ["--address", "unix:path=/x", "heal", "web"]).exit_code == 0
    assert runner.invoke(main, ["heal", "web", "--long-task"]).exit_code == 0
    result = runner.invoke(main, ["--timeout", "5", "heal", "web", "--long-task"])
    assert result.exit_code == 0
    assert fake_client.deadlines == [HEAL_CALL_TIMEOUT, None, 5.0]


def test_heal_ctrl_c_exits_130(fake_client: type[_FakeClient]) -> None:
    """Ctrl+C while waiting for heal exits 130 and says razard goes on."""
    fake_client.raise_on_heal = KeyboardInterrupt()
    result = CliRunner().invoke(main, ["heal", "web", "--long-task"])
    assert result.exit_code == 130
    assert "interrupted; razard goes on healing web" in result.output


def test_logs_print_command_gives_journalctl_the_utc_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`logs --since today --print-command` in a UTC+14 zone prints journalctl's @<unix>
    of UTC midnight (the day `incident --since today` starts), not text it reads locally."""
    monkeypatch.setenv("TZ", "RZR-14")  # POSIX form: needs no tzdata
    time.tzset()
    try:
        result = CliRunner().invoke(
            main, ["logs", "--layer", "root", "--since", "today", "--print-command"]
        )
        now = datetime.now(UTC)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output)
    since = argv[argv.index("--since") + 1]
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    # the run may straddle UTC midnight: then either day's start is right
    assert since in {f"@{int(midnight.timestamp())}", f"@{int(midnight.timestamp()) - 86400}"}
    if shutil.which("journalctl"):  # and journalctl takes it as it stands
        ran = subprocess.run([argv[0], "-n", "0", *argv[1:]], capture_output=True, text=True)
        assert ran.returncode == 0, ran.stderr


def test_logs_refuses_an_unreadable_time_naming_the_option() -> None:
    """A --until razarctl cannot read is a usage error (exit 2) naming the option and text."""
    result = CliRunner().invoke(main, ["logs", "--layer", "root", "--until", "last tuesday"])
    assert result.exit_code == 2
    assert "--until" in result.output and "last tuesday" in result.output


def test_help_lists_each_command_as_the_command_itself_would() -> None:
    """`razarctl --help` lists commands from app.SUMMARIES without loading them: each entry
    reads, at every width, as the loaded command's own short help (no drift)."""
    assert set(app.SUMMARIES) == set(app.COMMANDS)
    for name, load in app.COMMANDS.items():
        command, stub = load(), app.summary_stub(name)
        for limit in range(10, 200):
            assert stub.get_short_help_str(limit) == command.get_short_help_str(limit), name

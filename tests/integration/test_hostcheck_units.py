"""`razard check-config --host` asks the config's systemd manager about every `unit =`.

Runs against the session's private user manager (``bus = "user"``): a unit it has
passes, one it does not have and one that is masked are errors naming the key.
"""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from razard.usermanager import UserManager, write_unit
from tests.integration.harness import BIN, free_port

PRESENT = "it-hc-present.service"
ABSENT = "it-hc-absent.service"
MASKED = "it-hc-masked.service"


@pytest.fixture
def units(user_manager: UserManager) -> Iterator[UserManager]:
    write_unit(user_manager, PRESENT, "[Service]\nExecStart=/bin/sleep 1000\n")
    user_manager.systemctl("mask", MASKED)
    try:
        yield user_manager
    finally:
        user_manager.systemctl("unmask", MASKED, check=False)
        (user_manager.unit_dir / PRESENT).unlink(missing_ok=True)
        user_manager.systemctl("daemon-reload", check=False)


def config(um: UserManager, tmp_path: Path, names: list[str]) -> Path:
    cfg = tmp_path / "razard.toml"
    text = textwrap.dedent(f"""\
        [razard]
        state_dir = "{tmp_path / "state"}"
        bus = "user"
        metrics_port = {free_port()}
        unit_dir = "{um.unit_dir}"
        """)
    for i, unit in enumerate(names):
        text += f'\n[[component]]\nname = "u{i}"\nlayer = "crown"\npriority = 1\nunit = "{unit}"\n'
    cfg.write_text(text)
    return cfg


def check(um: UserManager, cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "razard"), "check-config", "--host", str(cfg)],
        capture_output=True,
        text=True,
        env=um.env(),
        timeout=60,
        check=False,
    )


def test_units_found_and_not_found_in_the_user_manager(units: UserManager, tmp_path: Path) -> None:
    cfg = config(units, tmp_path, [PRESENT, ABSENT, MASKED])
    p = check(units, cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    src = cfg.resolve()
    *errors, last = p.stderr.splitlines()
    assert errors == [
        f"{src}: component[1] (u1).unit: the user manager has no unit {ABSENT} "
        "(LoadState=not-found): install it, or fix the name",
        f"{src}: component[2] (u2).unit: {MASKED} is masked: razard cannot start it",
    ], p.stderr
    assert last == f"{cfg}: 2 errors, 0 warnings on this node"
    # what the check says is what systemd says
    shown = units.systemctl("show", "-p", "LoadState", PRESENT, ABSENT, MASKED).stdout
    assert shown.split() == ["LoadState=loaded", "LoadState=not-found", "LoadState=masked"]


def test_units_all_present_is_ok(units: UserManager, tmp_path: Path) -> None:
    p = check(units, config(units, tmp_path, [PRESENT]))
    assert p.returncode == 0 and p.stderr == "", p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].endswith(": ok on this node")

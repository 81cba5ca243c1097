"""Unit tests of razard.unitfile: the files razard writes for ``command`` components."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest

from razard.config import ComponentConfig, unit_name_for
from razard.errors import StateError
from razard.unitfile import (
    env_file,
    fingerprint,
    read_fingerprint,
    remove_unit,
    sync_unit,
    unit_file,
    write_unit,
)


def comp(env: tuple[tuple[str, str], ...] = (), *, name: str = "app") -> ComponentConfig:
    return ComponentConfig(
        name=name,
        layer="crown",
        priority=10,
        unit=unit_name_for(name),
        command=("/usr/bin/app", "--port", "80"),
        environment=env,
    )


def test_write_unit_writes_the_unit_and_a_private_environment_file(tmp_path: Path) -> None:
    units = tmp_path / "units"
    c = comp((("TOKEN", "s3cret"),))
    assert write_unit(units, c, "/run/razard/heartbeat/crown/app") is True
    unit = units / "razar-app.service"
    envs = units / ".razar-app.service.env"
    text = unit.read_text()
    assert f"# razar-fingerprint: {fingerprint(c)}" in text
    assert f"EnvironmentFile={envs}" in text
    assert "s3cret" not in text
    assert "RAZAR_HEARTBEAT_FILE=/run/razard/heartbeat/crown/app" in text
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert envs.read_text().endswith('TOKEN="s3cret"\n')
    assert stat.S_IMODE(envs.stat().st_mode) == 0o600
    assert read_fingerprint(unit) == fingerprint(c)
    assert read_fingerprint(str(unit)) == fingerprint(c)
    assert unit_file(units, c.unit) == str(unit)
    assert env_file(units, c.unit) == str(envs)
    assert not [p.name for p in units.iterdir() if p.name.endswith(".tmp")]


def test_write_unit_reports_whether_anything_changed(tmp_path: Path) -> None:
    c = comp((("MODE", "fast"),))
    assert write_unit(tmp_path, c) is True
    assert write_unit(tmp_path, c) is False
    # a looser mode on the environment file is put right, and counts as a change
    (tmp_path / ".razar-app.service.env").chmod(0o644)
    assert write_unit(tmp_path, c) is True
    assert stat.S_IMODE((tmp_path / ".razar-app.service.env").stat().st_mode) == 0o600
    changed = comp((("MODE", "slow"),))
    assert write_unit(tmp_path, changed) is True
    assert 'MODE="slow"' in (tmp_path / ".razar-app.service.env").read_text()
    assert read_fingerprint(tmp_path / "razar-app.service") == fingerprint(changed)
    # the environment gone: its file goes too
    assert write_unit(tmp_path, comp()) is True
    assert not (tmp_path / ".razar-app.service.env").exists()
    assert "EnvironmentFile" not in (tmp_path / "razar-app.service").read_text()


def test_write_unit_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "razar-app.service"
    foreign.write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(StateError, match="not written by razard"):
        write_unit(tmp_path, comp())
    assert foreign.read_text() == "[Service]\nExecStart=/bin/true\n"
    assert remove_unit(tmp_path, "razar-app.service") is False
    assert foreign.exists()


def test_remove_unit_removes_the_unit_and_its_environment(tmp_path: Path) -> None:
    write_unit(tmp_path, comp((("A", "1"),)))
    assert remove_unit(tmp_path, "razar-app.service") is True
    assert list(tmp_path.iterdir()) == []
    assert remove_unit(tmp_path, "razar-app.service") is False


def test_write_unit_names_the_file_it_cannot_write(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StateError, match=f"{blocker}/razar-app.service: cannot write unit file"):
        write_unit(blocker, comp())


def test_sync_unit_says_when_the_file_there_was_written_for_another_config(
    tmp_path: Path,
) -> None:
    """razard restarts a running unit at start when its file predates the config (the
    process may run the old one): told from the same read that decides the write."""
    c = comp()
    assert sync_unit(tmp_path, c) == (True, False)  # new: nothing predates it
    assert sync_unit(tmp_path, c) == (False, False)
    # the heartbeat file is not the component's config: rewritten, not a new config
    assert sync_unit(tmp_path, c, "/run/razard/heartbeat/crown/app") == (True, False)
    other = replace(c, command=("/usr/bin/app", "--port", "81"))
    assert sync_unit(tmp_path, other, "/run/razard/heartbeat/crown/app") == (True, True)
    assert read_fingerprint(tmp_path / "razar-app.service") == fingerprint(other)
    (tmp_path / "razar-app.service").write_text("[Service]\nExecStart=/bin/true\n")
    with pytest.raises(StateError, match="not written by razard"):
        sync_unit(tmp_path, c)

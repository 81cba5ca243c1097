"""razard computes a unit's D-Bus object path instead of asking systemd (``LoadUnit``)."""

from __future__ import annotations

import pytest

from razard.systemd import unit_path


@pytest.mark.parametrize(
    ("unit", "path"),
    [
        # each pair as systemd 252's LoadUnit answered it
        ("razar-bra000.service", "/org/freedesktop/systemd1/unit/razar_2dbra000_2eservice"),
        ("dbus.socket", "/org/freedesktop/systemd1/unit/dbus_2esocket"),
        ("x-y_z@1.service", "/org/freedesktop/systemd1/unit/x_2dy_5fz_401_2eservice"),
        ("9a.service", "/org/freedesktop/systemd1/unit/_39a_2eservice"),
    ],
)
def test_unit_path_is_systemds_escaping(unit: str, path: str) -> None:
    assert unit_path(unit) == path

"""Fixtures shared by the integration tests that run a real razard."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from razard.usermanager import UserManager
from tests.integration.harness import Razard

#: makes a razard for the test from the components' TOML (not started yet)
Factory = Callable[[str], Razard]


@pytest.fixture
def razard(user_manager: UserManager, journald: object, tmp_path: Path) -> Iterator[Factory]:
    """Razards of this test; each is stopped and its components' units removed afterwards."""
    made: list[Razard] = []

    def make(components: str) -> Razard:
        r = Razard(user_manager, tmp_path, components)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
        names = re.findall(r'^\s*name = "([^"]+)"', r.config.read_text(), re.M)
        r.cleanup_units([f"razar-{n}.service" for n in names])

"""Fixtures of the real-node test bed (see bed.py): a booted Debian with razar installed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system import bed

README = Path(__file__).resolve().parents[2] / "README.md"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def bed_ok() -> None:
    """Skip, with the reason, where no container can be booted."""
    reason = bed.skip_reason()
    if reason:
        pytest.skip(reason)


def readme_block(marker: str) -> str:
    """The ``sh`` block that follows ``<!-- marker -->`` in the README: what an operator
    copies and pastes, run here word for word."""
    text = README.read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\s*```sh\n(.*?)```", text, re.S)
    assert m, f"README.md has no ```sh block after <!-- {marker} -->"
    return m.group(1)


@pytest.fixture(scope="module")
def node(bed_ok: None) -> Iterator[bed.Node]:
    """A freshly booted node (systemd as PID 1) with the checkout copied to /root/razar."""
    n = bed.boot()
    try:
        n.copy_in(bed.REPO, "/root/razar", bed.source_files())
        yield n
    finally:
        n.stop()

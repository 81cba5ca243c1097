"""How razard keeps what systemd says of each unit (`UnitStatus`), hundreds at a time."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Variant

from razard import systemd
from razard.systemd import UnitStatus


def props(active: str, sub: str, pid: int) -> dict[str, Any]:
    """A PropertiesChanged body's dict as dbus-fast makes it: fresh strings each time."""
    return {
        "ActiveState": Variant("s", "".join(active)),
        "SubState": Variant("s", "".join(sub)),
        "Result": Variant("s", "".join(["suc", "cess"])),
        "MainPID": Variant("u", pid),
        "Job": Variant("(uo)", [0, "/"]),
        "ExecMainStartTimestampMonotonic": Variant("t", 2_500_000),
    }


def test_statuses_of_many_units_share_their_state_words() -> None:
    a = systemd._apply(UnitStatus("a.service"), props("active", "running", 10))
    b = systemd._apply(UnitStatus("b.service"), props("active", "running", 11))
    assert (a.active_state, a.sub_state, a.result, a.main_pid) == (
        "active",
        "running",
        "success",
        10,
    )
    assert a.exec_main_start == 2.5 and a.job == 0
    assert a.active_state is b.active_state and a.sub_state is b.sub_state
    assert a.result is b.result
    assert not hasattr(a, "__dict__")  # slots: one small object per unit


def test_words_beyond_the_bound_are_kept_as_they_came(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "_words", {})
    monkeypatch.setattr(systemd, "_WORDS_KEPT", 2)
    first = [systemd._word("".join(["w", str(i)])) for i in range(4)]
    again = [systemd._word("".join(["w", str(i)])) for i in range(4)]
    assert again == first == ["w0", "w1", "w2", "w3"]
    assert again[0] is first[0] and again[1] is first[1]  # shared while under the bound
    assert again[3] is not first[3]  # past it: not kept, still the right value
    assert len(systemd._words) == 2

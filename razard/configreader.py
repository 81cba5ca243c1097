"""The bottom of configuration: a `Reader` that collects problems while it reads typed
values out of parsed TOML (or JSON), and the helpers every section parser shares.

razard/config.py and every section parser (chakra, monitoring, escalation, fleet, the repair
roster) build on this module; it imports nothing of razard but `razard.errors`, so no parser
has to import the whole-file config back.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable, Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, Final, TypeVar

from razard.errors import ConfigProblem

#: razard's metrics endpoint: the ``[razard]`` table's defaults, and the razard endpoint the
#: ``[monitoring]`` table checks by default.
DEFAULT_METRICS_ADDRESS: Final = "127.0.0.1"
DEFAULT_METRICS_PORT: Final = 9360
METRICS_PORT_ENV: Final = "RAZAR_METRICS_PORT"

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

T = TypeVar("T")


class Reader:
    """Collects problems while reading typed values out of parsed TOML or JSON objects."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[ConfigProblem] = []
        #: one object per distinct value read (see `shared`), for as long as the reading lasts
        self._shared: dict[Hashable, Any] = {}

    def shared(self, value: T) -> T:
        """The first value read that equals ``value`` (and is of its type), else ``value``.

        The parsed file has a copy of each string or number per place it appears; the
        config keeps many (a layer name, a probe's host and timeouts, a program path per
        component), so equal values are kept as one object. Floats equal only with the
        same sign (-0.0 stays -0.0); other objects (frozen dataclasses) by their repr."""
        if isinstance(value, str | int):
            key: Hashable = (type(value), value)
        elif isinstance(value, float):
            key = (float, value, math.copysign(1.0, value))
        else:
            key = (type(value), repr(value))
        return self._shared.setdefault(key, value)  # type: ignore[no-any-return]

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(ConfigProblem(self.file, key, reason))

    def table(self, value: Any, key: str) -> Mapping[str, Any] | None:
        if not isinstance(value, dict):
            self.problem(key, f"expected a table, got {typename(value)}")
            return None
        return value

    def unknown(self, table: Mapping[str, Any], prefix: str, allowed: AbstractSet[str]) -> None:
        for k in table:
            if k not in allowed:
                hint = f"; expected one of: {', '.join(sorted(allowed))}"
                self.problem(join_key(prefix, shown_key(str(k))), f"unknown key{hint}")

    def string(
        self, table: Mapping[str, Any], prefix: str, key: str, default: str | None = None
    ) -> str | None:
        if key not in table:
            if default is None:
                self.problem(join_key(prefix, key), "required key is missing")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.problem(join_key(prefix, key), f"expected a string, got {typename(value)}")
            return default
        return self.shared(value)

    def integer(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        default: int | None,
        lo: int | None = None,
        hi: int | None = None,
    ) -> int | None:
        if key not in table:
            if default is None:
                self.problem(join_key(prefix, key), "required key is missing")
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(join_key(prefix, key), f"expected an integer, got {typename(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.problem(join_key(prefix, key), f"must be between {lo} and {hi}, got {value}")
            return default
        return self.shared(value)

    def number(
        self,
        table: Mapping[str, Any],
        prefix: str,
        key: str,
        default: float,
        lo: float,
        hi: float,
        *,
        lo_open: bool = False,
    ) -> float:
        if key not in table:
            return default
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(
                join_key(prefix, key), f"expected a number of seconds, got {typename(value)}"
            )
            return default
        try:
            f = float(value)
        except OverflowError:  # an integer too large for a float is out of range either way
            f = math.inf if value > 0 else -math.inf
        if f != f or f > hi or f < lo or (lo_open and f == lo):
            op = ">" if lo_open else ">="
            self.problem(join_key(prefix, key), f"must be {op} {lo:g} and <= {hi:g}, got {value}")
            return default
        return self.shared(f)

    def argv(self, table: Mapping[str, Any], prefix: str, key: str) -> tuple[str, ...] | None:
        value = table[key]
        if isinstance(value, str):
            self.problem(
                join_key(prefix, key),
                'expected a list of strings (argv), e.g. ["/usr/bin/app", "--port", "80"]',
            )
            return None
        if not isinstance(value, list) or not value:
            self.problem(join_key(prefix, key), "expected a non-empty list of strings (argv)")
            return None
        if not all(isinstance(v, str) for v in value):
            self.problem(join_key(prefix, key), "every element must be a string")
            return None
        if any(has_control(v) for v in value):
            self.problem(join_key(prefix, key), "arguments cannot contain control characters")
            return None
        if not value[0]:
            self.problem(join_key(prefix, key), "the program (first element) is empty")
            return None
        return tuple(map(self.shared, value))


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (\\r and \\n end a line in a unit file)."""
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def shown_key(key: str) -> str:
    """A key as an error names it: bare when plain, quoted (JSON) when empty or odd, so a
    hostile key (escapes that repaint the terminal) never reaches it raw."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def join_key(prefix: str, key: str) -> str:
    """``prefix.key`` (or ``key`` at the top level): how a problem names its key."""
    return f"{prefix}.{key}" if prefix else key


def typename(value: Any) -> str:
    """How a problem names the type it got: "a table", "an array", ..."""
    return {
        dict: "a table",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
    }.get(type(value), type(value).__name__)


def resolve_path(base: Path, raw: str) -> Path:
    """``raw`` with ``~`` expanded, relative to ``base`` unless absolute."""
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (base / p)


def resolve_key(r: Reader, base: Path, raw: str, key: str) -> Path | None:
    """`resolve_path`, recording a problem (not raising) when ``~`` or ``~user`` cannot expand."""
    try:
        return resolve_path(base, raw)
    except (RuntimeError, ValueError, KeyError) as e:
        r.problem(key, f"cannot expand {raw!r}: {e}")
        return None

"""The exception tree of razard.

    RazarError                   every error razard raises on purpose
    ├── ConfigError              the config file is unreadable or invalid (carries every problem)
    ├── SystemdError             a systemd call over D-Bus failed (carries the unit)
    │   └── UnitNotFound         systemd does not know the unit
    ├── ProbeError               a probe could not be set up (not: a probe that failed)
    ├── ControlError             razarctl could not talk to razard, or razard refused
    │   └── UnknownComponent     no component of that name
    └── StateError               the state directory cannot be used

A user never sees a traceback for these: the CLIs print ``str(error)`` and exit
non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass


class RazarError(Exception):
    """Root of every error razard raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a config file: where, which key, and why."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}"


class ConfigError(RazarError):
    """A config file could not be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SystemdError(RazarError):
    """A call to systemd failed; ``unit`` names the unit it was about."""

    def __init__(self, message: str, unit: str | None = None) -> None:
        self.unit = unit
        super().__init__(f"{unit}: {message}" if unit else message)


class UnitNotFound(SystemdError):
    """systemd has no such unit loaded and cannot load it."""


class ProbeError(RazarError):
    """A probe is misconfigured (for example its executable is missing)."""


class ControlError(RazarError):
    """razarctl could not reach razard, or razard refused the request."""


class UnknownComponent(ControlError):
    """No component with that name is configured."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown component {name!r}")


class StateError(RazarError):
    """The state directory cannot be created, read or written."""

"""Pressure readers: Linux PSI (``/proc/pressure/*``) and available memory (``/proc/meminfo``).

A PSI file holds one line per kind of stall, ``some`` (at least one task
waited) and ``full`` (every non-idle task waited)::

    some avg10=1.53 avg60=0.87 avg300=0.22 total=12345678
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

``avg*`` are the percentages of wall time over the last 10, 60 and 300
seconds; ``total`` is the whole stall time in microseconds. `read_psi` turns
that into a frozen `Pressure`; `format_psi` writes one back (for fakes).

Errors always name the file. A file that is there but cannot be understood is
a `PressureError`. A kernel without PSI (no ``CONFIG_PSI``: the file is
missing; booted with ``psi=0``: reading it fails with ``EOPNOTSUPP``) raises
the distinct `PSIUnavailable`, a subclass, so a caller can degrade (fall back
to other signals, or say "not applicable") instead of failing.
"""

from __future__ import annotations

import errno
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CPU_PRESSURE: Final = "/proc/pressure/cpu"
MEMORY_PRESSURE: Final = "/proc/pressure/memory"
IO_PRESSURE: Final = "/proc/pressure/io"
MEMINFO: Final = "/proc/meminfo"

_AVG_KEYS: Final = ("avg10", "avg60", "avg300")
_KINDS: Final = ("some", "full")
_MAX_BYTES: Final = 64 * 1024  # a PSI file is two short lines; meminfo a few KiB


class PressureError(Exception):
    """A pressure or meminfo file could not be read or understood; ``path`` names it."""

    def __init__(self, path: str | os.PathLike[str], message: str) -> None:
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class PSIUnavailable(PressureError):
    """The kernel does not provide PSI: the file is missing or the kernel refuses to read it."""


@dataclass(frozen=True)
class StallLine:
    """One line of a PSI file: stall percentages over 10/60/300 s and the total in µs."""

    avg10: float
    avg60: float
    avg300: float
    total: int


@dataclass(frozen=True)
class Pressure:
    """A parsed PSI file. ``full`` is None when the file has no ``full`` line (CPU before 5.13)."""

    some: StallLine
    full: StallLine | None = None

    def avg(self, window: int = 10, kind: str = "some") -> float:
        """The ``avg<window>`` percentage of ``kind`` (``some``/``full``; a missing full is 0)."""
        if window not in (10, 60, 300):
            raise ValueError(f"window must be 10, 60 or 300, got {window}")
        if kind not in _KINDS:
            raise ValueError(f'kind must be "some" or "full", got {kind!r}')
        line = self.some if kind == "some" else self.full
        return 0.0 if line is None else float(getattr(line, f"avg{window}"))


def parse_psi(text: str, source: str | os.PathLike[str] = "<psi>") -> Pressure:
    """Parse the text of a PSI file; `PressureError` naming ``source`` when it is garbled.

    Keys other than ``avg10``/``avg60``/``avg300``/``total`` are ignored (a newer
    kernel may add some); those four are required on every line, and a ``some``
    line is required.
    """
    lines: dict[str, StallLine] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        kind, *pairs = raw.split()
        if kind not in _KINDS:
            raise PressureError(source, f'line {n}: expected "some" or "full", got {kind!r}')
        if kind in lines:
            raise PressureError(source, f"line {n}: a second {kind!r} line")
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise PressureError(source, f"line {n}: expected key=value, got {pair!r}")
            values[key] = value
        missing = [k for k in (*_AVG_KEYS, "total") if k not in values]
        if missing:
            raise PressureError(source, f"line {n} ({kind}): missing {', '.join(missing)}")
        avgs: list[float] = []
        for key in _AVG_KEYS:
            try:
                v = float(values[key])
            except ValueError:
                v = math.nan
            if not (0.0 <= v <= 100.0):  # also rejects nan and inf
                raise PressureError(
                    source, f"line {n} ({kind}): {key} must be a percentage, got {values[key]!r}"
                )
            avgs.append(v)
        total_raw = values["total"]
        if not total_raw.isascii() or not total_raw.isdigit():
            raise PressureError(
                source, f"line {n} ({kind}): total must be a whole number, got {total_raw!r}"
            )
        lines[kind] = StallLine(avgs[0], avgs[1], avgs[2], int(total_raw))
    if "some" not in lines:
        what = "empty" if not lines else 'no "some" line'
        raise PressureError(source, f"not a PSI file: {what}")
    return Pressure(some=lines["some"], full=lines.get("full"))


def format_psi(p: Pressure) -> str:
    """The text of a PSI file holding ``p`` (what the kernel prints; `parse_psi` reads it back)."""
    out = []
    for kind, line in (("some", p.some), ("full", p.full)):
        if line is not None:
            out.append(
                f"{kind} avg10={line.avg10:.2f} avg60={line.avg60:.2f} "
                f"avg300={line.avg300:.2f} total={line.total}\n"
            )
    return "".join(out)


def _read(path: Path, *, psi: bool) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        if psi:
            raise PSIUnavailable(
                path, "no such file: PSI is not available (kernel without CONFIG_PSI?)"
            ) from None
        raise PressureError(path, "no such file") from None
    except OSError as e:
        if psi and e.errno == errno.EOPNOTSUPP:
            raise PSIUnavailable(
                path, "PSI is disabled on this kernel (booted with psi=0?)"
            ) from None
        raise PressureError(path, f"cannot read: {e.strerror or e}") from None
    if len(data) > _MAX_BYTES:
        raise PressureError(path, f"larger than {_MAX_BYTES} bytes: not a pressure file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise PressureError(path, "not ASCII text") from None


def read_psi(path: str | os.PathLike[str] = CPU_PRESSURE) -> Pressure:
    """Read and parse one PSI file (e.g. `CPU_PRESSURE`, `MEMORY_PRESSURE`, `IO_PRESSURE`).

    Raises:
        PSIUnavailable: the file is missing or the kernel has PSI switched off.
        PressureError: the file cannot be read or is not a PSI file.
    """
    p = Path(path)
    return parse_psi(_read(p, psi=True), p)


def parse_meminfo(text: str, source: str | os.PathLike[str] = "<meminfo>") -> dict[str, int]:
    """Every ``Name: value [kB]`` line of a meminfo text, in bytes (kB lines x 1024).

    Lines that do not have that shape are skipped; callers check for the keys they need.
    """
    out: dict[str, int] = {}
    for raw in text.splitlines():
        name, sep, rest = raw.partition(":")
        fields = rest.split()
        if not sep or not name.strip() or not fields or not fields[0].isdigit():
            continue
        unit = fields[1].lower() if len(fields) > 1 else ""
        if unit not in ("", "kb"):
            raise PressureError(source, f"{name.strip()}: unknown unit {fields[1]!r}")
        out[name.strip()] = int(fields[0]) * (1024 if unit == "kb" else 1)
    return out


def memory_available(path: str | os.PathLike[str] = MEMINFO) -> tuple[int, int]:
    """``(MemAvailable, MemTotal)`` in bytes from ``/proc/meminfo`` (or ``path``).

    Raises:
        PressureError: the file is missing or unreadable, lacks either field
            (MemAvailable came with Linux 3.14), or says MemTotal is 0.
    """
    p = Path(path)
    info = parse_meminfo(_read(p, psi=False), p)
    missing = [k for k in ("MemAvailable", "MemTotal") if k not in info]
    if missing:
        raise PressureError(p, f"no {' or '.join(missing)} line: not a meminfo file?")
    if info["MemTotal"] <= 0:
        raise PressureError(p, "MemTotal is 0")
    return info["MemAvailable"], info["MemTotal"]

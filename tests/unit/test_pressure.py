"""agents.pressure: PSI and meminfo files in, typed values (or errors naming the file) out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.pressure import (
    Pressure,
    PressureError,
    PSIUnavailable,
    StallLine,
    format_psi,
    memory_available,
    parse_psi,
    read_psi,
)

KERNEL_CPU = (
    "some avg10=1.53 avg60=0.87 avg300=0.22 total=12345678\n"
    "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)
MEMINFO = """\
MemTotal:       16318480 kB
MemFree:          734652 kB
MemAvailable:    9052340 kB
Buffers:          402852 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""


def test_parses_what_the_kernel_writes(tmp_path: Path) -> None:
    f = tmp_path / "cpu"
    f.write_text(KERNEL_CPU)
    p = read_psi(f)
    assert p.some == StallLine(1.53, 0.87, 0.22, 12345678)
    assert p.full == StallLine(0.0, 0.0, 0.0, 0)
    assert p.avg() == 1.53 and p.avg(60) == 0.87 and p.avg(300, "full") == 0.0


def test_cpu_file_of_an_old_kernel_has_no_full_line() -> None:
    p = parse_psi("some avg10=42.00 avg60=10.00 avg300=1.00 total=99\n")
    assert p.full is None
    assert p.avg(10, "full") == 0.0
    assert p.avg(10) == 42.0


def test_unknown_keys_are_ignored_for_newer_kernels() -> None:
    p = parse_psi("some avg10=5.00 avg60=4.00 avg300=3.00 total=7 avg1800=2.00\n")
    assert p.some == StallLine(5.0, 4.0, 3.0, 7)


def test_avg_rejects_unknown_windows_and_kinds() -> None:
    p = parse_psi(KERNEL_CPU)
    with pytest.raises(ValueError, match="window"):
        p.avg(30)
    with pytest.raises(ValueError, match="kind"):
        p.avg(10, "most")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", 'no "some" line'),
        ("some avg10=1.00 avg60=1.00 avg300=1.00\n", "missing total"),
        ("some avg10=1.00 avg300=1.00 total=3\n", "missing avg60"),
        ("most avg10=1.00 avg60=1.00 avg300=1.00 total=3\n", "'most'"),
        (KERNEL_CPU + KERNEL_CPU, "a second 'some' line"),
        ("some avg10=abc avg60=1.00 avg300=1.00 total=3\n", "avg10 must be a percentage"),
        ("some avg10=101 avg60=1.00 avg300=1.00 total=3\n", "avg10 must be a percentage"),
        ("some avg10=-1 avg60=1.00 avg300=1.00 total=3\n", "avg10 must be a percentage"),
        ("some avg10=nan avg60=1.00 avg300=1.00 total=3\n", "avg10 must be a percentage"),
        ("some avg10=1 avg60=inf avg300=1.00 total=3\n", "avg60 must be a percentage"),
        ("some avg10=1 avg60=1 avg300=1 total=1.5\n", "total must be a whole number"),
        ("some avg10=1 avg60=1 avg300=1 total=-1\n", "total must be a whole number"),
        ("some avg10 avg60=1 avg300=1 total=1\n", "expected key=value"),
    ],
)
def test_garbled_files_are_errors_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    f = tmp_path / "memory"
    f.write_text(text)
    with pytest.raises(PressureError) as err:
        read_psi(f)
    assert not isinstance(err.value, PSIUnavailable)
    assert str(err.value).startswith(f"{f}: ")
    assert why in str(err.value)
    assert err.value.path == str(f)


def test_missing_psi_file_means_no_psi_on_this_kernel(tmp_path: Path) -> None:
    f = tmp_path / "pressure" / "cpu"
    with pytest.raises(PSIUnavailable, match="PSI is not available") as err:
        read_psi(f)
    assert str(f) in str(err.value)


def test_unreadable_and_binary_files_are_plain_errors(tmp_path: Path) -> None:
    with pytest.raises(PressureError, match="cannot read") as err:
        read_psi(tmp_path)  # a directory
    assert not isinstance(err.value, PSIUnavailable)
    f = tmp_path / "bin"
    f.write_bytes(b"some avg10=\xff\n")
    with pytest.raises(PressureError, match="not ASCII"):
        read_psi(f)
    big = tmp_path / "big"
    big.write_text(KERNEL_CPU * 5000)
    with pytest.raises(PressureError, match="larger than"):
        read_psi(big)


@pytest.mark.skipif(not Path("/proc/pressure/cpu").exists(), reason="no PSI on this kernel")
@pytest.mark.parametrize("kind", ["cpu", "memory", "io"])
def test_reads_this_kernels_own_files(kind: str) -> None:
    p = read_psi(f"/proc/pressure/{kind}")
    assert 0.0 <= p.some.avg10 <= 100.0
    assert p.some.total >= 0


percent = st.integers(min_value=0, max_value=10000).map(lambda n: n / 100)
stall = st.builds(StallLine, percent, percent, percent, st.integers(0, 2**64))


@settings(max_examples=300, deadline=None)
@given(some=stall, full=st.none() | stall)
def test_round_trip(some: StallLine, full: StallLine | None) -> None:
    """What the kernel would print for any reading parses back to the same reading."""
    p = Pressure(some, full)
    assert parse_psi(format_psi(p)) == p


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("somefulavg1036=. \n-+xtnia9")), max_size=120))
def test_any_text_parses_or_is_a_pressure_error(text: str) -> None:
    """No input makes the parser fail with anything but PressureError."""
    try:
        p = parse_psi(text, "fuzz")
    except PressureError as e:
        assert str(e).startswith("fuzz: ")
    else:
        assert 0.0 <= p.some.avg10 <= 100.0 and p.some.total >= 0


def test_memory_available_in_bytes(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text(MEMINFO)
    assert memory_available(f) == (9052340 * 1024, 16318480 * 1024)


def test_memory_available_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:       16318480 kB\nMemFree:          734652 kB\n")
    with pytest.raises(PressureError, match="no MemAvailable line") as err:
        memory_available(f)
    assert str(err.value).startswith(f"{f}: ")
    f.write_text("MemTotal: 0 kB\nMemAvailable: 0 kB\n")
    with pytest.raises(PressureError, match="MemTotal is 0"):
        memory_available(f)
    f.write_text("MemTotal: 10 MB\nMemAvailable: 1 kB\n")
    with pytest.raises(PressureError, match="unknown unit"):
        memory_available(f)
    missing = tmp_path / "nope"
    with pytest.raises(PressureError, match="no such file") as err2:
        memory_available(missing)
    assert not isinstance(err2.value, PSIUnavailable)


def test_memory_available_of_this_machine() -> None:
    available, total = memory_available()
    assert 0 < available <= total

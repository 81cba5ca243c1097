"""The Debian package `make deb` builds: what dpkg will be told, and what it unpacks.

Installing, upgrading and removing it on a booted Debian is the container test bed's
job; this checks the built archive itself, and that the bundled compiled wheels load
in Debian's python3.11 when this machine has one. Builds once per run (about 15 s
with a warm pip cache; PyPI the first time).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deb import REPO, build_deb, missing_tools

VERSION = "0.1.1-2"
UPSTREAM = "0.1.1"
SITE = Path("opt/razar/lib/python3.11/site-packages")
CONFFILES = ["razard.toml", "razar_ai_agents.json", "error_registry.toml"]


@dataclass
class Built:
    deb: Path
    root: Path  # the data archive, unpacked
    control: Path  # DEBIAN/, unpacked


def _field(control: Path, name: str) -> str:
    for line in (control / "control").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name} field in control")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    why = missing_tools()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("deb")
    deb = build_deb(base / "out", VERSION)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(base / "root")], check=True)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(base / "DEBIAN")], check=True)
    yield Built(deb, base / "root", base / "DEBIAN")
    shutil.rmtree(base, ignore_errors=True)


def test_named_and_described_for_dpkg(built: Built) -> None:
    """File name and control fields: version as asked, amd64, only Debian dependencies."""
    assert built.deb.name == f"razar_{VERSION}_amd64.deb"
    assert _field(built.control, "Package") == "razar"
    assert _field(built.control, "Version") == VERSION
    assert _field(built.control, "Architecture") == "amd64"
    assert _field(built.control, "Pre-Depends") == "passwd"
    depends = {d.strip() for d in _field(built.control, "Depends").split(",")}
    assert {"python3.11", "dbus", "systemd", "init-system-helpers", "procps"} == depends


def test_configuration_is_conffiles_shipped_from_config(built: Built) -> None:
    """/etc/razard's three files are conffiles (kept when edited) and are config/'s."""
    listed = (built.control / "conffiles").read_text().split()
    assert listed == [f"/etc/razard/{name}" for name in CONFFILES]
    for name in CONFFILES:
        shipped = built.root / "etc" / "razard" / name
        assert shipped.read_bytes() == (REPO / "config" / name).read_bytes(), name


def test_units_policy_and_commands_in_place(built: Built) -> None:
    """Units in /lib/systemd/system, the bus policy, razard/razarctl on PATH into /opt/razar."""
    for unit in ("razard.service", "razar-notifier.service", "razar-notifier.timer"):
        shipped = built.root / "lib" / "systemd" / "system" / unit
        assert shipped.read_bytes() == (REPO / "units" / unit).read_bytes(), unit
    policy = built.root / "usr/share/dbus-1/system.d/org.razar.Supervisor1.conf"
    assert policy.read_bytes() == (REPO / "units" / policy.name).read_bytes()
    for cmd in ("razard", "razarctl"):
        assert os.readlink(built.root / "usr" / "bin" / cmd) == f"/opt/razar/bin/{cmd}"
        script = (built.root / "opt" / "razar" / "bin" / cmd).read_text()
        assert script.startswith("#!/opt/razar/bin/python\n"), script
    assert os.readlink(built.root / "opt/razar/bin/python") == "/usr/bin/python3.11"
    cfg = (built.root / "opt/razar/pyvenv.cfg").read_text()
    assert "home = /usr/bin\n" in cfg and "include-system-site-packages = false\n" in cfg


def test_bundle_is_this_checkout_stamped_with_the_version(built: Built) -> None:
    """The bundled razard is this tree's code, reporting the package's upstream version."""
    init = (built.root / SITE / "razard" / "__init__.py").read_text()
    assert f'__version__ = "{UPSTREAM}"' in init
    ours = (REPO / "razard" / "supervisor.py").read_bytes()
    assert (built.root / SITE / "razard" / "supervisor.py").read_bytes() == ours
    assert not list((built.root / "opt").rglob("__pycache__"))  # postinst compiles them


def test_compiled_extensions_are_cp311_x86_64(built: Built) -> None:
    """Every extension module is for CPython 3.11 (or the stable ABI) on x86_64."""
    extensions = list((built.root / SITE).rglob("*.so"))
    assert extensions  # dbus-fast and psutil ship compiled code
    for so in extensions:
        assert so.name.endswith((".cpython-311-x86_64-linux-gnu.so", ".abi3.so")), so


def test_maintainer_scripts_are_valid_sh(built: Built) -> None:
    """preinst/postinst/prerm/postrm are executable and parse as POSIX sh (dash on Debian)."""
    for name in ("preinst", "postinst", "prerm", "postrm"):
        script = built.control / name
        assert os.access(script, os.X_OK), name
        assert script.read_text().startswith("#!/bin/sh\n"), name
        done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (name, done.stderr)


def test_bundle_loads_in_debians_python(built: Built) -> None:
    """Debian's /usr/bin/python3.11 imports razard, razarctl and the compiled wheels from
    the bundle alone (isolated mode: no user site, no PYTHONPATH from the test run)."""
    python = Path("/usr/bin/python3.11")
    if not python.exists():
        pytest.skip("no /usr/bin/python3.11 here (not Debian 12)")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import razard.launch, razard.cli, razard.ctl, dbus_fast.message_bus, psutil;"
        "assert dbus_fast.message_bus.__file__.endswith('.so'), dbus_fast.message_bus.__file__;"
        "print(razard.__version__, razard.__file__, dbus_fast.message_bus.__file__)"
    )
    done = subprocess.run(
        [str(python), "-I", "-c", code, str(built.root / SITE)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    version, *where = done.stdout.split()
    assert version == UPSTREAM
    for path in where:
        assert path.startswith(str(built.root / SITE)), path

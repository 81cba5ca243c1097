"""Build the razar Debian package for the tests (scripts/build_deb.sh, as ``make deb``).

``build_deb(out_dir, version)`` returns the path of ``razar_<version>_amd64.deb``;
build two versions to test an upgrade. pip's downloads are cached under
/var/tmp/razar-deb-cache (``RAZAR_DEB_CACHE``), so a second build takes seconds
and PyPI is needed only the first time a dependency version is seen.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "build_deb.sh"


def missing_tools() -> str | None:
    """Why a package cannot be built on this machine, or None when it can."""
    if shutil.which("dpkg-deb") is None:
        return "dpkg-deb is not installed"
    return None


def build_deb(out_dir: Path, version: str | None = None, *, timeout: float = 600) -> Path:
    """Build the package from this checkout into ``out_dir``; returns the .deb's path.

    ``version`` defaults to razard's own; the script stamps it into the bundled razar
    too, so ``razard --version`` tells which build is installed.
    """
    argv = [str(SCRIPT), "--out", str(out_dir)]
    if version is not None:
        argv += ["--version", version]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{SCRIPT.name} failed ({done.returncode}):\n{done.stderr}")
    deb = Path(done.stdout.strip().splitlines()[-1])
    if not deb.is_file():
        raise RuntimeError(f"{SCRIPT.name} printed {deb}, which is not a file")
    return deb

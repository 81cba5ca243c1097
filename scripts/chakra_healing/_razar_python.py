"""Run a healer script under razar's Python (its virtualenv), wherever it was started from.

``./sacral_gpu_recover.py`` starts under ``/usr/bin/env python3``, which may lack
razar's dependencies. This re-executes the script with ``$RAZAR_PYTHON``, else
the checkout's ``.venv/bin/python``, when that is not the interpreter already
running, and puts the checkout on ``sys.path`` so ``agents`` imports.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def use_razar_python() -> None:
    wanted = os.environ.get("RAZAR_PYTHON") or str(REPO / ".venv" / "bin" / "python")
    here = Path(sys.executable).absolute()
    if os.access(wanted, os.X_OK) and Path(wanted).absolute() != here:
        if not os.environ.get("_RAZAR_REEXEC"):  # once: never loop between interpreters
            os.environ["_RAZAR_REEXEC"] = "1"
            os.execv(wanted, [wanted, sys.argv[0], *sys.argv[1:]])
    sys.path.insert(0, str(REPO))

"""A CPU load the harness starts and stops: one busy process per CPU, bounded in time.

The nodes razard runs on are busy (GPU jobs keep every core at work); the load
scenario reruns recovery and the crash storm under this load for every system.
``stress-ng --cpu N`` is used where it is installed (Debian's ``stress-ng``), else
the harness's own loops: a Python that spins on ``time.monotonic()`` until its
deadline. Either way each process is at nice 0 in the harness's cgroup, ends by
itself at the deadline, and is SIGKILLed when the scenario is done.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from types import TracebackType

#: The loop each busy process runs: nothing but CPU until the deadline (seconds).
_BUSY = (
    "import sys, time\n"
    "end = time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end: pass\n"
)


class CpuLoad:
    """``with CpuLoad(procs, seconds):`` every CPU busy for at most ``seconds``."""

    def __init__(self, procs: int | None = None, seconds: float = 1800.0) -> None:
        self.procs = procs or os.cpu_count() or 1
        self.seconds = seconds
        self.stress_ng = shutil.which("stress-ng")
        self.method = (
            f"stress-ng --cpu {self.procs}"
            if self.stress_ng
            else f"{self.procs} Python busy loops (stress-ng is not installed)"
        )
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuLoad:
        if self.stress_ng:
            argv = [self.stress_ng, "--cpu", str(self.procs), "--timeout", f"{self.seconds:.0f}s"]
            self._procs.append(self._spawn([*argv, "--quiet"]))
        else:
            for _ in range(self.procs):
                self._procs.append(self._spawn([sys.executable, "-c", _BUSY, str(self.seconds)]))
        return self

    @staticmethod
    def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own group: stress-ng's workers go with it
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for p in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in self._procs:
            p.wait()
        self._procs.clear()

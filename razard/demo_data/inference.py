"""inference (third_eye): serves and beats its heartbeat; hangs while the hang file exists.

A hang is simulated by creating the file named by the first argument: the process
keeps running but stops touching $RAZAR_HEARTBEAT_FILE, as a stuck CUDA kernel
would. A fresh process is not hung (it removes the file). SIGUSR1 (the third_eye
healer's flush signal) drops the request queue.
"""

import os
import pathlib
import signal
import sys
import time

beat = pathlib.Path(os.environ["RAZAR_HEARTBEAT_FILE"])
hang = pathlib.Path(sys.argv[1])
hang.unlink(missing_ok=True)


def flush(signum: int, frame: object) -> None:
    print("inference: flushing the request queue", flush=True)


signal.signal(signal.SIGUSR1, flush)
print("inference: serving", flush=True)
hung = False
while True:
    if hang.exists():
        if not hung:
            print("inference: stuck in a CUDA kernel (simulated): no heartbeat", flush=True)
            hung = True
    else:
        beat.touch()
    time.sleep(0.2)

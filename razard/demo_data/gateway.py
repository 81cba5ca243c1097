"""gateway (throat): reads its mode from app.conf; the shipped app.conf has a known typo.

The failure it prints ("error: unknown mode 'brokn'") is a signature in the error
registry, whose fix patches app.conf (one of the component's declared artifacts).
"""

import pathlib
import sys
import time

mode = ""
for line in pathlib.Path("app.conf").read_text().splitlines():
    key, _, value = line.partition("=")
    if key.strip() == "mode":
        mode = value.strip()
if mode != "ok":
    print(f"gateway: error: unknown mode '{mode}'", file=sys.stderr, flush=True)
    sys.exit(2)
print("gateway: routing requests (mode ok)", flush=True)
while True:
    time.sleep(3600)

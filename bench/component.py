"""The one test component every system supervises (run as ``python3 -S -E component.py``).

    component.py READY_SOCKET NAME [PORT]

On start it binds PORT on 127.0.0.1 when one is given (the TCP probe's target), sends
``ready <pid> <name> <monotonic>`` to the harness's unix datagram socket, then sleeps
(or accepts and closes connections, so probes never fill the backlog). It imports
nothing beyond the interpreter's built-ins so it starts in milliseconds, the same for
every system. The harness times from its SIGKILL to the next ``ready`` of a new pid;
the monotonic clock is the system-wide one the harness reads too.
"""

import os
import signal
import socket
import sys
import time


def main() -> None:
    ready_socket, name = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    server = None
    if port:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(128)
    note = f"ready {os.getpid()} {name} {time.monotonic():.6f}".encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(note, ready_socket)
        except OSError:
            pass  # the harness is gone; keep running like a real service would
    if server is None:
        while True:
            signal.pause()
    while True:
        conn, _ = server.accept()
        conn.close()


if __name__ == "__main__":
    main()

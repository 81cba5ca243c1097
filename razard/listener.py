"""razard's metrics page on its port, served from the start or as soon as the port is free.

Any local user can listen on a free port above 1023, and one that takes razard's
metrics port before razard starts (after a reboot, say) would otherwise keep
razard from starting at all: the node's components unsupervised for want of a
metrics page. So a port in use is not fatal. razard starts without its page,
says which process holds the port (pid, program, user) in an error event, shows
DEGRADED in its status line (``systemctl status razard``), and tries again every
`RETRY_S` seconds. Meanwhile Prometheus scrapes whatever holds the port:
``RazardDown`` (``config/prometheus/razar_rules.yml``) fires when that scrape fails
or its page has no ``razar_build_info``. A holder that copies razard's page too is
not caught: only a port no user can bind (below 1024, or one pid 1 holds from boot
with socket activation) would rule that out, and razard does not do either yet.
Anything else that stops razard from listening (an address that is not this
node's, a privileged port razard cannot bind) is a configuration error, and
razard does not start.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from typing import Final

from razard.journal import Priority, one_line

#: seconds between tries to listen on a port another process holds
RETRY_S: Final = 10.0

#: how the listener says what happened: (event, message, priority), as `EventLog.emit`
Say = Callable[[str, str, int], None]


class MetricsListener:
    """Serves the metrics page with ``serve(address, port) -> bound port`` (the
    `razard.metrics.Metrics` server), now or, while the port is taken, later."""

    def __init__(self, serve: Callable[[str, int], int], address: str, port: int) -> None:
        """Try to listen now.

        Raises:
            OSError: listening failed for another reason than a port in use.
        """
        self._serve = serve
        self.address = address
        self.port = port
        #: why the page is not served, while it is not (None: served)
        self.taken: str | None = None
        try:
            self.port = serve(address, port)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            holder = port_holder(address, port)
            self.taken = f"{self.where} is in use" + (f" by {holder}" if holder else "")

    @property
    def where(self) -> str:
        return where(self.address, self.port)

    async def keep_trying(self, say: Say, interval: float = RETRY_S) -> None:
        """While the port is taken, try again every ``interval`` seconds; say when the page
        is served at last, or why razard stopped trying (an address or port it may never
        listen on). Nothing here raises into razard's task group: a shortage (descriptors,
        memory, a thread that cannot start) is tried again like a port in use."""
        while self.taken is not None:
            await asyncio.sleep(interval)
            try:
                self.port = self._serve(self.address, self.port)
            except OSError as e:
                if e.errno in _FOR_GOOD:
                    self.taken = f"cannot listen on {self.where}: {e.strerror or e}"
                    say(
                        "metrics_unavailable",
                        f"metrics: {self.taken}; not trying again (restart razard once it "
                        "is fixed)",
                        Priority.ERR,
                    )
                    return
                if e.errno != errno.EADDRINUSE:
                    self.taken = f"cannot listen on {self.where} yet: {e.strerror or e}"
                continue
            except Exception as e:  # noqa: BLE001 (the page must not take supervision down)
                self.taken = f"cannot serve on {self.where} yet: {type(e).__name__}: {e}"
                continue
            self.taken = None
            served = f"metrics on {self.where}: the port is free again"
            say("metrics_listening", served, Priority.NOTICE)


#: errors that another try cannot mend: an address not on this node, a port razard may
#: not bind, an address family the kernel lacks
_FOR_GOOD: Final = frozenset({errno.EADDRNOTAVAIL, errno.EACCES, errno.EAFNOSUPPORT})


def port_holder(address: str, port: int) -> str:
    """Which process listens on ``port`` at ``address`` or at every address (at any one
    address when ``address`` is every address), as
    ``pid 123 (python3, user mallory)``; "" when it cannot be told."""
    import psutil  # type: ignore[import-untyped]

    anywhere = {address, "0.0.0.0", "::"}
    wildcard = address in ("0.0.0.0", "::")  # then a holder on any one address blocks it
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return ""
    for c in conns:
        if c.status != psutil.CONN_LISTEN or not c.laddr or c.laddr.port != port:
            continue
        if (c.laddr.ip not in anywhere and not wildcard) or not c.pid:
            continue
        try:
            p = psutil.Process(c.pid)
            return f"pid {c.pid} ({_plain(p.name())}, user {_plain(p.username())})"
        except psutil.Error:
            return f"pid {c.pid}"
    return ""


def _plain(text: str, limit: int = 32) -> str:
    """``text`` on one line, cut to ``limit``: a program names itself (prctl), and this goes
    into razard's STATUS= line, where a newline would start an sd_notify command of the
    holder's choosing."""
    clean = one_line(text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def where(address: str, port: int) -> str:
    """``address:port``, an IPv6 address in brackets."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"

"""razard: a self-healing supervisor for GPU/AI nodes.

Components run as systemd units driven over D-Bus; razard probes them, restarts
them with backoff, and climbs the remediation ladder when that is not enough.
"""

__version__ = "0.1.0"

#!/usr/bin/env python3
"""Escalation notifier outside razard (thin: the logic is in razard.escalation).

    escalation_notifier.py --config /etc/razard/razard.toml --once     # the timer's run
    escalation_notifier.py --config /etc/razard/razard.toml --follow   # a long-running service

Exits 0 saying so when razard's own notifier is active (it holds the lock).
"""

from razard.escalation.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m razard.escalation``: the same as ``scripts/escalation_notifier.py``."""

from razard.escalation.cli import main

raise SystemExit(main())

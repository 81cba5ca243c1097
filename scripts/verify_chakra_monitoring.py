#!/usr/bin/env python3
"""Verify the node's monitoring: scrape razard, node_exporter, the GPU exporter, cAdvisor
and custom exporters; report unreachable endpoints, missing metric families and stale readings.

    verify_chakra_monitoring.py [--config razard.toml] [--endpoint NAME=URL[,kind=KIND]]...
                                [--only NAME]... [--json] [--timeout S] [--max-age S]

Exit 0 when monitoring is complete, 1 on any gap, 2 on bad arguments or config.
The endpoints come from the [monitoring] table of razard.toml; the logic is in
agents.monitoring (see its docstring). Also available as `razarctl verify-monitoring`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "chakra_healing"))
from _razar_python import use_razar_python  # noqa: E402

use_razar_python()  # razar's virtualenv, and the checkout on sys.path

from agents.monitoring import main  # noqa: E402

raise SystemExit(main())

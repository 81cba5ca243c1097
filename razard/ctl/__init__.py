"""razarctl: the operator's command line for razard.

Every control command is one operation of razard's control interface,
``client.call(Op.<operation>, ...)`` (the operations are defined once, in
:mod:`razard.controlapi`; the client is the blocking
:class:`razard.controlsync.SyncControlClient`); this package only parses arguments and
formats what comes back. Its modules, one per group of commands:

- :mod:`razard.ctl.app`: the ``main`` group, its global options, `call`, errors;
- :mod:`razard.ctl.components`: ``status``, ``start``/``stop``/``restart``, ``reload``,
  ``quarantine``;
- :mod:`razard.ctl.repairs`: ``ladder``, ``chakra``, ``patches``, ``diff``, ``rollback``,
  ``heal``;
- :mod:`razard.ctl.incidents`: ``logs``, ``incident``, ``escalations``;
- ``fleet`` (:mod:`razard.fleet.ctl`) and ``verify-monitoring`` (:mod:`agents.monitoring`).

Each command's module is loaded only when the command is named (`app.COMMANDS`).

``razard.ctl:main`` is the ``razarctl`` entry point.
"""

from __future__ import annotations

from razard.ctl.app import main

__all__ = ["main"]

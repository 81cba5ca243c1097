"""Chakra layer agents: each of the seven layers watches its pulse and runs its healer.

Not to be confused with the AI *repair agents* (``razard/repair/*_agent.py``,
the registry, OpenAI-compatible endpoints and opencode), which propose patches
to a component's files on the repair rung. A layer agent watches a layer of
the node (network, GPU, memory, ...) and runs that layer's *healer*
(``agents/healing/<layer>.py``, a fixed remedy, no AI) on the healer rung,
before any repair agent is asked:

    chakra.py       LayerAgent: pulse, outages, verified heals (one per layer)
    heartbeat.py    the pulse from inotify on each layer's heartbeat files
    sensors.py      what each layer's sensor reads (gpu.py, gpu_metrics.py, pressure.py)
    healer.py       runs a healer in its own transient unit (confinement.py: its privileges)
    rung.py         the healer as a ladder rung of razard's supervisor
    monitoring.py   ``razarctl verify-monitoring``: is the node's monitoring complete
    healing/        the healers themselves, one executable per layer

The list of layers itself is `razard.layers.LAYERS`, in the core, which the config
validates against.
"""

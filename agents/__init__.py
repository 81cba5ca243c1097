"""Chakra layer agents: each of the seven layers watches its pulse and runs its healer.

The heartbeat watching and healers arrive with their own issue; this package
already owns the list of layers, which the config validates against.
"""

from agents.layers import LAYERS, Layer

__all__ = ["LAYERS", "Layer"]

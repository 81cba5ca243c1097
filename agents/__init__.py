"""Chakra layer agents: each of the seven layers watches its pulse and runs its healer.

The list of layers itself is `razard.layers.LAYERS`, in the core, which the config
validates against.
"""

"""The repair rung of the ladder: agents propose patches, the patch engine applies them safely.

The agents here are the AI *repair agents* (``registry.py``, ``openai_agent.py``,
``opencode_agent.py``): they change a component's own files. The chakra *layer
agents* of ``agents/`` are another thing: they watch a layer of the node and run
its fixed healer on the rung before this one.

handover(component, failure)  ->  agents in roster order  ->  Proposal
    ->  PatchEngine.check (inside artifacts?)  ->  apply (snapshot first)
    ->  verify (restart + probe)  ->  keep  |  revert
"""

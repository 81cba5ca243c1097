"""The repair rung of the ladder: agents propose patches, the patch engine applies them safely.

handover(component, failure)  ->  agents in roster order  ->  Proposal
    ->  PatchEngine.check (inside artifacts?)  ->  apply (snapshot first)
    ->  verify (restart + probe)  ->  keep  |  revert
"""

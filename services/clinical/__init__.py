"""``make clinical``: virtual patients through the pure engine, under every built-in rule set.

``driver`` closes the loop (each patient reads what the engine prescribes),
``metrics`` compares what the engine did with what really happened to each
patient, ``report`` and ``plots`` write docs/CLINICAL.md and its figures.
"""

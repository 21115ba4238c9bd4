"""Virtual patients against a prescriber: ``make clinical`` and the demo's closed loop.

``driver`` closes the loop (each patient reads what the prescriber emitted):
against the pure engine for ``make clinical``, under every built-in rule set,
or, through ``remote``, against a running stack over HTTP for ``backtrack
demo``. ``metrics`` compares what the prescriber did with what really happened
to each patient, ``report`` and ``plots`` write docs/CLINICAL.md and its figures.
"""

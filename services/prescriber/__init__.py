"""The prescriber: folds each user's events into a prescription and emits its changes.

The pure core, no I/O: ``engine/`` (evolve, decide, react, replay; every rule
in ``RuleSet``) and ``arrivals`` (the live fold in arrival order). The shell:
``processing/`` (the use case and the collaborators it reads and writes
through), ``feeds/`` (the Redis partition feeds: leases, readers, reclaimer),
``entrypoints/`` (what comes from outside: the clinic API, probes, the log
channel), and ``bootstrap.create_app``, the composition root; ``__main__``
serves it. The map and one event's way through it: docs/ARCHITECTURE.md.
"""

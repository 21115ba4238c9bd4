"""Operator replay tools: rebuild, what-if, as-of, re-delivery, dead letters.

Every tool reads the event log through ``scan`` (users and histories streamed
in pages, never the whole log at once) and folds with the prescriber's own
pure code, so what an operator sees is what live processing computes.
"""

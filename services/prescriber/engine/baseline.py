"""Baseline pain (RULES.md section 3): the 72 h median of baseline and morning scores."""

from __future__ import annotations

from bisect import bisect_left
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Score, State

T = TypeVar("T", bound=tuple[Any, ...])
_AT = itemgetter(0)
_SCORE = itemgetter(1)


def median_since(scores: tuple[Score, ...], since: datetime) -> float | None:
    """The median (a float) of the scores at or after ``since``, or None for none.

    Invariant: ``scores`` is in time order (the fold appends in order), so the
    window is a suffix found by bisection.
    """
    ordered = sorted(map(_SCORE, scores[bisect_left(scores, since, key=_AT) :]))
    n = len(ordered)
    if n == 0:
        return None
    mid = n // 2
    return float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def drop_before(records: tuple[T, ...], since: datetime) -> tuple[T, ...]:
    """Records (time first, in order) from ``since`` on; the older ones dropped."""
    i = bisect_left(records, since, key=_AT)
    return records[i:] if i else records


def baseline_at(state: State, at: datetime, rules: RuleSet) -> float | None:
    """Baseline at ``at`` from what is folded so far: the 72 h median, else the last known.

    Invariant: every score in the state is at or before the latest event, so the
    window is simply the scores no older than ``at`` minus 72 h.
    """
    found = median_since(state.scores, at - rules.spans.baseline)
    return state.last_baseline if found is None else found

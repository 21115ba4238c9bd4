"""The processor's kept refold timelines: bounded by events, least recently used out."""

from __future__ import annotations

from services.prescriber import engine
from services.prescriber.arrivals import Timeline
from services.prescriber.processing.timelines import Timelines
from shared import cohort


def _timeline(user_id: str, size: int) -> Timeline:
    events = [e.model_copy(update={"user_id": user_id}) for e in cohort.events(1, seed=2)]
    return Timeline(user_id, events[:size], engine.DEFAULT_RULES)


def test_timelines_stay_within_their_event_budget_dropping_the_least_recent() -> None:
    """Past the budget the least recently kept go first; taking one removes it."""
    kept = Timelines(events=25)
    for user_id in ("a", "b", "c"):
        kept.put(user_id, "1-0", _timeline(user_id, 10))
    assert (len(kept), kept.events) == (2, 20)  # "a" went to make room for "c"
    assert kept.take("a") is None
    position, timeline = kept.take("b") or ("", None)
    assert (position, timeline is not None, kept.events) == ("1-0", True, 10)
    kept.put("c", "2-0", _timeline("c", 12))  # replacing counts the new size only
    assert (len(kept), kept.events) == (1, 12)
    kept.drop(lambda user_id: user_id == "c")
    assert (len(kept), kept.events) == (0, 0)


def test_a_timeline_larger_than_the_budget_is_not_kept() -> None:
    kept = Timelines(events=5)
    kept.put("a", "1-0", _timeline("a", 10))
    assert (len(kept), kept.events) == (0, 0)

"""Section 4: how a session's pain answers become GREEN, AMBER or RED, under rule set 1.

Where rule set 2 differs (tolerance, the next-day baseline, C1 at rest, the
optional after log, RED next day) its boundaries are in test_rules_v2.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.prescriber.engine import State
from tests.unit.engine.factories import (
    V1,
    answered,
    at,
    daily_baselines,
    make_pain,
    make_start,
    run,
)


def verdict(state: State) -> str:
    assert state.program is not None
    assert state.program.finals, "no final verdict yet"
    return state.program.finals[-1].verdict


def judged(*events: object, baseline: int = 3, finalize: bool = True) -> State:
    """Start at T0, baseline logs days 0-1, the given events, and a late log to finalize."""
    tail = [make_pain(occurred_at=at(5, 7), score=baseline)] if finalize else []
    state, _ = run([make_start(), *daily_baselines(0, 1, score=baseline), *events, *tail], rules=V1)  # type: ignore[list-item]
    return state


@pytest.mark.parametrize(("during", "expected"), [(2, "green"), (3, "amber")])
def test_pain_during_2_is_green_and_3_is_amber(during: int, expected: str) -> None:
    """Pain during below 3 meets C1; 3 makes the session AMBER."""
    assert verdict(judged(*answered(1, during=during, after=2, morning=2))) == expected


@pytest.mark.parametrize(("during", "expected"), [(4, "amber"), (5, "red")])
def test_pain_during_4_is_amber_and_5_is_red(during: int, expected: str) -> None:
    """Pain during 4 is AMBER; 5 or more is RED."""
    assert verdict(judged(*answered(1, during=during, after=2, morning=2))) == expected


@pytest.mark.parametrize(("after", "expected"), [(3, "green"), (4, "amber"), (5, "red")])
def test_after_at_baseline_is_green_and_baseline_plus_2_is_red(after: int, expected: str) -> None:
    """After-exercise pain at baseline meets C2, above it is AMBER, baseline + 2 is RED."""
    assert verdict(judged(*answered(1, after=after, morning=3))) == expected


def test_morning_above_baseline_is_red() -> None:
    """Next-morning pain above the baseline is RED."""
    assert verdict(judged(*answered(1, after=2, morning=4))) == "red"


@pytest.mark.parametrize(("hours", "expected"), [(35, "red"), (37, "amber")])
def test_morning_counts_at_35h_but_not_at_37h(hours: float, expected: str) -> None:
    """A morning log 35 h after the session is judged; at 37 h the window has closed."""
    events = answered(1, after=2, morning=4, morning_hours=hours)
    assert verdict(judged(*events)) == expected


@pytest.mark.parametrize(("hours", "expected"), [(6, "green"), (6.1, "amber")])
def test_after_window_is_6_hours(hours: float, expected: str) -> None:
    """An after-exercise log at s + 6 h counts; one just later is missing (AMBER)."""
    events = answered(1, after=2, morning=2, after_hours=hours)
    assert verdict(judged(*events)) == expected


def test_last_after_log_in_window_wins() -> None:
    """Of two after-exercise logs in (s, s+6 h], the last one is used."""
    events = [
        *answered(1, after=6, morning=2, after_hours=1),
        make_pain(occurred_at=at(1, 14), score=2, context="after_exercise"),
    ]
    assert verdict(judged(*events)) == "green"


def test_during_logs_of_the_session_or_2h_before_count() -> None:
    """A during-exercise log 1.5 h before s raises 'during' to RED; 3 h before is ignored."""
    near = make_pain(occurred_at=at(1, 8.5), score=5, context="during_exercise")
    far = make_pain(occurred_at=at(1, 7), score=5, context="during_exercise")
    assert verdict(judged(near, *answered(1, after=2, morning=2))) == "red"
    assert verdict(judged(far, *answered(1, after=2, morning=2))) == "green"


def test_during_log_with_same_session_id_counts_after_the_session() -> None:
    """A during-exercise log carrying the session's id counts even when logged later."""
    events = answered(1, after=2, morning=2, session_id="abc")
    late = make_pain(occurred_at=at(1, 11), score=6, context="during_exercise", session_id="abc")
    assert verdict(judged(*events, late)) == "red"


def test_missing_morning_log_is_amber_once_36h_passed() -> None:
    """Without a morning log the verdict waits 36 h, then is final AMBER."""
    state = judged(*answered(1, after=2, morning=None), finalize=False)
    assert state.program is not None
    assert not state.program.finals
    later, _ = run([make_pain(occurred_at=at(1, 10) + timedelta(hours=36))], state, V1)
    assert verdict(later) == "amber"


def test_missing_baseline_compares_with_2() -> None:
    """With no baseline ever logged, after and morning are compared with 2."""
    events = [make_start(), *answered(1, after=2, morning=2)]
    state, _ = run([*events, make_pain(occurred_at=at(5))], rules=V1)
    assert verdict(state) == "green"
    events = [make_start(), *answered(1, after=2, morning=3)]
    state, _ = run([*events, make_pain(occurred_at=at(5))], rules=V1)
    assert verdict(state) == "red"

"""Sections 5, 6 and 8: progress, hold, regress, flare-ups and return to run.

Tests pinned to rule set 1 (``V1``) cover rules that v2 changed; their v2
boundaries are in test_rules_v2.py.
"""

from __future__ import annotations

from services.prescriber.engine import decide
from shared.events import Input
from tests.unit.engine.factories import (
    V1,
    answered,
    at,
    daily_baselines,
    levels,
    make_pain,
    make_start,
    run,
)


def green_weeks(*days: int, **session: object) -> list[Input]:
    """Green sessions on the given days (morning log next day 06:00)."""
    return [e for d in days for e in answered(d, during=1, after=1, morning=1, **session)]  # type: ignore[arg-type]


def course(*extra: Input, last_day: int = 21, start: Input | None = None) -> list[Input]:
    """A gradual-onset start on day 0, daily baselines of 2 and greens on days 1, 3, 5, 8."""
    return [start or make_start(), *daily_baselines(0, last_day), *green_weeks(1, 3, 5, 8), *extra]


def upto(events: list[Input], day: float, hour: float = 23) -> list[Input]:
    return [e for e in events if e.occurred_at <= at(day, hour)]


def test_two_greens_progress_every_exercise_once_7_days_have_passed() -> None:
    """Two final GREENs progress all exercises, but not within 7 days of the start."""
    events = course()
    assert set(levels(run(upto(events, 8))[0]).values()) == {1}  # greens at days 4 and 6: too soon
    state, changes = run(upto(events, 9, 7))
    assert set(levels(state).values()) == {2}
    assert changes[-1].change == "progressed"
    assert changes[-1].reasons[1].code == "progressed_two_green"
    assert [c.version for c in changes] == [1, 2]


def test_at_most_one_step_per_7_days() -> None:
    """After a step on day 9, further greens hold until day 16 06:00 (7 days later)."""
    events = course(*green_weeks(10, 12, 15))
    assert set(levels(run(upto(events, 16, 5))[0]).values()) == {2}
    assert set(levels(run(upto(events, 16, 7))[0]).values()) == {3}


def test_hard_or_incomplete_session_holds() -> None:
    """A GREEN but hard (or not completed) session in the last two holds the level."""
    for odd in ({"difficulty": "hard"}, {"completed": False}):
        events = [make_start(), *daily_baselines(0, 14), *green_weeks(1, 3, 5)]
        events += green_weeks(8, **odd)
        assert set(levels(run(upto(events, 9, 23))[0]).values()) == {1}
        events += green_weeks(10)
        assert set(levels(run(upto(events, 11, 23))[0]).values()) == {1}
        events += green_weeks(12)
        assert set(levels(run(upto(events, 13, 23))[0]).values()) == {2}


def test_low_adherence_holds() -> None:
    """Four sessions in 9 days is under half of 7 a week (prorated), so no progress."""
    state, _ = run(upto(course(start=make_start(sessions_per_week=7)), 9, 23))
    assert set(levels(state).values()) == {1}
    state, _ = run(upto(course(start=make_start(sessions_per_week=3)), 9, 23))
    assert set(levels(state).values()) == {2}


def test_red_verdict_regresses_every_exercise_but_not_below_1() -> None:
    """A RED verdict steps every exercise down one level, never below level 1."""
    events = course(*answered(10, during=5, after=1, morning=1), *answered(12, during=5))
    state, changes = run(upto(events, 11, 23))
    assert set(levels(state).values()) == {1}
    assert changes[-1].change == "regressed"
    assert changes[-1].reasons[1].code == "regressed_red_verdict"
    state, changes = run(upto(events, 14))
    assert set(levels(state).values()) == {1}
    assert len(changes) == 3  # started, progressed, regressed: the second RED changed nothing


def test_flare_on_baseline_2_above_its_7_day_median_but_not_1() -> None:
    """A score 2 above the 7-day median starts a flare (deloaded); 1 above does not."""
    base = [make_start(), *daily_baselines(0, 9)]
    state, _ = run([*base, make_pain(occurred_at=at(9, 19), score=3)], rules=V1)
    assert decide(state, V1).phase == "build"  # type: ignore[union-attr]
    state, changes = run([*base, make_pain(occurred_at=at(9, 19), score=4)], rules=V1)
    rx = decide(state, V1)
    assert rx is not None
    assert rx.phase == "flare"
    assert changes[-1].change == "deloaded"
    assert rx.reasons[0].code == "flare_baseline_jump"
    assert [(e.exercise_id, e.level, e.minutes) for e in rx.exercises] == [
        ("cat_camel", 1, None),
        ("knee_hugs", 1, None),
        ("walking", 1, 10),
    ]


def test_flare_on_two_days_in_a_row_at_7_or_more() -> None:
    """Scores of 7 or more on two consecutive days start a flare; on alternate days they do not."""
    base = [make_start(), *daily_baselines(0, 5, score=6)]
    apart = [make_pain(occurred_at=at(6, 7), score=7), make_pain(occurred_at=at(8, 7), score=7)]
    assert decide(run([*base, *apart])[0]).phase == "build"  # type: ignore[union-attr]
    in_a_row = [make_pain(occurred_at=at(6, 7), score=7), make_pain(occurred_at=at(7, 7), score=7)]
    rx = decide(run([*base, *in_a_row])[0])
    assert rx is not None
    assert rx.phase == "flare"
    assert rx.reasons[0].code == "flare_two_high_days"


def test_resume_within_1_point_of_pre_flare_one_level_below() -> None:
    """Back within 1 point of the pre-flare baseline: build again, each exercise one level lower."""
    flare = make_pain(occurred_at=at(10, 7), score=5)
    events = [*list(course(last_day=9)), flare]
    still = [*events, make_pain(occurred_at=at(11, 7), score=2)]  # since-flare median 3.5
    assert decide(run(still, rules=V1)[0], V1).phase == "flare"  # type: ignore[union-attr]
    back = [*events, make_pain(occurred_at=at(11, 7), score=1)]  # since-flare median 3
    state, changes = run(back, rules=V1)
    assert decide(state, V1).phase == "build"  # type: ignore[union-attr]
    assert [c.change for c in changes] == ["started", "progressed", "deloaded", "resumed"]
    assert set(levels(state, V1).values()) == {1}  # level 2 before the flare
    assert changes[-1].reasons[1].code == "resumed_after_flare"


def _runner(*extra: Input, score: int = 2) -> list[Input]:
    start = make_start(goals=("running",))
    days = (1, 3, 5, 8, 10, 12)
    return [start, *daily_baselines(0, 21, score=score), *green_weeks(*days), *extra]


def test_return_to_run_after_14_green_days_with_baseline_at_most_2() -> None:
    """Runner: 14 days in build, all GREEN, baseline <= 2: walking becomes walk-run."""
    assert decide(run(upto(_runner(), 13), rules=V1)[0], V1).phase == "build"  # type: ignore[union-attr]
    state, changes = run(upto(_runner(), 14, 8), rules=V1)
    rx = decide(state, V1)
    assert rx is not None
    assert rx.phase == "return_to_run"
    assert changes[-1].change == "phase_changed"
    assert rx.exercises[-1].exercise_id == "running"
    assert rx.exercises[-1].name == "Walk-run 5x(4 min walk + 1 min run)"
    assert "walking" not in [e.exercise_id for e in rx.exercises]


def test_no_return_to_run_with_baseline_above_2() -> None:
    """A baseline of 3 keeps a runner in build however green the sessions."""
    events = [
        e for e in _runner(score=3) if not (e.type == "PainLogged" and e.context == "morning")
    ]
    events += [make_pain(occurred_at=at(d, 6), score=3, context="morning") for d in range(2, 14)]
    assert decide(run(upto(events, 16))[0]).phase == "build"  # type: ignore[union-attr]


def test_red_run_verdict_steps_only_the_run_ladder_down() -> None:
    """In return_to_run a RED run session steps the run ladder down and nothing else."""
    run_session = {"exercises": ({"exercise_id": "running", "sets": 1, "minutes": 25},)}
    events = _runner(*green_weeks(15, 17), *answered(19, during=5, **run_session))
    state, _ = run(upto(events, 16, 7), rules=V1)
    assert levels(state, V1)["running"] == 2
    assert levels(state, V1)["cat_camel"] == 3
    state, changes = run(upto(events, 20, 7), rules=V1)
    assert levels(state, V1)["running"] == 1
    assert levels(state, V1)["cat_camel"] == 3
    assert changes[-1].change == "regressed"
    assert changes[-1].reasons[1].code == "regressed_red_run_verdict"

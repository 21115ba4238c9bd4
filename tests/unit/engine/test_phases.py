"""Sections 1-3 and 8: red flags, phase and stage from onset, baseline, preferences."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from services.prescriber.engine import DEFAULT_RULES, decide
from services.prescriber.engine.baseline import baseline_at
from tests.unit.engine.factories import (
    T0,
    at,
    make_pain,
    make_start,
    onset_days_ago,
    run,
)


def prescribed(*events: object):  # type: ignore[no-untyped-def]
    state, _ = run(events)  # type: ignore[arg-type]
    rx = decide(state)
    assert rx is not None
    return rx


def test_nothing_is_decided_before_rehab_started() -> None:
    """Pain logs alone give no prescription."""
    state, changes = run([make_pain()])
    assert decide(state) is None
    assert changes == []


@pytest.mark.parametrize(("days", "phase"), [(6, "protect"), (7, "build")])
def test_sprain_is_protect_through_day_6_and_build_from_day_7(days: int, phase: str) -> None:
    """After a sprain or strain, days 0-6 are protect and day 7 starts build."""
    rx = prescribed(make_start(cause="sprain_strain", onset_date=onset_days_ago(days)))
    assert rx.phase == phase


@pytest.mark.parametrize("cause", ["gradual", "unknown"])
def test_gradual_or_unknown_onset_skips_protect(cause: str) -> None:
    """A gradual or unknown onset goes straight to build on day 0."""
    assert prescribed(make_start(cause=cause)).phase == "build"


def test_protect_moves_to_build_as_days_pass() -> None:
    """An event on day 7 turns protect into build with a phase_changed change."""
    _, changes = run([make_start(cause="sprain_strain"), make_pain(occurred_at=at(7, 8))])
    assert [c.phase for c in changes] == ["protect", "build"]
    assert changes[1].change == "phase_changed"


@pytest.mark.parametrize("preference", ["swimming", "cycling", "walking"])
def test_protect_is_walking_only_whatever_the_aerobic_preference(preference: str) -> None:
    """Protect prescribes walking level 1 (10 min) and nothing that loads the back."""
    rx = prescribed(make_start(cause="sprain_strain", preferences=(preference, "pilates")))
    assert [(e.exercise_id, e.level, e.minutes) for e in rx.exercises] == [("walking", 1, 10)]


def test_onset_defaults_to_rehab_started_date_in_its_own_offset() -> None:
    """Without onset_date, onset is the RehabStarted's local date, and days count locally."""
    minus5 = timezone(timedelta(hours=-5))
    start = make_start(
        cause="sprain_strain", onset_date=None, occurred_at=datetime(2024, 3, 4, 22, tzinfo=minus5)
    )
    # 2024-03-11 21:00 at -05:00 is 2024-03-12 UTC, but locally only day 7
    same_local_day = make_pain(occurred_at=datetime(2024, 3, 10, 21, tzinfo=minus5))
    assert prescribed(start, same_local_day).phase == "protect"
    day7 = make_pain(occurred_at=datetime(2024, 3, 11, 21, tzinfo=minus5))
    assert prescribed(start, day7).phase == "build"


@pytest.mark.parametrize(
    ("days", "stage"), [(41, "acute"), (42, "subacute"), (83, "subacute"), (84, "chronic")]
)
def test_stage_boundaries_at_6_and_12_weeks(days: int, stage: str) -> None:
    """Stage is acute under 42 days, subacute to 83, chronic from 84."""
    assert prescribed(make_start(onset_date=onset_days_ago(days))).stage == stage


def test_program_is_core_four_plus_walking_by_default() -> None:
    """With no preferences: the four core exercises and walking, all at level 1."""
    rx = prescribed(make_start())
    assert [e.exercise_id for e in rx.exercises] == [
        "cat_camel",
        "rib_closure",
        "spine_curl_bridge",
        "knee_hugs",
        "walking",
    ]
    assert {e.level for e in rx.exercises} == {1}
    assert rx.sessions_per_week == 3


@pytest.mark.parametrize("preference", ["strength", "pilates"])
def test_strength_or_pilates_adds_bird_dog(preference: str) -> None:
    """Preferring strength or pilates adds bird_dog to the program."""
    rx = prescribed(make_start(preferences=(preference,)))
    assert "bird_dog" in [e.exercise_id for e in rx.exercises]
    assert "bird_dog" not in [
        e.exercise_id for e in prescribed(make_start(preferences=("yoga",))).exercises
    ]


def test_aerobic_slot_is_first_of_walking_swimming_cycling_preferred() -> None:
    """The aerobic slot takes the first aerobic preference listed (swimming here)."""
    rx = prescribed(make_start(preferences=("yoga", "swimming", "cycling"), sessions_per_week=5))
    assert rx.exercises[-1].exercise_id == "swimming"
    assert rx.exercises[-1].name == "Swimming"
    assert rx.exercises[-1].minutes == 10
    assert rx.sessions_per_week == 5


def test_doses_follow_the_ladder_with_unused_fields_null() -> None:
    """Level 1 doses come from the ladder; knee_hugs is 3 x 30 s hold, with no reps."""
    rx = prescribed(make_start())
    hugs = next(e for e in rx.exercises if e.exercise_id == "knee_hugs")
    assert (hugs.sets, hugs.reps, hugs.hold_seconds, hugs.minutes) == (3, None, 30, None)
    cat = rx.exercises[0]
    assert (cat.name, cat.sets, cat.reps, cat.hold_seconds) == ("Cat/Camel", 1, 8, None)


@pytest.mark.parametrize(
    ("flag", "urgency"), [("saddle_numbness", "emergency"), ("fever_or_unwell", "urgent")]
)
def test_red_flag_at_intake_refers_with_its_urgency(flag: str, urgency: str) -> None:
    """A red flag at intake: phase refer, no exercises, referral of the flag's urgency."""
    rx = prescribed(make_start(red_flags=(flag,)))
    assert rx.phase == "refer"
    assert rx.exercises == ()
    assert rx.referral is not None
    assert rx.referral.urgency == urgency
    assert rx.reasons[0].code == "red_flag"


def test_the_most_urgent_flag_wins() -> None:
    """An urgent and an emergency flag together refer as an emergency."""
    rx = prescribed(make_start(red_flags=("cancer_history", "bladder_bowel_change")))
    assert rx.referral is not None
    assert rx.referral.urgency == "emergency"


def test_red_flag_logged_later_refers_and_stays_until_a_new_episode() -> None:
    """A red flag in a later pain log refers; it stays until a new RehabStarted clears it."""
    flagged = make_pain(occurred_at=at(3), red_flags=("progressive_leg_weakness",))
    state, changes = run([make_start(), flagged, make_pain(occurred_at=at(9), score=0)])
    assert decide(state).phase == "refer"  # type: ignore[union-attr]
    assert changes[-1].change == "referred"
    assert changes[-1].referral is not None
    assert changes[-1].referral.urgency == "emergency"
    state, changes = run([make_start(occurred_at=at(10))], state)
    assert decide(state).phase == "build"  # type: ignore[union-attr]
    assert changes[-1].change == "started"
    assert changes[-1].version == 3


def test_red_flag_logged_before_intake_is_carried_into_the_first_episode() -> None:
    """Red flags logged before the first RehabStarted still refer."""
    early = make_pain(occurred_at=at(-1), red_flags=("major_trauma",))
    assert prescribed(early, make_start()).phase == "refer"


def test_baseline_is_the_72h_median_else_the_last_known() -> None:
    """Baseline is the 72 h median of baseline and morning scores, else the last known."""
    logs = [
        make_pain(occurred_at=at(0, 1), score=9),
        make_pain(occurred_at=at(1, 1), score=2),
        make_pain(occurred_at=at(2, 1), score=4, context="morning"),
        make_pain(occurred_at=at(3, 0), score=3),
        make_pain(occurred_at=at(3, 1), score=8, context="after_exercise"),
    ]
    state, _ = run(logs)
    assert baseline_at(state, at(3, 2), DEFAULT_RULES) == 3.0  # 9 is older than 72 h
    # exactly 72 h old still counts: median of 9, 2, 4, 3
    assert baseline_at(state, at(3, 1), DEFAULT_RULES) == 3.5
    # nothing in the window: the baseline known when the last score was logged
    assert baseline_at(state, T0 + timedelta(days=30), DEFAULT_RULES) == 3.5
    assert state.last_baseline == 3.5

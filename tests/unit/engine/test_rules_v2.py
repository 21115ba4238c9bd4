"""Rule set 2 at its boundaries: given events, when decided, then this prescription.

Each test names the RULES.md v2 rule it pins; where v1 answered otherwise the
same events are also run under rule set 1 to show the difference.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.prescriber.engine import DEFAULT_RULES, Prescription, RuleSet, decide
from shared.events import Input, PrescriptionChanged
from tests.unit.engine.factories import (
    T0,
    V1,
    answered,
    at,
    daily_baselines,
    levels,
    make_pain,
    make_session,
    make_start,
    onset_days_ago,
    run,
)

V2 = DEFAULT_RULES


def verdict_under(rules: RuleSet, *events: Input, baseline: int = 3) -> str:
    """Start at T0, baselines on days 0-1, the events, then a late log to finalize."""
    tail = make_pain(occurred_at=at(5, 7), score=baseline)
    state, _ = run(
        [make_start(), *daily_baselines(0, 1, score=baseline), *events, tail], rules=rules
    )
    assert state.program is not None
    assert state.program.finals, "no final verdict yet"
    return state.program.finals[-1].verdict


def decided(events: list[Input], rules: RuleSet = V2) -> Prescription:
    rx = decide(run(events, rules=rules)[0], rules)
    assert rx is not None
    return rx


def codes(rx: Prescription | PrescriptionChanged) -> list[str]:
    return [r.code for r in rx.reasons]


def scores(*pairs: tuple[float, int], context: str = "morning") -> list[Input]:
    """Pain logs at (day at 07:00, score)."""
    return [make_pain(occurred_at=at(d, 7), score=s, context=context) for d, s in pairs]


# -- section 4: verdicts ------------------------------------------------------


@pytest.mark.parametrize(
    ("after", "morning", "v1", "v2"),
    [(4, 3, "amber", "green"), (3, 4, "red", "green"), (3, 5, "red", "red")],
)
def test_one_point_above_baseline_is_noise_two_is_a_rise(
    after: int, morning: int, v1: str, v2: str
) -> None:
    """Tolerance 1: after or next day at baseline + 1 still counts as at baseline; + 2 is RED."""
    events = answered(1, during=1, after=after, morning=morning)
    assert verdict_under(V1, *events) == v1
    assert verdict_under(V2, *events) == v2


def test_a_next_day_baseline_log_stands_in_for_a_missing_morning_log() -> None:
    """With no morning log, a baseline log in [s+6 h, s+36 h] is the next-day score."""
    quiet = [*answered(1, during=1, after=2, morning=None), *scores((2, 3), context="baseline")]
    assert verdict_under(V2, *quiet) == "green"
    assert verdict_under(V1, *quiet) == "amber"
    risen = [*answered(1, during=1, after=2, morning=None), *scores((2, 5), context="baseline")]
    assert verdict_under(V2, *risen) == "red"


def test_a_morning_log_wins_over_an_earlier_baseline_log() -> None:
    """A baseline log in the window does not finalize: the morning log that follows decides."""
    s = at(1, 10)
    events = [
        *answered(1, during=1, after=2, morning=5, morning_hours=20),
        make_pain(occurred_at=s + timedelta(hours=8), score=3, context="baseline"),
    ]
    assert verdict_under(V2, *events) == "red"


def test_a_baseline_log_outside_the_window_is_not_the_next_day() -> None:
    """A baseline log 37 h after the session is too late to stand in."""
    late = make_pain(occurred_at=at(1, 10) + timedelta(hours=37), score=3, context="baseline")
    events = [*answered(1, during=1, after=2, morning=None), late]
    assert verdict_under(V2, *events) == "amber"


@pytest.mark.parametrize(
    ("base", "during", "expected"), [(3, 3, "green"), (3, 4, "amber"), (2, 3, "amber")]
)
def test_c1_with_resting_pain_3_is_met_when_exercise_does_not_raise_it(
    base: int, during: int, expected: str
) -> None:
    """C1: resting pain >= 3 and during <= resting pain is met; with resting 2 it needs < 3."""
    events = answered(1, during=during, after=base, morning=base)
    assert verdict_under(V2, *events, baseline=base) == expected
    if (base, during) == (3, 3):
        assert verdict_under(V1, *events, baseline=base) == "amber"


def test_a_missing_after_log_does_not_block_green_when_the_next_day_is_at_baseline() -> None:
    """C2 needs no after log when the next-day score is known and at baseline."""
    events = answered(1, during=1, after=None, morning=3)
    assert verdict_under(V2, *events) == "green"
    assert verdict_under(V1, *events) == "amber"


def test_a_missing_after_and_next_day_is_amber_after_36_hours() -> None:
    """Without after and next-day logs a session stays AMBER, as in v1."""
    assert verdict_under(V2, *answered(1, during=1, after=None, morning=None)) == "amber"


# -- section 5: regress once per signal -----------------------------------------


def _at_level_3() -> list[Input]:
    """Greens every other day from day 1: level 2 on day 9, level 3 on day 16; baselines 2."""
    greens = [e for d in (1, 3, 5, 8, 10, 12, 15) for e in answered(d)]
    return [make_start(), *daily_baselines(0, 30), *greens]


def test_red_verdicts_made_final_by_the_same_log_step_down_once() -> None:
    """Two RED sessions settled by one morning log: one step down in v2, two in v1."""
    reds = [make_session(occurred_at=at(17, h), pain_during=5) for h in (10, 14)]
    events = [*_at_level_3(), *reds, *scores((18, 2))]
    assert set(levels(run(events)[0]).values()) == {2}
    assert set(levels(run(events, rules=V1)[0], V1).values()) == {1}


def test_a_red_within_48_hours_of_a_regress_does_not_step_again() -> None:
    """A RED final 25 h after a regress holds; one final 72 h after steps down again."""
    first = answered(17, during=5)  # final day 18 06:00: 3 -> 2
    soon = answered(18, during=5, morning_hours=20)  # final day 19 06:00: within 48 h
    events = [*_at_level_3(), *first, *soon]
    state, changes = run(events)
    assert set(levels(state).values()) == {2}
    assert [c.change for c in changes].count("regressed") == 1
    later = answered(20, during=5)  # final day 21 06:00: 72 h after the regress
    assert set(levels(run([*events, *later])[0]).values()) == {1}


# -- section 6: flares --------------------------------------------------------


def _build_at_2() -> list[Input]:
    return [make_start(), *daily_baselines(0, 9, score=2)]


def test_one_noisy_morning_is_not_a_flare_two_in_a_row_are() -> None:
    """v2: one score 2 above the median is not a flare; the next day's too starts one."""
    one = [*_build_at_2(), *scores((10, 4), (11, 2))]
    assert decided(one).phase == "build"
    assert "deloaded" in [c.change for c in run(one, rules=V1)[1]]
    two = [*_build_at_2(), *scores((10, 4), (11, 4))]
    state, changes = run(two)
    assert changes[-1].change == "deloaded"
    assert codes(changes[-1])[0] == "flare_sustained_rise"
    assert state.program is not None
    assert state.program.flare is not None
    assert state.program.flare.since == at(10, 7)  # the rise began with the first score
    assert state.program.flare.pre_baseline == 2


def test_a_rise_needs_its_scores_on_different_days_at_most_3_apart() -> None:
    """Two high scores the same day, or 4 days apart, start no flare; 3 days apart do."""
    same_day = [*_build_at_2(), make_pain(occurred_at=at(10, 7), score=4, context="morning")]
    same_day.append(make_pain(occurred_at=at(10, 19), score=4))
    assert decided(same_day).phase == "build"
    base = [make_start(), *daily_baselines(0, 6, score=2)]
    assert decided([*base, *scores((10, 4), (14, 4))]).phase == "build"
    assert decided([*base, *scores((10, 4), (13, 4))]).phase == "flare"


def test_a_score_back_down_breaks_the_rise() -> None:
    """High, normal, high on consecutive days is no flare."""
    assert decided([*_build_at_2(), *scores((10, 4), (11, 2), (12, 4))]).phase == "build"


@pytest.mark.parametrize(("score", "phase"), [(5, "build"), (6, "flare")])
def test_one_score_4_above_the_median_starts_a_flare_alone(score: int, phase: str) -> None:
    """+4 over the 7-day median is a flare on one score; +3 waits for the next."""
    rx = decided([*_build_at_2(), *scores((10, score))])
    assert rx.phase == phase
    if phase == "flare":
        assert codes(rx)[0] == "flare_big_jump"
        assert rx.sessions_per_week == 7  # walking every day


@pytest.mark.parametrize(("hours", "referred"), [(-0.5, False), (0, True)])
def test_a_flare_not_settled_after_14_days_is_referred_and_continues(
    hours: float, referred: bool
) -> None:
    """14 days after it began an unsettled flare adds routine flare_not_settling."""
    events = [*_build_at_2(), *scores(*((d, 6) for d in range(10, 24)))]
    events.append(make_pain(occurred_at=at(24, 7 + hours), score=6, context="during_exercise"))
    rx = decided(events)
    assert rx.phase == "flare"
    assert ("flare_not_settling" in codes(rx)) is referred
    assert (rx.referral is not None) is referred
    if rx.referral is not None:
        assert (rx.referral.urgency, rx.referral.reason) == ("routine", "flare_not_settling")


def test_the_referral_for_a_flare_ends_with_it() -> None:
    """A flare that settles after its referral resumes without it."""
    events = [*_build_at_2(), *scores(*((d, 6) for d in range(10, 25)))]
    rx = decided([*events, *scores((25, 2), (26, 2), (27, 2), (28, 2))])
    assert rx.phase == "build"
    assert rx.referral is None


# -- section 8: return to run -------------------------------------------------


def _runner(last_day: int = 40) -> list[Input]:
    """Goal running, baselines 2, greens every other day or so."""
    days = (1, 3, 5, 8, 10, 12, 15, 17, 19, 22, 24, 26, 29, 31, 33, 36, 38)
    greens = [e for d in days if d <= last_day for e in answered(d)]
    return [make_start(goals=("running",)), *daily_baselines(0, last_day), *greens]


def _first(changes: list[PrescriptionChanged], phase: str) -> PrescriptionChanged:
    return next(c for c in changes if c.phase == phase)


def test_return_to_run_waits_for_aerobic_level_3_and_is_a_step() -> None:
    """v2 enters return_to_run only with walking at level 3, as a step 7 days after the last."""
    _, changes = run(_runner())
    entry = _first(changes, "return_to_run")
    before = changes[changes.index(entry) - 1]
    assert {e.exercise_id: e.level for e in before.exercises}["walking"] == 3
    assert entry.occurred_at - before.occurred_at >= timedelta(days=7)
    assert (entry.change, codes(entry)[0]) == ("phase_changed", "return_to_run")
    later = changes[changes.index(entry) + 1 :]
    assert later
    assert later[0].occurred_at - entry.occurred_at >= timedelta(days=7)
    _, old = run(_runner(), rules=V1)
    assert _first(old, "return_to_run").occurred_at < entry.occurred_at
    assert {e.exercise_id: e.level for e in old[0].exercises}["walking"] == 1


def test_a_flare_in_return_to_run_resumes_into_it_one_run_level_down() -> None:
    """v2 resumes a runner's flare into return_to_run, the run ladder one level lower."""
    state, _ = run(_runner())
    rx = decide(state)
    assert rx is not None
    assert rx.phase == "return_to_run"
    run_level = {e.exercise_id: e.level for e in rx.exercises}["running"]
    assert run_level >= 2
    flare = scores((41, 6), (42, 2), (43, 2), (44, 2))
    state, changes = run([*_runner(), *flare])
    kinds = [c.change for c in changes[-2:]]
    assert kinds == ["deloaded", "resumed"]
    assert changes[-1].phase == "return_to_run"
    assert {e.exercise_id: e.level for e in changes[-1].exercises}["running"] == run_level - 1
    _, old = run([*_runner(), *flare], rules=V1)
    assert old[-1].phase == "build"


# -- section 7: escalation ----------------------------------------------------


def test_the_six_week_check_counts_from_the_program_start() -> None:
    """Onset 40 days before intake: no referral on program day 2 (v1 referred then)."""
    start = make_start(onset_date=onset_days_ago(40))
    events = [start, *scores(*((d, 5) for d in range(3)))]
    assert decided(events).referral is None
    assert decided(events, V1).referral is not None


def test_the_check_waits_for_the_first_score_on_or_after_day_42() -> None:
    """No score on day 42: a session that day does not check; the day-45 score refers."""
    flat = [make_start(), *scores(*((d, 5) for d in range(40)))]
    session = make_session(occurred_at=at(43, 10), pain_during=2)
    assert decided([*flat, session]).referral is None
    rx = decided([*flat, session, *scores((45, 5))])
    assert rx.referral is not None
    assert rx.referral.reason == "no_improvement_6_weeks"


@pytest.mark.parametrize(("day", "referred"), [(41, False), (42, True)])
def test_no_improvement_is_judged_on_program_day_42(day: int, referred: bool) -> None:
    """Flat pain of 5 from the start: the referral comes on program day 42, not 41."""
    rx = decided([make_start(), *scores(*((d, 5) for d in range(day + 1)))])
    assert (rx.referral is not None) is referred
    assert rx.phase == "build"


def test_the_first_baseline_is_the_first_score_of_the_program() -> None:
    """A score of 7 logged before intake is not the first baseline; day 1's 4 is."""
    early = make_pain(occurred_at=T0 - timedelta(days=1), score=7, context="morning")
    events = [early, make_start(), *scores(*((d, 4) for d in range(1, 43)))]
    state, _ = run(events)
    assert state.program is not None
    assert state.program.first_baseline == 4
    rx = decide(state)
    assert rx is not None
    assert rx.referral is not None
    assert rx.referral.reason == "no_improvement_6_weeks"


@pytest.mark.parametrize(("score", "referred"), [(2, False), (3, True)])
def test_a_first_baseline_of_2_or_less_is_exempt(score: int, referred: bool) -> None:
    """Flat pain at 2 is not 'no improvement'; flat pain at 3 is."""
    rx = decided([make_start(), *scores(*((d, score) for d in range(43)))])
    assert ("no_improvement_6_weeks" in codes(rx)) is referred


def test_medium_start_back_risk_is_noted_on_the_first_prescription_only() -> None:
    """Overall 4 with psychosocial 3: a reason code on the first change, no referral."""
    answers = (True, False, False, False, True, True, True, False, False)
    _, changes = run([make_start(start_back=answers), *_at_level_3()[1:]])
    assert "start_back_medium_risk" in codes(changes[0])
    assert changes[0].referral is None
    assert all("start_back_medium_risk" not in codes(c) for c in changes[1:])
    high = (False, False, False, False, True, True, True, True, False)
    _, changes = run([make_start(start_back=high)])
    assert "start_back_medium_risk" not in codes(changes[0])
    assert changes[0].referral is not None


# -- section 1: red flags -----------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "urgency", "text"),
    [
        ("sexual_dysfunction", "emergency", "go to an emergency department now"),
        ("osteoporosis", "urgent", "see a clinician within 24 hours"),
    ],
)
def test_v2_red_flags_refer_with_text_by_urgency(flag: str, urgency: str, text: str) -> None:
    """The v2 flags refer on the log that reports them, with the urgency's own advice."""
    report = make_pain(occurred_at=at(3, 7), red_flags=(flag,))
    state, changes = run([make_start(), report])
    assert changes[-1].caused_by == report.event_id
    assert changes[-1].change == "referred"
    assert changes[-1].phase == "refer"
    referral = changes[-1].referral
    assert referral is not None
    assert referral.urgency == urgency
    assert referral.reason.startswith(text)
    assert flag in referral.reason
    assert decide(state) is not None


def test_v1_red_flag_text_is_unchanged() -> None:
    """Rule set 1 still says 'red flags: ...' whatever the urgency."""
    report = make_pain(occurred_at=at(3, 7), red_flags=("saddle_numbness",))
    _, changes = run([make_start(), report], rules=V1)
    assert changes[-1].referral is not None
    assert changes[-1].referral.reason == "red flags: saddle_numbness"


@pytest.mark.parametrize(("gap", "referred"), [(6, True), (7, False)])
def test_leg_pain_below_the_knee_on_two_days_within_7_adds_a_radicular_review(
    gap: int, referred: bool
) -> None:
    """Two days of leg pain below the knee 6 days apart refer routinely; 7 apart do not."""
    legs = [
        make_pain(occurred_at=at(d, 7), score=3, context="morning", location="leg_below_knee")
        for d in (8, 8 + gap)
    ]
    rx = decided([make_start(), *daily_baselines(0, 0), *legs])
    assert ("radicular_pain_review" in codes(rx)) is referred
    assert rx.phase == "build"  # the program continues
    if referred:
        assert rx.referral is not None
        assert (rx.referral.urgency, rx.referral.reason) == ("routine", "radicular_pain_review")
        _, changes = run([make_start(), *daily_baselines(0, 0), *legs])
        assert (changes[-1].change, changes[-1].caused_by) == ("referred", legs[1].event_id)
    assert decided([make_start(), *daily_baselines(0, 0), *legs], V1).referral is None


# -- section 2: walking every day -------------------------------------------------


def test_protect_prescribes_walking_every_day() -> None:
    """A sprain in its first week walks daily in v2 (v1: the patient's own number)."""
    start = make_start(cause="sprain_strain", onset_date=onset_days_ago(2), sessions_per_week=3)
    assert decided([start]).sessions_per_week == 7
    assert decided([start], V1).sessions_per_week == 3


# -- moving to v2 ---------------------------------------------------------------


def test_the_first_change_under_v2_says_rules_updated() -> None:
    """A user folded under v1 whose next change is decided under v2 gets rules_updated once."""
    state, _ = run([make_start(), *daily_baselines(0, 9, score=2)], rules=V1)
    state, changes = run([*scores((10, 6), (11, 2), (12, 2), (13, 2))], state)
    assert changes
    assert changes[0].rules_version == "2"
    assert "rules_updated" in codes(changes[0])
    assert all("rules_updated" not in codes(c) for c in changes[1:])


# -- choices where the cohort showed RULES.md needed one --------------------------


def test_a_rise_is_judged_by_day_a_lower_score_the_same_day_does_not_break_it() -> None:
    """Morning 4, evening 2, next morning 4 over a median of 1: a sustained rise."""
    base = [make_start(), *daily_baselines(0, 9, score=1)]
    evening = make_pain(occurred_at=at(10, 20), score=2)
    rx = decided([*base, *scores((10, 4)), evening, *scores((11, 4))])
    assert rx.phase == "flare"
    assert codes(rx)[0] == "flare_sustained_rise"


def test_no_step_up_on_a_morning_above_the_baseline() -> None:
    """Two greens settled by a morning 1 above baseline hold; a calm morning steps up."""
    greens = [e for d in (1, 3, 5) for e in answered(d)]
    course = [make_start(), *daily_baselines(0, 12), *greens]
    session = answered(8, morning=None)
    raised = [*course, *session, *scores((9, 3))]  # at baseline + 1: still GREEN
    calm = [*course, *session, *scores((9, 2))]
    assert set(levels(run(raised)[0]).values()) == {1}
    assert set(levels(run(calm)[0]).values()) == {2}
    assert set(levels(run(raised, rules=V1)[0], V1).values()) == {1}  # v1: 3 > 2 is RED


def test_a_step_down_at_level_1_is_no_step() -> None:
    """A RED verdict at level 1 moves nothing, so it does not restart the 7-day spacing."""
    red = answered(4, during=6)  # final on day 5
    greens = [e for d in (5, 6) for e in answered(d)]
    events = [make_start(), *daily_baselines(0, 9), *red, *greens]
    assert set(levels(run(events)[0]).values()) == {2}  # day 7: one week after the start
    assert set(levels(run(events, rules=V1)[0], V1).values()) == {1}

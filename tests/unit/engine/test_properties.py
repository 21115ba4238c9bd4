"""The fold's laws, checked with hypothesis over random valid histories of one user,
under every built-in rule set."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.prescriber.engine import (
    RuleSet,
    decide,
    dump_state,
    emit,
    evolve,
    initial,
    load_state,
    react,
    replay,
)
from services.prescriber.engine.change import same
from services.prescriber.engine.rules import RULE_SETS
from services.prescriber.engine.state import State
from shared.events import (
    ClinicianReviewed,
    Input,
    OutcomeRecorded,
    PainLogged,
    RehabStarted,
    SessionCompleted,
)
from tests.unit.engine.factories import T0, USER

FLAGS = ("saddle_numbness", "fever_or_unwell", "major_trauma", "osteoporosis")
LOCATIONS = (None, "lower_back", "leg_below_knee")
PREFS = ("strength", "pilates", "yoga", "walking", "swimming", "cycling", "running")
SESSIONS = ("a", "b", "c")
LAWS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVERY_RULE_SET = pytest.mark.parametrize("rules", list(RULE_SETS.values()), ids=list(RULE_SETS))


@st.composite
def starts(draw: st.DrawFn, minutes: int) -> RehabStarted:
    return RehabStarted(
        event_id=UUID(int=0),
        user_id=USER,
        occurred_at=T0 + timedelta(minutes=minutes),
        onset_date=draw(st.none() | st.dates(T0.date() - timedelta(days=100), T0.date())),
        cause=draw(st.sampled_from(("sprain_strain", "gradual", "unknown"))),
        goals=tuple(draw(st.lists(st.sampled_from(("daily_life", "running")), max_size=2))),
        preferences=tuple(draw(st.lists(st.sampled_from(PREFS), max_size=3))),
        sessions_per_week=draw(st.integers(1, 7)),
        red_flags=(draw(st.sampled_from(FLAGS)),) if draw(st.integers(0, 9)) == 0 else (),
        start_back=draw(st.none() | st.tuples(*[st.booleans()] * 9)),
    )


EXERCISES = ("cat_camel", "rib_closure", "walking", "running", "bird_dog")
ACTIONS = (
    "clear_red_flags",
    "set_levels",
    "exclude_exercise",
    "include_exercise",
    "hold",
    "release",
    "acknowledge_referral",
)
RANGES = {"rmdq": (0, 24), "odi": (0, 100), "psfs": (0, 10), "pgic": (1, 7)}


@st.composite
def reviews(draw: st.DrawFn, at: datetime) -> Input:
    """A clinician's review: any action with its argument."""
    action = draw(st.sampled_from(ACTIONS))
    arguments: dict[str, object] = {}
    if action == "set_levels":
        arguments["levels"] = draw(
            st.dictionaries(st.sampled_from(EXERCISES), st.integers(1, 5), min_size=1)
        )
    elif action in ("exclude_exercise", "include_exercise"):
        arguments["exercise_id"] = draw(st.sampled_from(EXERCISES))
    return ClinicianReviewed(
        event_id=UUID(int=0),
        user_id=USER,
        occurred_at=at,
        action=action,  # type: ignore[arg-type]
        reviewed_by="c",
        **arguments,  # type: ignore[arg-type]
    )


@st.composite
def outcomes(draw: st.DrawFn, at: datetime) -> Input:
    """An outcome measure: any instrument, a score in its range."""
    instrument = draw(st.sampled_from(tuple(RANGES)))
    low, high = RANGES[instrument]
    return OutcomeRecorded(
        event_id=UUID(int=0),
        user_id=USER,
        occurred_at=at,
        instrument=instrument,  # type: ignore[arg-type]
        score=float(draw(st.integers(low, high))),
    )


@st.composite
def inputs(draw: st.DrawFn, minutes: int) -> Input:
    at = T0 + timedelta(minutes=minutes)
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(starts(minutes))
    if kind < 7:
        return SessionCompleted(
            event_id=UUID(int=0),
            user_id=USER,
            occurred_at=at,
            session_id=draw(st.sampled_from(SESSIONS)),
            completed=draw(st.booleans()),
            difficulty=draw(st.sampled_from(("easy", "ok", "hard"))),
            pain_during=draw(st.none() | st.integers(0, 10)),
            exercises=draw(
                st.sampled_from(((), ({"exercise_id": "running", "sets": 1, "minutes": 20},)))
            ),
        )
    if kind == 19:
        return draw(reviews(at) | outcomes(at))
    return PainLogged(
        event_id=UUID(int=0),
        user_id=USER,
        occurred_at=at,
        score=draw(st.integers(0, 10)),
        context=draw(st.sampled_from(("baseline", "morning", "during_exercise", "after_exercise"))),
        session_id=draw(st.none() | st.sampled_from(SESSIONS)),
        red_flags=(draw(st.sampled_from(FLAGS)),) if draw(st.integers(0, 60)) == 0 else (),
        location=draw(st.sampled_from(LOCATIONS)),
    )


@st.composite
def histories(draw: st.DrawFn, max_events: int = 70) -> list[Input]:
    """A RehabStarted then logs, sessions, some reviews and outcomes over ~10 weeks; ids unique."""
    days = draw(st.sampled_from((3, 20, 70)))  # dense weeks exercise the verdict windows
    offsets = draw(st.lists(st.integers(1, days * 24 * 60), max_size=max_events))
    events: list[Input] = [draw(starts(0)), *[draw(inputs(m)) for m in offsets]]
    return [e.model_copy(update={"event_id": UUID(int=i + 1)}) for i, e in enumerate(events)]


def in_order(events: list[Input]) -> list[Input]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


def reacted(events: list[Input], rules: RuleSet) -> tuple[State, list[object]]:
    state, changes = initial(USER), []
    for event in in_order(events):
        state, change = react(state, event, rules)
        changes.append(change)
    return state, changes


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_same_events_same_prescriptions(rules: RuleSet, events: list[Input]) -> None:
    """Folding the same events twice gives the same changes and the same prescription."""
    one, two = reacted(events, rules), reacted(events, rules)
    assert one == two
    assert decide(one[0], rules) == decide(replay(events, rules), rules)


@EVERY_RULE_SET
@LAWS
@given(histories(), st.integers(0, 70))
def test_snapshot_split_equals_folding_all(rules: RuleSet, events: list[Input], cut: int) -> None:
    """Fold a prefix, snapshot and restore it, fold the rest: the same state as folding all."""
    ordered = in_order(events)
    state, _ = reacted(ordered[:cut], rules)
    state = load_state(dump_state(state))
    for event in ordered[cut:]:
        state, _ = react(state, event, rules)
    assert state == reacted(ordered, rules)[0]


@EVERY_RULE_SET
@LAWS
@given(histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_converges(rules: RuleSet, events: list[Input], rnd: object) -> None:
    """Any permutation replays to the same prescription; reacting with refolds converges too."""
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert decide(replay(shuffled, rules), rules) == decide(replay(events, rules), rules)
    state, seen = initial(USER), []
    for event in shuffled:
        seen.append(event)
        state, _ = react(state, event, rules)
        if state.needs_refold:
            state, _ = emit(replay(seen, rules, last=state.last), event.event_id, rules)
    assert decide(state, rules) == decide(replay(events, rules), rules)


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_levels_stay_within_the_ladder(rules: RuleSet, events: list[Input]) -> None:
    """Every level, stored or prescribed, stays within 1..5."""
    state = initial(USER)
    for event in in_order(events):
        state = evolve(state, event, rules)
        if state.program is not None:
            assert all(1 <= level <= 5 for level in state.program.levels)
            assert 1 <= state.program.run_level <= 5
        rx = decide(state, rules)
        assert rx is None or all(1 <= e.level <= 5 for e in rx.exercises)


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_red_flag_refers_until_a_new_episode(rules: RuleSet, events: list[Input]) -> None:
    """Once a red flag is seen the phase stays refer until the next RehabStarted or (rule
    set 2) a clinician's clear_red_flags; a flag reported after either gates again."""
    state, flagged = initial(USER), False
    for event in in_order(events):
        if isinstance(event, RehabStarted):
            flagged = bool(event.red_flags) or (flagged and state.episode is None)
        elif isinstance(event, PainLogged) and event.red_flags:
            flagged = True
        elif isinstance(event, ClinicianReviewed) and rules.clinician_reviews:
            flagged = flagged and event.action != "clear_red_flags"
        state = evolve(state, event, rules)
        rx = decide(state, rules)
        if rx is not None:
            assert (rx.phase == "refer") is flagged
            if flagged:
                assert rx.exercises == ()
            elif rx.exercises == ():  # only a clinician's exclusions empty a program
                assert state.program is not None
                assert state.program.excluded


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_protect_is_walking_only(rules: RuleSet, events: list[Input]) -> None:
    """Phase protect never prescribes anything but the walking slot, and nothing flares it."""
    _, changes = reacted(events, rules)
    for change in changes:
        if change is not None and change.phase == "protect":  # type: ignore[attr-defined]
            ids = [e.exercise_id for e in change.exercises]  # type: ignore[attr-defined]
            assert ids == ["walking"]


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_changes_only_on_difference_with_rising_versions(
    rules: RuleSet, events: list[Input]
) -> None:
    """Consecutive changes differ in what they prescribe and count versions 1, 2, 3, ..."""
    emitted = [c for c in reacted(events, rules)[1] if c is not None]
    assert [c.version for c in emitted] == list(range(1, len(emitted) + 1))  # type: ignore[attr-defined]
    for before, after in itertools.pairwise(emitted):
        key = lambda c: (c.phase, c.exercises, c.sessions_per_week, c.referral)  # type: ignore[attr-defined]  # noqa: E731
        assert key(before) != key(after) or after.change == "started"  # type: ignore[attr-defined]


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_the_last_change_always_answers_decide(rules: RuleSet, events: list[Input]) -> None:
    """After every event the last change emitted is what decide says: no change is skipped."""
    state = initial(USER)
    for event in in_order(events):
        state, _ = react(state, event, rules)
        rx = decide(state, rules)
        assert rx is None or same(rx, state.last)

"""The fold's laws, checked with hypothesis over random valid histories of one user."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.prescriber.engine import (
    decide,
    dump_state,
    emit,
    evolve,
    initial,
    load_state,
    react,
    replay,
)
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

FLAGS = ("saddle_numbness", "fever_or_unwell", "major_trauma")
PREFS = ("strength", "pilates", "yoga", "walking", "swimming", "cycling", "running")
SESSIONS = ("a", "b", "c")
LAWS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


def _review(at: datetime) -> Input:
    return ClinicianReviewed(
        event_id=UUID(int=0), user_id=USER, occurred_at=at, action="hold", reviewed_by="c"
    )


def _outcome(at: datetime) -> Input:
    return OutcomeRecorded(
        event_id=UUID(int=0), user_id=USER, occurred_at=at, instrument="odi", score=30
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
        return draw(st.sampled_from((_review, _outcome)))(at)
    return PainLogged(
        event_id=UUID(int=0),
        user_id=USER,
        occurred_at=at,
        score=draw(st.integers(0, 10)),
        context=draw(st.sampled_from(("baseline", "morning", "during_exercise", "after_exercise"))),
        session_id=draw(st.none() | st.sampled_from(SESSIONS)),
        red_flags=(draw(st.sampled_from(FLAGS)),) if draw(st.integers(0, 60)) == 0 else (),
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


def reacted(events: list[Input]) -> tuple[State, list[object]]:
    state, changes = initial(USER), []
    for event in in_order(events):
        state, change = react(state, event)
        changes.append(change)
    return state, changes


@LAWS
@given(histories())
def test_same_events_same_prescriptions(events: list[Input]) -> None:
    """Folding the same events twice gives the same changes and the same prescription."""
    one, two = reacted(events), reacted(events)
    assert one == two
    assert decide(one[0]) == decide(replay(events))


@LAWS
@given(histories(), st.integers(0, 70))
def test_snapshot_split_equals_folding_all(events: list[Input], cut: int) -> None:
    """Fold a prefix, snapshot and restore it, fold the rest: the same state as folding all."""
    ordered = in_order(events)
    state, _ = reacted(ordered[:cut])
    state = load_state(dump_state(state))
    for event in ordered[cut:]:
        state, _ = react(state, event)
    assert state == reacted(ordered)[0]


@LAWS
@given(histories(), st.randoms(use_true_random=False))
def test_any_arrival_order_converges(events: list[Input], rnd: object) -> None:
    """Any permutation replays to the same prescription; reacting with refolds converges too."""
    shuffled = list(events)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert decide(replay(shuffled)) == decide(replay(events))
    state, seen = initial(USER), []
    for event in shuffled:
        seen.append(event)
        state, _ = react(state, event)
        if state.needs_refold:
            state, _ = emit(replay(seen, last=state.last), event.event_id)
    assert decide(state) == decide(replay(events))


@LAWS
@given(histories())
def test_levels_stay_within_the_ladder(events: list[Input]) -> None:
    """Every level, stored or prescribed, stays within 1..5."""
    state = initial(USER)
    for event in in_order(events):
        state = evolve(state, event)
        if state.program is not None:
            assert all(1 <= level <= 5 for level in state.program.levels)
            assert 1 <= state.program.run_level <= 5
        rx = decide(state)
        assert rx is None or all(1 <= e.level <= 5 for e in rx.exercises)


@LAWS
@given(histories())
def test_red_flag_refers_until_a_new_episode(events: list[Input]) -> None:
    """Once a red flag is seen the phase stays refer until the next RehabStarted."""
    state, flagged = initial(USER), False
    for event in in_order(events):
        if isinstance(event, RehabStarted):
            flagged = bool(event.red_flags) or (flagged and state.episode is None)
        elif isinstance(event, PainLogged) and event.red_flags:
            flagged = True
        state = evolve(state, event)
        rx = decide(state)
        if rx is not None:
            assert (rx.phase == "refer") is flagged
            assert (rx.exercises == ()) is flagged


@LAWS
@given(histories())
def test_protect_is_walking_only(events: list[Input]) -> None:
    """Phase protect never prescribes anything but the walking slot, and nothing flares it."""
    _, changes = reacted(events)
    for change in changes:
        if change is not None and change.phase == "protect":  # type: ignore[attr-defined]
            ids = [e.exercise_id for e in change.exercises]  # type: ignore[attr-defined]
            assert ids == ["walking"]


@LAWS
@given(histories())
def test_changes_only_on_difference_with_rising_versions(events: list[Input]) -> None:
    """Consecutive changes differ in what they prescribe and count versions 1, 2, 3, ..."""
    emitted = [c for c in reacted(events)[1] if c is not None]
    assert [c.version for c in emitted] == list(range(1, len(emitted) + 1))  # type: ignore[attr-defined]
    for before, after in itertools.pairwise(emitted):
        key = lambda c: (c.phase, c.exercises, c.sessions_per_week, c.referral)  # type: ignore[attr-defined]  # noqa: E731
        assert key(before) != key(after) or after.change == "started"  # type: ignore[attr-defined]

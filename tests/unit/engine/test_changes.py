"""PrescriptionChanged: only on a real difference, deterministic ids, versions, idempotence."""

from __future__ import annotations

from dataclasses import replace
from uuid import uuid5

from services.prescriber.engine import (
    CHANGE_NAMESPACE,
    DEFAULT_RULES,
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
from tests.unit.engine.factories import USER, at, make_pain, make_start, onset_days_ago, run


def test_first_change_is_started_version_1_with_a_uuid5_id() -> None:
    """The first prescription is 'started', version 1, id uuid5(namespace, 'cause:rules')."""
    start = make_start(clinic_id="c1")
    state, change = react(initial(USER), start)
    assert change is not None
    assert (change.change, change.version, change.caused_by) == ("started", 1, start.event_id)
    assert change.event_id == uuid5(CHANGE_NAMESPACE, f"{start.event_id}:2")
    assert change.occurred_at == start.occurred_at
    assert change.rules_version == "2"
    assert state.last == change
    assert state.clinic_id == "c1"


def test_no_change_when_the_prescription_is_the_same() -> None:
    """A pain log that moves nothing emits nothing."""
    state, _ = react(initial(USER), make_start())
    state, change = react(state, make_pain(occurred_at=at(1)))
    assert change is None


def test_stage_or_reasons_alone_do_not_emit() -> None:
    """Crossing from acute to subacute with nothing else different emits no change."""
    quiet = make_pain(occurred_at=at(1), context="during_exercise")  # no baseline: no day-42 check
    state, changes = run([make_start(onset_date=onset_days_ago(41)), quiet])
    assert decide(state).stage == "subacute"  # type: ignore[union-attr]
    assert len(changes) == 1


def test_same_events_give_the_same_changes() -> None:
    """Reacting to the same events twice gives identical changes (ids included)."""
    events = [make_start(red_flags=()), make_pain(occurred_at=at(3), red_flags=("major_trauma",))]
    assert run(events)[1] == run(events)[1]
    assert [c.version for c in run(events)[1]] == [1, 2]


def test_rules_version_is_part_of_the_change_id() -> None:
    """Another rules version gives another change id for the same cause."""
    start = make_start()
    _, one = react(initial(USER), start)
    _, two = react(initial(USER), start, RuleSet(rules_version="what-if"))
    assert one is not None
    assert two is not None
    assert one.event_id != two.event_id
    assert two.rules_version == "what-if"


def test_duplicate_event_is_ignored() -> None:
    """Folding an event already folded returns the state unchanged and emits nothing."""
    start, pain = make_start(), make_pain(occurred_at=at(1))
    state, _ = run([start, pain])
    again, change = react(state, pain)
    assert again is state
    assert change is None
    assert evolve(state, start) is state


def test_late_event_sets_needs_refold_and_replay_converges() -> None:
    """An event sorting before the latest folded flags needs_refold; replay folds it exactly."""
    start, late, latest = make_start(), make_pain(occurred_at=at(2)), make_pain(occurred_at=at(3))
    state, _ = run([start, latest])
    flagged, change = react(state, late)
    assert flagged.needs_refold
    assert change is None
    assert flagged.now == state.now
    refolded = replay([latest, late, start, late], last=state.last)
    assert not refolded.needs_refold
    assert refolded.last == state.last
    expected, _ = run([start, late, latest])
    assert refolded.scores == expected.scores
    assert emit(refolded, latest.event_id, DEFAULT_RULES) == (refolded, None)


def test_replay_rebuilds_the_state_react_reached() -> None:
    """replay of a history equals reacting one by one, apart from ``last``."""
    events = [make_start(), *[make_pain(occurred_at=at(d, 7), score=d % 4) for d in range(12)]]
    state, _ = run(events)
    assert replace(replay(events), last=state.last) == state


def test_snapshot_round_trips_exactly() -> None:
    """dump_state then load_state gives an equal state, ``last`` included."""
    events = [make_start(preferences=("pilates",)), make_pain(occurred_at=at(2, 7), score=4)]
    state, _ = run(events)
    assert state.last is not None
    assert load_state(dump_state(state)) == state


def test_change_kind_priority_referred_first() -> None:
    """A red flag that also changes the exercises is reported as 'referred'."""
    _, changes = run([make_start(), make_pain(occurred_at=at(1), red_flags=("cancer_history",))])
    assert [c.change for c in changes] == ["started", "referred"]
    assert changes[-1].exercises == ()

"""The live fold (arrival order, one refold rule per event) against its plain definition."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from services.prescriber import engine
from services.prescriber.arrivals import Timeline, fold_arrivals, fold_history, may_refold
from shared import cohort
from shared.events import Input, PrescriptionChanged


def _plain(user_id: str, events: list[Input]) -> tuple[engine.State, list[PrescriptionChanged]]:
    """The rule as written: react; on a late event replay everything so far and emit once."""
    state, changes = engine.initial(user_id), []
    for i, event in enumerate(events):
        folded, change = engine.react(state, event)
        if folded.needs_refold:
            folded = engine.replay(events[: i + 1], last=state.last)
            folded, change = engine.emit(folded, event.event_id)
        state = folded
        changes += [change] if change else []
    return state, changes


def _users() -> dict[str, list[Input]]:
    users: dict[str, list[Input]] = defaultdict(list)
    for event in cohort.events(40, seed=4, weeks=8):
        users[event.user_id].append(event)
    return users


def test_checkpointed_refolds_equal_the_plain_rule() -> None:
    """Refolding from checkpoints gives the same states and changes as replaying from scratch."""
    refolds = 0
    for user_id, events in _users().items():
        folded = fold_history(user_id, events)
        assert (folded.state, folded.changes) == _plain(user_id, events)
        refolds += folded.refolds
    assert refolds > 10  # the cohort's late syncs did exercise the refold path


def test_refused_without_earlier_history_then_equal_with_it() -> None:
    """Without the earlier events a late one makes the fold raise; with them it continues,
    and it needs them only where may_refold said it might."""
    users = _users()
    late = next(ev for ev in users.values() if fold_history(ev[0].user_id, ev).refolds)
    user_id = late[0].user_id
    whole = fold_history(user_id, late)
    refused = 0
    for cut in range(1, len(late), 9):
        head = fold_history(user_id, late[:cut])
        try:
            resumed = fold_arrivals(head.state, late[cut:], None)
        except ValueError:
            refused += 1
            assert may_refold(head.state, late[cut:])
            resumed = fold_arrivals(head.state, late[cut:], late[:cut])
        assert resumed.state == whole.state
        assert head.changes + resumed.changes == whole.changes
    assert refused  # some cut left a late event in the tail


def test_may_refold_holds_whenever_a_fold_refolds() -> None:
    """For every batch of every user's arrivals, a fold that refolds was announced by
    may_refold; a fold it cleared needs no earlier history."""
    cleared = 0
    for chunk in (1, 3, 8):
        for user_id, events in _users().items():
            state = engine.initial(user_id)
            for start in range(0, len(events), chunk):
                batch = events[start : start + chunk]
                if may_refold(state, batch):
                    folded = fold_arrivals(state, batch, events[:start])
                else:
                    cleared += 1
                    folded = fold_arrivals(state, batch, None)
                    assert folded.refolds == 0
                state = folded.state
    assert cleared > 100


def test_a_kept_timeline_carries_refolds_across_batches() -> None:
    """Folding in batches, each late event refolding from the timeline the previous
    fold returned (extended with what came between), equals the plain rule."""
    for chunk in (1, 3, 8):
        for user_id, events in _users().items():
            state, changes = engine.initial(user_id), []
            kept = None  # the timeline and how many events it has seen
            for start in range(0, len(events), chunk):
                batch = events[start : start + chunk]
                earlier: Any = None
                if may_refold(state, batch):
                    if kept is None:
                        earlier = events[:start]
                    else:
                        timeline, seen = kept
                        timeline.add(events[seen:start])
                        earlier = timeline
                folded = fold_arrivals(state, batch, earlier)
                if folded.refolds:
                    assert folded.timeline is not None
                if folded.timeline is not None:
                    kept = (folded.timeline, start + len(batch))
                state, changes = folded.state, changes + folded.changes
            assert (state, changes) == _plain(user_id, events), (user_id, chunk)


def test_timeline_add_places_events_in_fold_order_once() -> None:
    """Events added out of order land sorted by (occurred_at, event_id), each id once."""
    user_id, events = next((u, e) for u, e in _users().items() if len(e) > 40)
    timeline = Timeline(user_id, events[:10], engine.DEFAULT_RULES)
    timeline.add(reversed(events[5:40]))
    assert timeline.events == sorted(
        {e.event_id: e for e in events[:40]}.values(), key=lambda e: (e.occurred_at, e.event_id)
    )
    assert timeline.ids == {e.event_id for e in events[:40]}

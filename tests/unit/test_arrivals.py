"""The live fold (arrival order, one refold rule per event) against its plain definition."""

from __future__ import annotations

from collections import defaultdict

from services.prescriber import engine
from services.prescriber.arrivals import fold_arrivals, fold_history
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
    """Without the earlier events a late one makes the fold answer None; with them it continues."""
    users = _users()
    late = next(ev for ev in users.values() if fold_history(ev[0].user_id, ev).refolds)
    user_id = late[0].user_id
    whole = fold_history(user_id, late)
    for cut in range(1, len(late), 9):
        head = fold_history(user_id, late[:cut])
        tail = fold_arrivals(head.state, late[cut:], None)
        resumed = tail or fold_arrivals(head.state, late[cut:], late[:cut])
        assert resumed is not None
        assert resumed.state == whole.state
        assert head.changes + resumed.changes == whole.changes

"""The live fold: a user's events in ARRIVAL order, exactly as the prescriber emits.

One pure function, ``fold_arrivals``, used by the live processor
(``services.prescriber.processing``) and by the operator's rebuild, so "a
rebuild gives exactly the prescriptions live processing gave" holds by
construction rather than by test alone.

The rule, per event in arrival (history stream) order:

- ``react``: fold it; emit a change if the prescription moved.
- An event that sorts before the latest folded one (late in event time) makes
  the engine ask for a refold: the state becomes the ``replay`` of every event
  that arrived so far, including this one, and ``emit`` runs once with the
  late event as the cause (against the last change emitted, so a refold that
  lands where the user already was emits nothing).

Applying the rule per EVENT, not per batch, makes the output a function of
the arrival sequence alone: however the feed happens to batch a user's new
entries (one at a time, seven at a time, the whole backlog after an outage),
the changes emitted, their versions and their ids are the same. That is what
lets a rebuild, which sees the history as one sequence, reproduce live output.

Refolds are cheap here: the events folded so far are kept in fold order with
a state every ``CHECKPOINT`` events (a ``Timeline``), so a late event refolds
only from the checkpoint before its place, not from the first event. A
caller may keep the timeline a fold returns and pass it back for the same
user's next late event. This relies on two properties of the engine, pinned
by tests: ``replay`` is ``evolve`` over the unique events in (occurred_at,
event_id) order from ``initial``, and ``evolve`` never reads ``last`` (what
emit adds to the state).

A caller that keeps only the state (the live processor) asks ``may_refold``
first and fetches the earlier history only when it answers True, then folds
once with everything the fold may need.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from services.prescriber import engine
from services.prescriber.engine.state import amend
from shared.events import Input, PrescriptionChanged

CHECKPOINT = 32


@dataclass(frozen=True, slots=True)
class Folded:
    """The state after some arrivals, the changes they emitted, and how many refolds.

    ``timeline`` holds every event folded into ``state`` if a refold built
    one (else None): pass it as ``earlier`` to fold the same user's next
    arrivals, and the next refold starts from its checkpoints.
    """

    state: engine.State
    changes: list[PrescriptionChanged]
    refolds: int = 0
    timeline: Timeline | None = None


def _order(event: Input) -> tuple[datetime, UUID]:
    return event.occurred_at, event.event_id


class Timeline:
    """Events folded so far in fold order, with checkpoint states for cheap refolds."""

    def __init__(self, user_id: str, events: Iterable[Input], rules: engine.RuleSet) -> None:
        unique = {e.event_id: e for e in events}
        self.events = sorted(unique.values(), key=_order)
        self.keys = [_order(e) for e in self.events]
        self.ids = set(unique)
        self.rules = rules
        #: states[j] is the fold of events[: j * CHECKPOINT]; later ones go stale on inserts.
        self.states = [engine.initial(user_id)]

    def append(self, event: Input, state: engine.State) -> None:
        """Record an on-time event and the state it folded to (reacted, so ``last`` set)."""
        self.events.append(event)
        self.keys.append(_order(event))
        self.ids.add(event.event_id)
        if len(self.events) == len(self.states) * CHECKPOINT:
            self.states.append(state)

    def add(self, events: Iterable[Input]) -> None:
        """Place events folded elsewhere in fold order; checkpoints after them go stale."""
        for event in events:
            if event.event_id in self.ids:  # replay folds each event_id once
                continue
            self.ids.add(event.event_id)
            place = bisect_right(self.keys, _order(event))
            self.events.insert(place, event)
            self.keys.insert(place, _order(event))
            del self.states[place // CHECKPOINT + 1 :]

    def insert(self, event: Input, last: PrescriptionChanged | None) -> engine.State:
        """Insert a late event and return what ``engine.replay`` of everything gives."""
        self.add((event,))
        start = len(self.states) - 1
        state = self.states[start]
        for i in range(start * CHECKPOINT, len(self.events)):
            state = engine.evolve(state, self.events[i], self.rules)
            if (i + 1) % CHECKPOINT == 0 and (i + 1) // CHECKPOINT == len(self.states):
                self.states.append(state)
        return amend(state, last=last, needs_refold=False)


def may_refold(state: engine.State, events: Iterable[Input]) -> bool:
    """Whether folding ``events`` into ``state`` might need the events folded before.

    True if any event does not sort after everything folded before it
    (state's latest, then each earlier event of ``events``): every late event
    is such an event, and so is a duplicate. When this is False no refold
    can happen, so ``fold_arrivals`` may be given no earlier history.
    """
    if state.now is None or state.last_id is None:
        latest: tuple[datetime, UUID] | None = None
    else:
        latest = (state.now, state.last_id)
    for event in events:
        key = _order(event)
        if latest is not None and key <= latest:
            return True
        latest = key
    return False


def fold_arrivals(
    state: engine.State,
    events: Sequence[Input],
    earlier: Sequence[Input] | Timeline | None,
    rules: engine.RuleSet = engine.DEFAULT_RULES,
) -> Folded:
    """Fold ``events`` (arrival order) into ``state`` the way live processing does.

    ``earlier`` is every event already folded into ``state``: in arrival
    order, or as the ``Timeline`` an earlier fold returned (which this fold
    then extends: it must not be used again unless returned). It is read only
    when a late event needs a refold, so it may be None when
    ``may_refold(state, events)`` is False; a refold without it raises
    ValueError.
    """
    changes: list[PrescriptionChanged] = []
    timeline: Timeline | None = None
    refolds = 0
    for i, event in enumerate(events):
        folded, change = engine.react(state, event, rules)
        if folded.needs_refold:
            if timeline is None:
                timeline = _timeline(state, events[:i], earlier, rules)
            folded = timeline.insert(event, state.last)
            folded, change = engine.emit(folded, event.event_id, rules)
            refolds += 1
        elif timeline is not None and event.event_id not in timeline.ids:
            timeline.append(event, folded)
        state = folded
        if change is not None:
            changes.append(change)
    if timeline is None and isinstance(earlier, Timeline):
        earlier.add(events)  # no refold: the timeline still follows the state
        timeline = earlier
    return Folded(state, changes, refolds, timeline)


def _timeline(
    state: engine.State,
    folded: Sequence[Input],
    earlier: Sequence[Input] | Timeline | None,
    rules: engine.RuleSet,
) -> Timeline:
    """Everything folded into ``state`` (``earlier``, then ``folded``) as a timeline."""
    if earlier is None:
        raise ValueError("a late event needs the earlier history (may_refold was True)")
    if isinstance(earlier, Timeline):
        earlier.add(folded)
        return earlier
    return Timeline(state.user_id, [*earlier, *folded], rules)


def fold_history(
    user_id: str, events: Sequence[Input], rules: engine.RuleSet = engine.DEFAULT_RULES
) -> Folded:
    """A user's whole history folded from nothing, as live processing folded it."""
    return fold_arrivals(engine.initial(user_id), events, (), rules)


__all__ = ["CHECKPOINT", "Folded", "Timeline", "fold_arrivals", "fold_history", "may_refold"]

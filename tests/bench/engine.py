"""The pure fold: evolve + decide (``react``) over a simulated cohort, in one process."""

from __future__ import annotations

from collections import defaultdict

from services.prescriber import engine
from services.prescriber.engine.rules import RULE_SETS
from shared import cohort
from shared.events import Input
from tests.bench.report import measure, rate


def _by_user(n: int, seed: int) -> dict[str, list[Input]]:
    users: dict[str, list[Input]] = defaultdict(list)
    for event in cohort.events(n, seed):
        users[event.user_id].append(event)
    return users


def fold_in_order(users: dict[str, list[Input]], rules: engine.RuleSet) -> int:
    """Fold every user's events, already sorted in event time: evolve + decide alone."""
    changes = 0
    for user_id, events in users.items():
        state = engine.initial(user_id)
        for event in events:
            state, change = engine.react(state, event, rules)
            changes += change is not None
    return changes


def fold_arrivals(users: dict[str, list[Input]], rules: engine.RuleSet) -> int:
    """Fold in arrival order, refolding the whole history at every late event.

    The live processor refolds at most once per batch of a user's new events;
    this is the worst case, one event per batch.
    """
    changes = 0
    for user_id, events in users.items():
        state = engine.initial(user_id)
        for i, event in enumerate(events):
            state, change = engine.react(state, event, rules)
            if state.needs_refold:
                state = engine.replay(events[: i + 1], rules, last=state.last)
                state, change = engine.emit(state, event.event_id, rules)
            changes += change is not None
    return changes


def main(patients: int = 500) -> None:
    users = _by_user(patients, seed=1)
    total = sum(map(len, users.values()))
    print(f"engine: {patients} patients, {total:,} events")
    for version, rules in RULE_SETS.items():
        measure(
            f"engine fold, event-time order (react), rules {version}",
            "events/s",
            lambda rules=rules: rate(total, lambda: fold_in_order(users, rules)),
        )
        measure(
            f"engine fold, arrival order + refolds, rules {version}",
            "events/s",
            lambda rules=rules: rate(total, lambda: fold_arrivals(users, rules)),
        )


if __name__ == "__main__":
    main()

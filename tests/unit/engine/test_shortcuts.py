"""The fast paths of react and the fold decide exactly what the slow ones would."""

from __future__ import annotations

from hypothesis import given

from services.prescriber.engine import RuleSet, decide, evolve, initial, replay
from services.prescriber.engine.baseline import drop_before, median_since
from services.prescriber.engine.decision import same_basis
from shared.events import Input
from tests.unit.engine.factories import USER, at
from tests.unit.engine.test_properties import EVERY_RULE_SET, LAWS, histories, in_order


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_same_basis_implies_the_same_prescription(rules: RuleSet, events: list[Input]) -> None:
    """Whenever same_basis says an event left decide's inputs alone, decide agrees."""
    state = initial(USER)
    for event in in_order(events):
        folded = evolve(state, event, rules)
        if same_basis(state, folded, rules):
            assert decide(folded, rules) == decide(state, rules)
        state = folded


@EVERY_RULE_SET
@LAWS
@given(histories())
def test_replay_equals_folding_in_order(rules: RuleSet, events: list[Input]) -> None:
    """replay (sorting on the id's int) folds exactly as evolving in (time, id) order."""
    state = initial(USER)
    for event in in_order(events):
        state = evolve(state, event, rules)
    assert replay(events, rules) == state


def test_median_since_takes_the_suffix_from_since() -> None:
    """The window includes a score exactly at ``since`` and nothing before it."""
    scores = ((at(0), 1), (at(1), 9), (at(2), 3), (at(3), 4))
    assert median_since(scores, at(1)) == 4.0
    assert median_since(scores, at(2)) == 3.5
    assert median_since(scores, at(4)) is None
    assert drop_before(scores, at(2)) == scores[2:]
    assert drop_before(scores, at(0)) is scores

"""The RuleSet: numbers as defaults, overridable, unknown names refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.prescriber.engine import DEFAULT_RULES, RuleSet, replay
from tests.unit.engine.factories import answered, daily_baselines, make_pain, make_start
from tests.unit.engine.factories import at as day_at


def test_defaults_carry_the_rules_numbers() -> None:
    """The defaults are RULES.md v1's numbers."""
    rules = DEFAULT_RULES
    assert (rules.rules_version, rules.green_during_below, rules.red_during_at) == ("1", 3, 5)
    assert (rules.step_spacing_days, rules.adherence_days, rules.adherence_fraction) == (7, 14, 0.5)
    assert (rules.no_improvement_day, rules.not_recovered_day, rules.start_back_threshold) == (
        42,
        84,
        4,
    )
    assert [r.minutes for r in rules.ladders["walking"]] == [10, 15, 20, 25, 30]


def test_overrides_from_keywords_or_a_mapping() -> None:
    """RuleSet(**overrides) and model_validate(mapping) both replace defaults."""
    assert RuleSet(**{"green_during_below": 4}).green_during_below == 4
    assert RuleSet.model_validate({"protect_days": 10}).protect_days == 10


def test_unknown_rule_name_is_an_error() -> None:
    """A misspelt rule name is refused rather than ignored."""
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"green_during_bellow": 4})


def test_rules_are_frozen() -> None:
    """A RuleSet cannot be changed in place."""
    with pytest.raises(ValidationError):
        DEFAULT_RULES.red_during_at = 6  # type: ignore[misc]


def test_replay_under_other_rules_changes_the_verdict() -> None:
    """Raising green_during_below to 4 makes pain 3 during a GREEN session."""
    events = [
        make_start(),
        *daily_baselines(0, 1, score=3),
        *answered(1, during=3, after=2, morning=2),
    ]
    events.append(make_pain(occurred_at=day_at(4)))
    strict = replay(events)
    lenient = replay(events, RuleSet(green_during_below=4))
    assert strict.program is not None
    assert lenient.program is not None
    assert strict.program.finals[-1].verdict == "amber"
    assert lenient.program.finals[-1].verdict == "green"

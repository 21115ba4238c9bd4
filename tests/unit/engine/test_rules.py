"""The RuleSet: numbers as defaults, overridable, unknown names refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.prescriber.engine import DEFAULT_RULES, RuleSet, replay
from services.prescriber.engine.rules import builtin
from tests.unit.engine.factories import answered, daily_baselines, make_pain, make_start
from tests.unit.engine.factories import at as day_at


def test_defaults_are_rule_set_2() -> None:
    """New decisions are made under rule set "2", whose numbers are RULES.md v2's."""
    rules = DEFAULT_RULES
    assert rules is builtin("2")
    assert (rules.rules_version, rules.tolerance, rules.red_next_day_delta) == ("2", 1, 2)
    assert (rules.flare_rise_scores, rules.flare_big_jump, rules.flare_refer_days) == (2, 4, 14)
    assert (rules.escalation_clock, rules.regress_quiet_hours) == ("program", 48)
    assert len(rules.emergency_flags) + len(rules.urgent_flags) == 15


def test_rule_set_1_keeps_v1_numbers() -> None:
    """Rule set "1" holds every v1 value of RULES.md's closing table."""
    rules = builtin("1")
    assert (rules.rules_version, rules.tolerance, rules.red_next_day_delta) == ("1", 0, None)
    assert (rules.flare_rise_scores, rules.flare_big_jump, rules.flare_refer_days) == (
        1,
        None,
        None,
    )
    assert (rules.escalation_clock, rules.regress_quiet_hours) == ("onset", 0)
    assert len(rules.emergency_flags) + len(rules.urgent_flags) == 8
    assert (rules.run_min_aerobic_level, rules.run_entry_is_step) == (1, False)


def test_an_unknown_built_in_rule_set_names_the_known_ones() -> None:
    """Asking for rule set "3" fails with the versions that exist."""
    with pytest.raises(KeyError, match="'1', '2'"):
        builtin("3")


def test_the_shared_numbers_are_the_same_in_both() -> None:
    """Numbers v2 did not change are RULES.md's in both rule sets."""
    for rules in (builtin("1"), builtin("2")):
        assert (rules.green_during_below, rules.red_during_at) == (3, 5)
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
    v1 = builtin("1")
    strict = replay(events, v1)
    lenient = replay(events, v1.updated({"green_during_below": 4}))
    assert strict.program is not None
    assert lenient.program is not None
    assert strict.program.finals[-1].verdict == "amber"
    assert lenient.program.finals[-1].verdict == "green"

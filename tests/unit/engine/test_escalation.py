"""Section 7: routine referrals at 6 and 12 weeks and for STarT Back high risk.

The day-42 and day-84 boundaries here count from onset (rule set 1); the
program clock of rule set 2 is in test_rules_v2.py.
"""

from __future__ import annotations

import pytest

from services.prescriber.engine import DEFAULT_RULES, Prescription, RuleSet, decide
from shared.events import Input
from tests.unit.engine.factories import V1, at, make_pain, make_start, onset_days_ago, run


def decided(*events: Input, rules: RuleSet = DEFAULT_RULES) -> Prescription:
    rx = decide(run(events, rules=rules)[0], rules)
    assert rx is not None
    return rx


def codes(rx: Prescription) -> list[str]:
    return [r.code for r in rx.reasons]


@pytest.mark.parametrize(("day", "referred"), [(1, False), (2, True)])
def test_no_improvement_referral_comes_on_day_42_not_41(day: int, referred: bool) -> None:
    """Rule set 1: baseline unchanged; day 41 from onset has no referral, day 42 a routine one."""
    start = make_start(onset_date=onset_days_ago(40))
    logs = [make_pain(occurred_at=at(d, 7), score=5) for d in range(day + 1)]
    rx = decided(start, *logs, rules=V1)
    assert ("no_improvement_6_weeks" in codes(rx)) is referred
    assert rx.phase == "build"  # the program continues
    if referred:
        assert rx.referral is not None
        assert (rx.referral.urgency, rx.referral.reason) == ("routine", "no_improvement_6_weeks")


@pytest.mark.parametrize(("first", "now"), [(5, 3), (4, 2.5)])
def test_improvement_by_2_points_or_30_percent_avoids_referral(first: int, now: float) -> None:
    """A baseline down 2 points, or 30% when that is less, counts as improvement."""
    start = make_start(onset_date=onset_days_ago(40))
    logs = [make_pain(occurred_at=at(0, 7), score=first)]
    later = [int(now), round(now)] if now != int(now) else [int(now)]
    logs += [make_pain(occurred_at=at(1, 7 + i), score=s) for i, s in enumerate((*later, *later))]
    logs += [make_pain(occurred_at=at(2, 7), score=int(now))]
    rx = decided(start, *logs)
    assert "no_improvement_6_weeks" not in codes(rx)
    assert rx.referral is None


@pytest.mark.parametrize(("day", "referred"), [(1, False), (2, True)])
def test_not_recovered_referral_on_day_84_not_83(day: int, referred: bool) -> None:
    """Rule set 1: baseline above 2 on day 84 from onset refers as not_recovered_12_weeks."""
    start = make_start(onset_date=onset_days_ago(82))
    logs = [make_pain(occurred_at=at(d, 7), score=3) for d in range(day + 1)]
    rx = decided(start, *logs, rules=V1)
    assert ("not_recovered_12_weeks" in codes(rx)) is referred
    if referred:
        assert rx.referral is not None
        assert rx.referral.reason == "not_recovered_12_weeks"


def test_recovered_by_day_84_is_not_referred() -> None:
    """A baseline of 2 on day 84 needs no referral for not recovering."""
    start = make_start(onset_date=onset_days_ago(84))
    rx = decided(start, make_pain(occurred_at=at(0, 7), score=2))
    assert "not_recovered_12_weeks" not in codes(rx)


@pytest.mark.parametrize(
    ("answers", "referred"),
    [
        ((False, False, False, False, True, True, True, True, False), True),
        ((True, True, True, True, True, True, True, False, False), False),
    ],
)
def test_start_back_items_5_to_9_sum_4_refers_and_3_does_not(
    answers: tuple[bool, ...], referred: bool
) -> None:
    """STarT Back items 5-9 (indices 4..8) summing to 4 refer from the start; 3 does not."""
    rx = decided(make_start(start_back=answers))
    assert ("start_back_high_risk" in codes(rx)) is referred
    assert (rx.referral is not None) is referred
    assert rx.phase == "build"


def test_red_flag_referral_overrides_a_routine_one() -> None:
    """With a red flag and STarT Back high risk, the referral is the red-flag one."""
    answers = (False, False, False, False, True, True, True, True, True)
    rx = decided(make_start(start_back=answers, red_flags=("constant_night_pain",)))
    assert rx.referral is not None
    assert rx.referral.urgency == "urgent"
    assert rx.phase == "refer"

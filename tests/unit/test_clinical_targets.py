"""The targets of rule set 2 on make clinical's seeded virtual cohort (exact: all deterministic).

Every target RULES.md v2 meets is asserted met. Two are not met by the rules
as they stand (docs/CLINICAL.md and docs/RULES.md say why); for those the
test holds the line at today's figure, so a change that makes them worse fails.
"""

from __future__ import annotations

import pytest

from services.clinical.cohort import measured
from services.clinical.metrics import Target

NOT_YET_MET = {
    "patients progressed during a simulated flare": 1,
    "PrescriptionChanged per patient-week": 0.675,  # measured 0.674
}


@pytest.fixture(scope="module")
def rule_set_2() -> dict[str, Target]:
    """The targets measured on the 1,000 virtual patients under rule set 2."""
    return {t.name: t for t in measured("2")}


def test_rule_set_2_meets_the_targets(rule_set_2: dict[str, Target]) -> None:
    """Every target but the two known ones is met by rule set 2."""
    missed = [t.row() for name, t in rule_set_2.items() if not t.met and name not in NOT_YET_MET]
    assert missed == []
    assert len(rule_set_2) == 11


@pytest.mark.parametrize(("name", "at_most"), list(NOT_YET_MET.items()))
def test_the_targets_not_met_get_no_worse(
    rule_set_2: dict[str, Target], name: str, at_most: float
) -> None:
    """The two targets rule set 2 misses stay at or below today's figure."""
    found = rule_set_2[name].measured
    assert found is not None
    assert found <= at_most


def test_rule_set_1_misses_what_rule_set_2_fixed() -> None:
    """Rule set 1 on a smaller cohort keeps improvers at level 1 and flares too often."""
    found = {t.name: t for t in measured("1", n=200)}
    assert found["improvers: median final level"].measured == 1
    assert not found["deload/resume cycles per patient"].met

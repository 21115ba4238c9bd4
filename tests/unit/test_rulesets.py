"""What-if rule sets: built-in versions by name, files and ``--set`` pairs over them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.prescriber.engine.rules import builtin
from services.replay.rulesets import load_rules


def test_a_built_in_version_alone_is_that_rule_set() -> None:
    """``--rules 1`` and ``--rules 2`` name the built-in sets, versions kept."""
    assert load_rules("1") is builtin("1")
    assert load_rules("2") is builtin("2")


def test_pairs_over_a_built_in_set_start_from_it() -> None:
    """``--rules 1 --set tolerance=1`` is rule set 1 with one value changed, tagged what-if."""
    rules = load_rules("1", ["tolerance=1"])
    assert (rules.rules_version, rules.tolerance, rules.escalation_clock) == ("what-if", 1, "onset")


def test_no_rules_named_starts_from_the_default_set(tmp_path: Path) -> None:
    """A file or pairs alone override rule set 2."""
    path = tmp_path / "rules.toml"
    path.write_text('step_spacing_days = 10\nrules_version = "clinic-trial"\n')
    rules = load_rules(str(path), ["progress_greens=3"])
    assert (rules.rules_version, rules.step_spacing_days, rules.progress_greens) == (
        "clinic-trial",
        10,
        3,
    )
    assert rules.escalation_clock == "program"


def test_an_override_gets_fresh_caches() -> None:
    """A changed rule set never shares the decide memo of the set it came from."""
    base = builtin("2")
    base.memo["probe"] = "kept"
    assert "probe" not in load_rules("2", ["tolerance=0"]).memo
    del base.memo["probe"]


def test_a_misspelt_name_is_refused() -> None:
    """An unknown rule name fails instead of falling back to the default."""
    with pytest.raises(ValidationError):
        load_rules("2", ["tolerence=0"])

"""The demo's own parts: its flags, figures per rule set, a fresh embedded log."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.demo import _own_log, figures
from services.cli.main import _parser
from services.clinical.driver import Run
from shared.cohort.persona import make_persona
from shared.cohort.virtual import Truth
from shared.settings import Settings


def _run(version: str) -> Run:
    persona = make_persona(0, 0)
    return Run(persona, version, 12, Truth(persona.archetype, [], []))


def test_figures_are_measured_per_rule_set_the_stack_decided_with() -> None:
    """Runs are grouped by their rules_version; each group gets the eleven targets."""
    measured = figures([_run("2"), _run("1"), _run("2")])
    assert list(measured) == ["1", "2"]
    assert all(len(found) == 11 for found in measured.values())


def test_the_embedded_demo_log_starts_afresh_and_an_external_one_is_left_alone(
    tmp_path: Path,
) -> None:
    """Without a Redis URL the demo's own directory is emptied; with one nothing changes."""
    old = tmp_path / "demo" / "redis" / "appendonly.aof"
    old.parent.mkdir(parents=True)
    old.write_text("x")
    fresh = _own_log(Settings(data_dir=str(tmp_path)))
    assert fresh.data_dir == str(tmp_path / "demo")
    assert not old.exists()
    external = Settings(data_dir=str(tmp_path), redis_url="redis://example:6379/0")
    assert _own_log(external) is external


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_the_demo_refuses_counts_below_one(bad: str) -> None:
    """--patients and --weeks take whole numbers of at least 1."""
    for flag in ("--patients", "--weeks"):
        with pytest.raises(SystemExit):
            _parser().parse_args(["demo", flag, bad])


def test_the_demo_defaults_to_200_patients_for_12_weeks_on_make_clinicals_seed() -> None:
    """Without flags: 200 patients, 12 weeks, and no seed (run_demo takes make clinical's)."""
    args = _parser().parse_args(["demo"])
    assert (args.patients, args.weeks, args.seed) == (200, 12, None)

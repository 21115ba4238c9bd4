"""Clinicians in the loop and outcome measures (RULES.md sections 10 and 11, rule set 2).

A ``ClinicianReviewed`` acts on the program where it stands; the automatic
rules go on from the new state. Choices where RULES.md is silent:

- ``set_levels`` names exercises of the episode's program (the run ladder as
  ``running`` while in return_to_run); other ids change nothing. In a flare it
  sets the levels the patient resumes from. It counts as a step, so the 7-day
  spacing restarts.
- ``exclude_exercise`` hides an exercise from every phase's prescription
  while its level is kept; ``include_exercise`` brings it back. Neither adds
  an exercise the program never had.
- ``acknowledge_referral`` clears every routine referral in force; checks
  still to come (day 84 after day 42) may refer again, and leg pain must then
  come back on two new days.
- ``clear_red_flags`` with no episode yet forgets flags reported before it.

An ``OutcomeRecorded`` changes no exercise: the program keeps each
instrument's first and latest score of the episode, and the day-42 check
reads them (section 7). Scores recorded before the first episode are not kept.
"""

from __future__ import annotations

from typing import Any

from services.prescriber.engine.rules import RuleSet
from shared.events import ClinicianReviewed, OutcomeRecorded

from .state import Episode, Program, State, amend


def review(state: State, event: ClinicianReviewed, rules: RuleSet) -> dict[str, Any]:
    """What a clinician's action changes (the state's fields, for ``_advance``)."""
    changes: dict[str, Any] = {"review": (event.event_id, event.action)}
    episode, program = state.episode, state.program
    if episode is None or program is None:
        if event.action == "clear_red_flags":
            changes["early_flags"] = ()
        return changes
    action = event.action
    if action == "clear_red_flags":
        program = amend(program, red_flags=())
    elif action == "set_levels" and event.levels is not None:
        program = _set_levels(episode, program, dict(event.levels), state, rules)
    elif action in ("exclude_exercise", "include_exercise") and event.exercise_id is not None:
        program = _exclude(program, event.exercise_id, action == "exclude_exercise")
    elif action in ("hold", "release"):
        program = amend(program, held=action == "hold")
    elif action == "acknowledge_referral":
        program = _acknowledge(program)
        changes["leg_days"] = ()
    changes["program"] = program
    return changes


def _set_levels(
    episode: Episode, program: Program, wanted: dict[str, int], state: State, rules: RuleSet
) -> Program:
    levels = tuple(
        max(1, min(rules.top(ex), wanted.get(ex, level)))
        for ex, level in zip(episode.exercises, program.levels, strict=True)
    )
    run_level = program.run_level
    if program.running and rules.run_ladder in wanted:
        run_level = max(1, min(rules.top(rules.run_ladder), wanted[rules.run_ladder]))
    flare = program.flare
    if flare is not None:  # the levels to resume from
        flare = amend(flare, pre_levels=levels, pre_run_level=run_level)
        return amend(program, flare=flare, last_step_at=state.now)
    return amend(
        program,
        levels=levels,
        run_level=run_level,
        step_code="clinician_set_levels",
        last_step_at=state.now,
    )


def _exclude(program: Program, exercise_id: str, exclude: bool) -> Program:
    excluded = tuple(e for e in program.excluded if e != exercise_id)
    if exclude:
        excluded = (*excluded, exercise_id)
    return program if excluded == program.excluded else amend(program, excluded=excluded)


def _acknowledge(program: Program) -> Program:
    flare = program.flare
    if flare is not None and flare.not_settling:
        flare = amend(flare, not_settling=False, acknowledged=True)
    return amend(
        program,
        no_improvement=False if program.no_improvement else program.no_improvement,
        not_recovered=False if program.not_recovered else program.not_recovered,
        radicular=False,
        start_back_cleared=True,
        flare=flare,
    )


def outcome(state: State, event: OutcomeRecorded) -> dict[str, Any]:
    """An outcome score joins the episode's first and latest per instrument."""
    program = state.program
    if program is None:
        return {}
    kept = {name: (first, latest) for name, first, latest in program.outcomes}
    first = kept.get(event.instrument, (event.score, event.score))[0]
    kept[event.instrument] = (first, event.score)
    outcomes = tuple((name, a, b) for name, (a, b) in sorted(kept.items()))
    return {"program": amend(program, outcomes=outcomes)}


def outcome_improved(program: Program, rules: RuleSet) -> bool:
    """Any instrument improved by its own threshold since its first score (section 11)."""
    return any(_improved(name, first, latest, rules) for name, first, latest in program.outcomes)


def _improved(instrument: str, first: float, latest: float, rules: RuleSet) -> bool:
    if instrument == "rmdq":  # Roland-Morris: down 5 points or 30%
        drop = first - latest
        return (
            drop >= rules.rmdq_improved_points or drop >= first * rules.rmdq_improved_fraction > 0
        )
    if instrument == "odi":  # Oswestry: down 10
        return first - latest >= rules.odi_improved_points
    if instrument == "psfs":  # patient-specific functional scale: up 2
        return latest - first >= rules.psfs_improved_points
    return latest >= rules.pgic_improved_at  # global impression of change: 5 or more

"""Progress, hold, regress (RULES.md section 5) and entering return_to_run (section 8).

Levels move only when a verdict becomes final, so they are a pure function of
the ordered events. Any level change (progress, regress, resume) restarts the
7-day spacing that progressions must respect; the episode start counts as the
first step, so nobody progresses within a week of starting.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timedelta
from typing import Any

from services.prescriber.engine.baseline import baseline_at, median_since
from services.prescriber.engine.phase import phase_of
from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Episode, Final, Pending, Program, State, amend
from services.prescriber.engine.verdict import due_and_pending, verdict_of

_MOVING = ("build", "return_to_run")
_WEEK = timedelta(days=7)


def settle(state: State, episode: Episode, program: Program, rules: RuleSet) -> Program:
    """Finalize every pending verdict that is due, oldest first, applying each in turn."""
    now = state.now
    assert now is not None  # settle runs after an event was folded
    due, pending = due_and_pending(program.pending, now, rules)
    if not due:
        return program
    for session in due:
        program = _apply(state, episode, program, session, rules, pending=pending)
    return program


def _apply(
    state: State,
    episode: Episode,
    program: Program,
    session: Pending,
    rules: RuleSet,
    *,
    pending: tuple[Pending, ...],
) -> Program:
    verdict = verdict_of(session, rules)
    final = Final(at=session.at, verdict=verdict, completed=session.completed, hard=session.hard)
    finals = (*program.finals, final)[-rules.progress_greens :]
    changes: dict[str, Any] = {
        "pending": pending,
        "finals": finals,
        "last_green_at": session.at if verdict == "green" else program.last_green_at,
        "last_other_at": program.last_other_at if verdict == "green" else session.at,
    }
    # protect, flare and refer hold the levels where they are
    if phase_of(state.today, episode, program, rules) in _MOVING:
        step: dict[str, Any] = {}
        if verdict == "red":
            if _may_regress(program, state.now, rules):
                step = _regress(program, session, state.now)
        elif verdict == "green" and _may_progress(state, episode, program, finals, rules):
            ready = rules.run_entry_is_step and episode.run_goal and not program.running
            # v2: a runner ready for return_to_run takes that as the step, not another level
            entered = maybe_run(state, episode, amend(program, **changes), rules) if ready else None
            if entered is not None and entered.running:
                return entered
            step = _progress(episode, program, state.now, rules)
        if not rules.step_only_when_moved or _moves(program, step):
            changes.update(step)
    return amend(program, **changes)


def _moves(program: Program, step: dict[str, Any]) -> bool:
    """The step changes a prescribed level (at the top or at 1 a step moves nothing)."""
    if step.get("levels", program.levels) != program.levels:
        return True
    return program.running and step.get("run_level", program.run_level) != program.run_level


def _may_regress(program: Program, now: datetime | None, rules: RuleSet) -> bool:
    """One step down per signal: none within ``regress_quiet_hours`` of the last (v2)."""
    last = program.last_regress_at
    return last is None or now is None or now - last >= rules.spans.regress_quiet


def _regress(program: Program, session: Pending, now: datetime | None) -> dict[str, Any]:
    if session.run and program.running:
        run_level = max(1, program.run_level - 1)
        return {
            "run_level": run_level,
            "step_code": "regressed_red_run_verdict",
            "last_step_at": now,
            "last_regress_at": now,
        }
    return {
        "levels": tuple(max(1, level - 1) for level in program.levels),
        "run_level": max(1, program.run_level - 1),
        "step_code": "regressed_red_verdict",
        "last_step_at": now,
        "last_regress_at": now,
    }


def _progress(
    episode: Episode, program: Program, now: datetime | None, rules: RuleSet
) -> dict[str, Any]:
    levels = tuple(
        min(rules.top(ex), level + 1)
        for ex, level in zip(episode.exercises, program.levels, strict=True)
    )
    run_level = program.run_level
    if program.running:
        run_level = min(rules.top(rules.run_ladder), run_level + 1)
    return {
        "levels": levels,
        "run_level": run_level,
        "step_code": "progressed_two_green",
        "last_step_at": now,
    }


def _may_progress(
    state: State, episode: Episode, program: Program, finals: tuple[Final, ...], rules: RuleSet
) -> bool:
    if program.held or len(finals) < rules.progress_greens:
        return False
    if any(f.verdict != "green" or not f.completed or f.hard for f in finals):
        return False
    now = state.now
    assert now is not None
    spacing = rules.spans.step_spacing
    if program.last_step_at is not None and now - program.last_step_at < spacing:
        return False
    if rules.hold_on_raised_morning and raised_morning(state, rules):
        return False
    return not low_adherence(episode, program, now, rules)


def raised_morning(state: State, rules: RuleSet) -> bool:
    """The event being folded is a baseline or morning score above the baseline before it."""
    scores = state.scores
    if not scores or scores[-1][0] != state.now:
        return False
    before = median_since(scores[:-1], scores[-1][0] - rules.spans.baseline)
    return before is not None and scores[-1][1] > before


def low_adherence(episode: Episode, program: Program, now: datetime, rules: RuleSet) -> bool:
    """Fewer than half the sessions prescribed in the last 14 days were done.

    In the first 14 days of an episode the prescription is prorated to the days
    elapsed, so a new patient is judged on what was asked of them so far. Every
    SessionCompleted counts as done, partial ones included.
    """
    span = rules.spans.adherence
    elapsed = min(span, now - episode.started_at)
    prescribed = episode.sessions_per_week * (elapsed / _WEEK)
    # sessions are in time order, so those after ``since`` are a suffix
    done = len(program.sessions) - bisect_right(program.sessions, now - span)
    return done < prescribed * rules.adherence_fraction


def maybe_run(state: State, episode: Episode, program: Program, rules: RuleSet) -> Program:
    """Enter return_to_run: 14 days in build, every final verdict in them GREEN (at
    least one), and baseline <= 2; v2 also the aerobic slot at level 3 or more and,
    entry being a step, 7 days since the last one. The run ladder starts at level 1."""
    if not episode.run_goal or program.running or program.held or program.build_since is None:
        return program
    now, today = state.now, state.today
    if now is None or today is None or (today - program.build_since).days < rules.run_build_days:
        return program
    if phase_of(state.today, episode, program, rules) != "build":
        return program
    since = now - rules.spans.run_build
    if program.last_green_at is None or program.last_green_at < since:
        return program
    if program.last_other_at is not None and program.last_other_at >= since:
        return program
    if program.levels[-1] < rules.run_min_aerobic_level:  # the aerobic slot is last
        return program
    step = rules.run_entry_is_step
    if (
        step
        and program.last_step_at is not None
        and now - program.last_step_at < rules.spans.step_spacing
    ):
        return program
    base = baseline_at(state, now, rules)
    if base is None or base > rules.run_max_baseline:
        return program
    last_step_at = now if step else program.last_step_at
    return amend(
        program, running=True, run_level=1, step_code="return_to_run", last_step_at=last_step_at
    )

"""The fold: ``evolve`` one input event into the state, ``replay`` a whole history.

Pure: no clock, no I/O, never raises for a valid event. "Now" is the latest
``occurred_at`` folded. Events fold in (occurred_at, event_id) order; one that
sorts before the latest folded cannot be placed exactly from bounded windows,
so the state only flags ``needs_refold`` and the shell replays the history.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from services.prescriber.engine import flare
from services.prescriber.engine.baseline import baseline_at, drop_before, median_since
from services.prescriber.engine.escalation import escalate
from services.prescriber.engine.intake import open_episode
from services.prescriber.engine.phase import phase_of
from services.prescriber.engine.progression import maybe_run, settle
from services.prescriber.engine.review import outcome, review
from services.prescriber.engine.rules import DEFAULT_RULES, RuleSet
from services.prescriber.engine.state import (
    Episode,
    Pending,
    Program,
    State,
    amend,
    amend_with,
    initial,
)
from services.prescriber.engine.verdict import attach
from shared.events import (
    ClinicianReviewed,
    Input,
    OutcomeRecorded,
    PainLogged,
    PrescriptionChanged,
    RehabStarted,
    SessionCompleted,
)

RECENT_IDS = 32
DURING_KEEP = timedelta(hours=12)
_SCORED = ("baseline", "morning")
_MOVING = ("build", "return_to_run")


def evolve(state: State, event: Input, rules: RuleSet = DEFAULT_RULES) -> State:
    """Fold one input event. Duplicates change nothing; late events set ``needs_refold``."""
    now, at = state.now, event.occurred_at
    # Only an event that does not sort after the latest can be a duplicate or late.
    if (
        now is not None
        and at <= now
        and state.last_id is not None
        and (at < now or event.event_id <= state.last_id)
    ):
        if event.event_id in state.recent_ids:
            return state
        return state if state.needs_refold else amend(state, needs_refold=True)
    scored = False
    if isinstance(event, PainLogged):
        state = _advance(state, event, rules, _pain(state, event, rules))
        scored = event.context in _SCORED
    elif isinstance(event, SessionCompleted):
        state = _advance(state, event, rules, _session(state, event, rules))
    elif isinstance(event, RehabStarted):
        state = open_episode(_advance(state, event, rules, {}), event, rules)
    elif isinstance(event, ClinicianReviewed) and rules.clinician_reviews:
        state = _advance(state, event, rules, review(state, event, rules))
    elif isinstance(event, OutcomeRecorded) and rules.outcome_measures:
        state = _advance(state, event, rules, outcome(state, event))
    else:  # a rule set that does not read this type: the event only moves "now"
        state = _advance(state, event, rules, {})
    return _settle(state, rules, scored)


def replay(
    events: Iterable[Input],
    rules: RuleSet = DEFAULT_RULES,
    last: PrescriptionChanged | None = None,
) -> State:
    """Fold a full history in (occurred_at, event_id) order, duplicates dropped."""
    unique = {e.event_id: e for e in events}
    ordered = sorted(unique.values(), key=lambda e: (e.occurred_at, e.event_id.int))
    state = initial(ordered[0].user_id if ordered else "")
    for event in ordered:
        state = evolve(state, event, rules)
    return amend(state, last=last, needs_refold=False)


def _advance(state: State, event: Input, rules: RuleSet, changes: dict[str, Any]) -> State:
    """The state moved to this event with ``changes``, built once, its windows pruned.

    ``changes`` holds what the event itself changed (scores, during logs,
    program...); windows come out no older than what a rule can still read.
    """
    now = event.occurred_at
    scores, since = changes.get("scores", state.scores), now - rules.spans.scores_kept
    if scores and scores[0][0] < since:
        changes["scores"] = drop_before(scores, since)
    during, since = changes.get("during", state.during), now - DURING_KEEP
    if during and during[0][0] < since:
        changes["during"] = drop_before(during, since)
    changes["user_id"] = event.user_id
    changes["now"] = now
    changes["last_id"] = event.event_id
    changes["today"] = now.date()
    changes["recent_ids"] = (*state.recent_ids[1 - RECENT_IDS :], event.event_id)
    return amend_with(state, changes)


def _pain(state: State, event: PainLogged, rules: RuleSet) -> dict[str, Any]:
    """What a pain log changes: red flags, during logs, pending verdicts, scores."""
    at, score, context = event.occurred_at, event.score, event.context
    changes: dict[str, Any] = {}
    program = state.program
    if event.red_flags:
        if program is None:
            changes["early_flags"] = (*state.early_flags, *event.red_flags)
        else:
            flags = tuple(dict.fromkeys((*program.red_flags, *event.red_flags)))
            program = amend(program, red_flags=flags)
    if event.location == "leg_below_knee" and rules.radicular_days:
        program = _leg_pain(state, program, at, rules, changes)
    if context == "during_exercise":
        changes["during"] = (*state.during, (at, score, event.session_id))
    if (
        program is not None
        and program.pending
        and (context != "baseline" or rules.next_day_baseline)
    ):
        pending = attach(program.pending, event, rules)
        if pending is not program.pending:
            program = amend(program, pending=pending)
    if context in _SCORED:
        program = _scored(state, program, event, rules, changes)
    if program is not state.program:
        changes["program"] = program
    return changes


def _leg_pain(
    state: State, program: Program | None, at: datetime, rules: RuleSet, changes: dict[str, Any]
) -> Program | None:
    """Leg pain below the knee: on enough days within the window, a radicular review."""
    today, window = at.date(), rules.spans.radicular_window
    days = tuple(d for d in state.leg_days if today - d < window)
    if today not in days:
        days = (*days, today)
    changes["leg_days"] = days
    if program is not None and not program.radicular and len(days) >= rules.radicular_days:
        program = amend(program, radicular=True)
    return program


def _scored(
    state: State,
    program: Program | None,
    event: PainLogged,
    rules: RuleSet,
    changes: dict[str, Any],
) -> Program | None:
    """A baseline or morning score: the windows it joins (into ``changes``), flare start or end."""
    at, score = event.occurred_at, event.score
    today = at.date()
    scores = (*state.scores, (at, score))
    last_baseline = median_since(scores, at - rules.spans.baseline)
    changes["scores"] = scores
    changes["last_baseline"] = last_baseline
    changes["high_days"] = flare.high_days(state, score, today, rules)
    episode = state.episode
    if episode is None or program is None:
        return program
    if program.first_baseline is None:
        first = _first_baseline(episode, program, at, score, rules)
        program = amend(program, first_baseline=last_baseline if first is None else first)
    current = program.flare
    if current is not None:
        if flare.settled(scores, at, current, rules):
            program = flare.resume(program, current, at, rules)
        return program
    # phase_of reads only the date from state, so judge it at this event's date.
    if phase_of(today, episode, program, rules) in _MOVING:
        program = flare.detect(state, program, score, at, rules)
    return program


def _first_baseline(
    episode: Episode, program: Program, at: datetime, score: int, rules: RuleSet
) -> float | None:
    """v2: the first score in the program's first days, else the baseline known at
    intake, else this score. None under v1 (the 72 h median at the first score)."""
    window = rules.spans.first_baseline
    if window is None:
        return None
    if at <= episode.started_at + window or program.prior_baseline is None:
        return float(score)
    return program.prior_baseline


def _session(state: State, event: SessionCompleted, rules: RuleSet) -> dict[str, Any]:
    """A session joins the pending verdicts (with its during-exercise pain) and adherence."""
    program = state.program
    if program is None:
        return {}  # no program yet: nothing to judge it against
    at = event.occurred_at
    link_from = at - rules.spans.during_link
    linked = [score for t, score, sid in state.during if sid == event.session_id or link_from <= t]
    if event.pain_during is not None:
        linked.append(event.pain_during)
    session = Pending(
        session_id=event.session_id,
        at=at,
        baseline=baseline_at(state, at, rules),
        completed=event.completed,
        hard=event.difficulty == "hard",
        run=rules.run_ladder in {e.exercise_id for e in event.exercises},
        during=max(linked) if linked else None,
    )
    kept = program.sessions[bisect_right(program.sessions, at - rules.spans.adherence) :]
    program = amend(program, pending=(*program.pending, session), sessions=(*kept, at))
    return {"program": program}


def _settle(state: State, rules: RuleSet, scored: bool) -> State:
    episode, program = state.episode, state.program
    if episode is None or program is None:
        return state
    if program.pending:
        program = settle(state, episode, program, rules)
    if program.flare is not None and not program.flare.not_settling:
        program = flare.check_settling(program, program.flare, state.now, rules)
    if program.not_recovered is None and (scored or not rules.escalate_on_score):
        program = escalate(state, episode, program, rules)
    if episode.run_goal and not program.running:
        program = maybe_run(state, episode, program, rules)
    return state if program is state.program else amend(state, program=program)

"""A RehabStarted opens an episode: program, onset, preferences, red flags.

Choices where RULES.md is silent:
- onset without ``onset_date`` is the RehabStarted's own date (in its offset);
- the program is built once per episode from its preferences: the core four,
  ``bird_dog`` with strength or pilates, then the aerobic slot last;
- red flags logged before the first RehabStarted are carried into it (no
  screen should forget them); a later RehabStarted clears them, since a new
  episode means a clinician has seen the patient;
- pain scores are not per episode: baseline history carries over, and the
  first baseline of an episode is the one known at intake, else the first
  one logged after it (v2: the first score of the program's first 7 days,
  else the one known at intake, else the first one logged);
- ``clinic_id`` stays the last one given when a new episode names none.
"""

from __future__ import annotations

from datetime import timedelta

from services.prescriber.engine.baseline import baseline_at
from services.prescriber.engine.escalation import start_back_high, start_back_medium
from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Episode, Program, State, amend
from shared.events import RehabStarted


def open_episode(state: State, event: RehabStarted, rules: RuleSet) -> State:
    """Start a new episode; levels, pending verdicts and flags start over, ``last`` stays."""
    episode = _episode(event, rules)
    build_from = episode.onset + timedelta(days=rules.protect_days if episode.protect else 0)
    flags = event.red_flags if state.episode is not None else (*state.early_flags, *event.red_flags)
    known = baseline_at(state, event.occurred_at, rules)
    later = rules.first_baseline_days is not None  # v2: the first score of the program
    program = Program(
        levels=(1,) * len(episode.exercises),
        red_flags=tuple(dict.fromkeys(flags)),
        build_since=max(build_from, event.occurred_at.date()),
        last_step_at=event.occurred_at,
        first_baseline=None if later else known,
        prior_baseline=known if later else None,
    )
    return amend(
        state,
        episode=episode,
        program=program,
        early_flags=(),
        clinic_id=event.clinic_id or state.clinic_id,
    )


def _episode(event: RehabStarted, rules: RuleSet) -> Episode:
    aerobic = next(
        (p for p in event.preferences if p in rules.aerobic_choices), rules.default_aerobic
    )
    extra = any(p in rules.extra_for_preferences for p in event.preferences)
    exercises = (*rules.core_exercises, *((rules.extra_exercise,) if extra else ()), aerobic)
    return Episode(
        event_id=event.event_id,
        started_at=event.occurred_at,
        onset=event.onset_date or event.occurred_at.date(),
        protect=event.cause in rules.protect_causes,
        aerobic=aerobic,
        exercises=exercises,
        run_goal=rules.run_goal in event.goals,
        sessions_per_week=event.sessions_per_week,
        start_back_high=start_back_high(event.start_back, rules),
        start_back_medium=start_back_medium(event.start_back, rules),
    )

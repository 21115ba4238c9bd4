"""Where an episode stands in time: days since onset, phase and stage."""

from __future__ import annotations

from datetime import date

from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Episode, Program


def days_since_onset(today: date | None, episode: Episode) -> int:
    """Whole days from onset to ``today``: the latest event's date in its own UTC offset."""
    if today is None:
        today = episode.started_at.date()
    return (today - episode.onset).days


def days_on_clock(today: date | None, episode: Episode, rules: RuleSet) -> int:
    """Whole days on the escalation clock: from onset (v1) or the program's start (v2)."""
    if rules.escalation_clock == "onset":
        return days_since_onset(today, episode)
    start = episode.started_at.date()
    return ((today or start) - start).days


def period_of(today: date | None, episode: Episode, rules: RuleSet) -> int:
    """How many date boundaries (end of protect, subacute, chronic) lie behind ``today``.

    Phase and stage read the date only through these boundaries, so two dates
    of one episode with the same period give the same phase and stage.
    """
    days = days_since_onset(today, episode)
    return (
        (days >= rules.protect_days)
        + (days >= rules.subacute_from_days)
        + (days >= rules.chronic_from_days)
    )


def phase_of(today: date | None, episode: Episode, program: Program, rules: RuleSet) -> str:
    """The phase: refer over flare over protect over return_to_run over build."""
    if program.red_flags:
        return "refer"
    if program.flare is not None:
        return "flare"
    if episode.protect and days_since_onset(today, episode) < rules.protect_days:
        return "protect"
    if program.running:
        return "return_to_run"
    return "build"


def stage_of(today: date | None, episode: Episode, rules: RuleSet) -> str:
    """acute under 6 weeks, subacute 6-12, chronic from 12 weeks since onset."""
    days = days_since_onset(today, episode)
    if days >= rules.chronic_from_days:
        return "chronic"
    if days >= rules.subacute_from_days:
        return "subacute"
    return "acute"

"""How the body answered a session (RULES.md section 4): GREEN, AMBER or RED.

A session's logs arrive around it: during-exercise logs (same session id, or
up to 2 h before it), the last after-exercise log in (s, s+6 h] and the first
morning log in [s+6 h, s+36 h] (v2: else the first baseline log there). The
verdict is final once that morning log lands or 36 h have passed; a baseline
log standing in for the morning does not make it final, since a morning log
may still come and would take its place.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.prescriber.engine.rules import RuleSet
from services.prescriber.engine.state import Pending, Verdict, amend
from shared.events import PainLogged

_ZERO = timedelta(0)


def verdict_of(session: Pending, rules: RuleSet) -> Verdict:
    """RED on during >= 5, after >= b + 2 or a next-day rise (v1: above b; v2: b + 2 or
    more); GREEN when C1, C2 and C3 are met; AMBER otherwise. "At baseline" is at most
    b + tolerance; a missing baseline compares with 2."""
    base = rules.missing_baseline if session.baseline is None else session.baseline
    during, after, next_day = session.during, session.after, session.morning
    if next_day is None and rules.next_day_baseline:
        next_day = session.next_baseline
    rise = rules.red_next_day_delta
    if (
        (during is not None and during >= rules.red_during_at)
        or (next_day is not None and (next_day > base if rise is None else next_day >= base + rise))
        or (after is not None and after >= base + rules.red_after_delta)
    ):
        return "red"
    if during is None or next_day is None:
        return "amber"
    below = rules.green_during_below
    c1 = during < below or (rules.green_during_at_rest and base >= below and during <= base)
    at_rest = base + rules.tolerance
    c3 = next_day <= at_rest
    c2 = after <= at_rest if after is not None else rules.after_optional
    return "green" if c1 and c2 and c3 else "amber"


def is_final(session: Pending, now: datetime, rules: RuleSet) -> bool:
    """Final once its morning log landed or now is at least s + 36 h."""
    return session.morning is not None or now >= session.at + rules.spans.morning_until


def due_and_pending(
    pending: tuple[Pending, ...], now: datetime, rules: RuleSet
) -> tuple[list[Pending], tuple[Pending, ...]]:
    """Split sessions into those final at ``now`` (as ``is_final``) and those still pending.

    Both keep their order; the tuple is ``pending`` itself when nothing is due.
    """
    until = now - rules.spans.morning_until  # at <= now - 36 h, i.e. now >= at + 36 h
    due = [p for p in pending if p.morning is not None or p.at <= until]
    if not due:
        return due, pending
    return due, tuple(p for p in pending if p.morning is None and p.at > until)


def attach(pending: tuple[Pending, ...], event: PainLogged, rules: RuleSet) -> tuple[Pending, ...]:
    """Attach one pain log to every pending session whose window holds it.

    Returns ``pending`` itself when the log belongs to none of them.
    """
    out = tuple(_attach_one(session, event, rules) for session in pending)
    return pending if out == pending else out


def _attach_one(session: Pending, event: PainLogged, rules: RuleSet) -> Pending:
    context, score = event.context, event.score
    since = event.occurred_at - session.at
    if context == "during_exercise" and event.session_id == session.session_id:
        return amend(session, during=max(score, session.during or 0))
    if context == "after_exercise" and _ZERO < since <= rules.spans.after:
        return amend(session, after=score)  # folded in order, so the last one wins
    if context == "morning":
        if (
            session.morning is None
            and rules.spans.morning_from <= since <= rules.spans.morning_until
        ):
            return amend(session, morning=score)
    elif (
        context == "baseline"
        and session.next_baseline is None
        and rules.spans.morning_from <= since <= rules.spans.morning_until
    ):
        return amend(session, next_baseline=score)
    return session

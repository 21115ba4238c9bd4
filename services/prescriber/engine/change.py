"""From prescription to PrescriptionChanged: diff against the last one, and build it.

A change is emitted only when phase, exercises with their doses,
sessions_per_week or referral differ from the last emitted prescription;
reasons or stage alone never emit. Its ``change`` is ``started`` for the first
one and for the RehabStarted that opens a new episode (``referred`` if it
comes with a referral); ``adjusted`` for a clinician's review; otherwise the
first that applies of: referred >
deloaded (entering a flare) > resumed (leaving one) > regressed (a level went
down) > progressed (a level went up) > phase_changed.
"""

from __future__ import annotations

from uuid import UUID, uuid5

from services.prescriber.engine.decision import Prescription, decide, detail, same_basis
from services.prescriber.engine.fold import evolve
from services.prescriber.engine.rules import DEFAULT_RULES, RuleSet
from services.prescriber.engine.state import State, amend
from shared.events import Input, PrescriptionChanged, Reason

#: Namespace of PrescriptionChanged ids: uuid5(CHANGE_NAMESPACE, f"{caused_by}:{rules_version}").
CHANGE_NAMESPACE = UUID("6f1c2a4e-9b7d-5e3f-8a21-0c4d5b6e7f80")


def react(
    state: State, event: Input, rules: RuleSet = DEFAULT_RULES
) -> tuple[State, PrescriptionChanged | None]:
    """Fold one event and emit a change if the prescription moved; none when a refold is due.

    Assumes ``state.last`` already answers ``decide(state)``, as it does for any
    state react or emit returned: after a ``replay``, call ``emit`` first. So
    when the event left what decide reads untouched (``same_basis``), nothing
    can have changed and deciding again is skipped.
    """
    folded = evolve(state, event, rules)
    if folded is state or folded.needs_refold:
        return folded, None
    if state.last is not None and same_basis(state, folded, rules):
        return folded, None
    return emit(folded, event.event_id, rules)


def emit(
    state: State, caused_by: UUID, rules: RuleSet = DEFAULT_RULES
) -> tuple[State, PrescriptionChanged | None]:
    """Decide, and if it differs from ``state.last`` build the change and keep it as last.

    The id is uuid5 of the causing event and rules version, so a redelivered
    event yields the same id, and a state already holding it yields nothing.
    """
    rx = decide(state, rules)
    if rx is None or state.now is None or same(rx, state.last):
        return state, None
    last = state.last
    changed = PrescriptionChanged(
        event_id=uuid5(CHANGE_NAMESPACE, f"{caused_by}:{rules.rules_version}"),
        user_id=state.user_id,
        occurred_at=state.now,
        version=1 if last is None else last.version + 1,
        phase=rx.phase,
        stage=rx.stage,
        change=_kind(state, rx, caused_by),
        exercises=rx.exercises,
        sessions_per_week=rx.sessions_per_week,
        reasons=_with_notes(rx.reasons, state, caused_by, rules),
        referral=rx.referral,
        caused_by=caused_by,
        rules_version=rules.rules_version,
    )
    return amend(state, last=changed), changed


def _with_notes(
    reasons: tuple[Reason, ...], state: State, caused_by: UUID, rules: RuleSet
) -> tuple[Reason, ...]:
    """Reasons owed to this change alone: medium STarT Back risk on an episode's first
    prescription, and ``rules_updated`` on the first change under a newer rule set."""
    episode, last, notes = state.episode, state.last, []
    if episode is not None and episode.start_back_medium and episode.event_id == caused_by:
        notes.append("start_back_medium_risk")
    if state.review is not None and state.review[0] == caused_by:
        notes.append(f"clinician_{state.review[1]}")
    if last is not None and last.rules_version != rules.rules_version:
        notes.append("rules_updated")
    have = {r.code for r in reasons}
    notes = [c for c in notes if c not in have]
    if not notes:
        return reasons
    return (*reasons, *(Reason(code=c, detail=detail(c)) for c in notes))


def same(rx: Prescription, last: PrescriptionChanged | None) -> bool:
    """Phase, exercises with doses, sessions per week and referral all equal."""
    return (
        last is not None
        and rx.phase == last.phase
        and rx.sessions_per_week == last.sessions_per_week
        and rx.exercises == last.exercises
        and (rx.referral is last.referral or rx.referral == last.referral)
    )


def _kind(state: State, rx: Prescription, caused_by: UUID) -> str:
    last = state.last
    new_episode = state.episode is not None and state.episode.event_id == caused_by
    if last is None or (new_episode and rx.referral is None):
        return "started"
    if state.review is not None and state.review[0] == caused_by:
        return "adjusted"
    if rx.referral is not None and (rx.referral != last.referral or rx.phase == "refer"):
        return "referred"
    if new_episode:
        return "started"
    if rx.phase == "flare" and last.phase != "flare":
        return "deloaded"
    if last.phase == "flare" and rx.phase != "flare":
        return "resumed"
    return _level_move(rx, last)


def _level_move(rx: Prescription, last: PrescriptionChanged) -> str:
    before = {e.exercise_id: e.level for e in last.exercises}
    moves = [e.level - before[e.exercise_id] for e in rx.exercises if e.exercise_id in before]
    if any(m < 0 for m in moves):
        return "regressed"
    if any(m > 0 for m in moves):
        return "progressed"
    return "phase_changed"

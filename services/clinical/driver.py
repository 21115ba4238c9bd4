"""The pure engine in the prescriber's place, one virtual patient at a time.

A patient's events reach the engine in arrival order through
``fold_arrivals``, exactly as live processing folds them; the state and the
timeline are kept between deliveries. Whenever the patient's app reads its
prescription, everything that has arrived by then is folded first, so the
patient sees what a live prescriber would have emitted by that moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from services.prescriber import engine
from services.prescriber.arrivals import Timeline, fold_arrivals
from shared.cohort.outbox import Arrival
from shared.cohort.persona import Persona
from shared.cohort.virtual import Truth, VirtualPatient
from shared.events import Input, PainLogged, PrescriptionChanged


@dataclass(frozen=True)
class Emitted:
    """A change and when the engine emitted it: the arrival of the event that caused it."""

    at: datetime
    change: PrescriptionChanged


@dataclass
class Run:
    """One patient's twelve weeks under one rule set: the truth and what the engine did."""

    persona: Persona
    rules_version: str
    weeks: int
    truth: Truth
    changes: list[Emitted] = field(default_factory=list)
    scores: list[tuple[int, int]] = field(default_factory=list)  # (day, baseline/morning)
    events: int = 0
    late: int = 0  # events that arrived after a later-occurring one
    refolds: int = 0
    flag_arrivals: dict[UUID, datetime] = field(default_factory=dict)
    arrivals: list[Arrival] | None = None  # every arrival in order, when asked to keep them

    def day_of(self, at: datetime) -> int:
        """The program day (0 = intake) of a moment, in the patient's own time zone."""
        return (at.astimezone(self.persona.tz).date() - self.persona.started_at.date()).days

    def in_force(self, at: datetime | None) -> PrescriptionChanged | None:
        """The last change emitted by ``at`` (None: by the end of the course)."""
        found = None
        for emitted in self.changes:
            if at is not None and emitted.at > at:
                break
            found = emitted.change
        return found


class EngineFeed:
    """Folds a patient's arrivals as the live prescriber would, and keeps what it emitted."""

    def __init__(self, run: Run, rules: engine.RuleSet) -> None:
        self.run = run
        self.rules = rules
        self.state = engine.initial(run.persona.user_id)
        self.earlier: list[Input] | Timeline = []
        self.newest: datetime | None = None

    def deliver(self, arrivals: Sequence[Arrival]) -> None:
        """Fold what arrived, in arrival order."""
        if not arrivals:
            return
        events = [a.event for a in arrivals]
        folded = fold_arrivals(self.state, events, self.earlier, self.rules)
        assert folded is not None  # the earlier history is always given
        if folded.timeline is not None:
            self.earlier = folded.timeline
        else:
            assert isinstance(self.earlier, list)
            self.earlier.extend(events)
        self.state = folded.state
        run = self.run
        run.refolds += folded.refolds
        arrived = {a.event.event_id: a.at for a in arrivals}
        run.changes += [Emitted(arrived[c.caused_by], c) for c in folded.changes]
        if run.arrivals is not None:
            run.arrivals += arrivals
        for arrival in arrivals:
            self._note(arrival)

    def latest(self) -> PrescriptionChanged | None:
        """The last change emitted so far."""
        return self.run.changes[-1].change if self.run.changes else None

    def _note(self, arrival: Arrival) -> None:
        run, event = self.run, arrival.event
        run.events += 1
        if event.event_id in run.truth.red_flag_events:
            run.flag_arrivals[event.event_id] = arrival.at
        if self.newest is not None and event.occurred_at < self.newest:
            run.late += 1
        else:
            self.newest = event.occurred_at
        if isinstance(event, PainLogged) and event.context in ("baseline", "morning"):
            run.scores.append((run.day_of(event.occurred_at), event.score))


def run_patient(
    persona: Persona, seed: int, weeks: int, rules: engine.RuleSet, *, keep: bool = False
) -> Run:
    """Live one patient's course against the engine; deterministic in its arguments.

    ``keep`` keeps every arrival in ``run.arrivals`` (the cohort does not need them).
    """
    patient = VirtualPatient(persona, seed, weeks)
    run = Run(persona, rules.rules_version, weeks, patient.truth, arrivals=[] if keep else None)
    feed = EngineFeed(run, rules)

    def read(at: datetime) -> PrescriptionChanged | None:
        feed.deliver(patient.arrived(at))
        return feed.latest()

    for day in range(patient.days):
        patient.live(day, read)
        feed.deliver(patient.arrived(patient.end_of(day)))
    feed.deliver(patient.arrived())
    return run

"""A virtual patient's course against a prescriber: the day loop every run shares.

``Life`` lives one patient's days against a ``Feed``: whenever the patient's
app reads its prescription, everything that has reached the server by then is
delivered first, so the patient sees what a live prescriber would have emitted
by that moment; at the end of each day the rest of the day's arrivals follow.
``Run`` records what arrived and the changes emitted, each at the arrival of
the event that caused it, however the feed learns of them.

Two feeds: ``EngineFeed`` folds the arrivals with the pure engine exactly as
live processing folds them (``make clinical``); ``services.clinical.remote``
posts them to a running stack and reads the prescription through its clinic
API (``backtrack demo``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
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
    """One patient's twelve weeks under one rule set: the truth and what the prescriber did."""

    persona: Persona
    rules_version: str
    weeks: int
    truth: Truth
    changes: list[Emitted] = field(default_factory=list)
    scores: list[tuple[int, int]] = field(default_factory=list)  # (day, baseline/morning)
    events: int = 0
    late: int = 0  # events that arrived after a later-occurring one
    refolds: int = 0
    reads: int = 0  # times the patient's app read its prescription from the prescriber
    arrived_at: dict[UUID, datetime] = field(default_factory=dict)  # event id -> its arrival
    arrivals: list[Arrival] | None = None  # every arrival in order, when asked to keep them
    newest: datetime | None = None  # the latest occurred_at among the arrivals so far

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

    def note(self, arrivals: Sequence[Arrival]) -> None:
        """Record arrivals in the order they reached the server."""
        if self.arrivals is not None:
            self.arrivals += arrivals
        for arrival in arrivals:
            event = arrival.event
            self.events += 1
            self.arrived_at[event.event_id] = arrival.at
            if self.newest is not None and event.occurred_at < self.newest:
                self.late += 1
            else:
                self.newest = event.occurred_at
            if isinstance(event, PainLogged) and event.context in ("baseline", "morning"):
                self.scores.append((self.day_of(event.occurred_at), event.score))

    def record(self, changes: Iterable[PrescriptionChanged]) -> None:
        """Record changes emitted, in order; each caused by an event already noted."""
        self.changes += [Emitted(self.arrived_at[c.caused_by], c) for c in changes]


class Feed(Protocol):
    """Where a patient's events go and where its app reads the prescription."""

    def deliver(self, arrivals: Sequence[Arrival]) -> list[PrescriptionChanged]:
        """Hand over what reached the server, in arrival order; return the changes known now."""
        ...

    def latest(self) -> PrescriptionChanged | None:
        """The prescription the server holds once everything delivered is processed."""
        ...


class Life:
    """One virtual patient's days against one feed, recorded in ``run``."""

    def __init__(
        self,
        persona: Persona,
        seed: int,
        weeks: int,
        feed: Feed,
        rules_version: str,
        *,
        keep: bool = False,
    ) -> None:
        self.patient = VirtualPatient(persona, seed, weeks)
        self.feed = feed
        self.run = Run(
            persona, rules_version, weeks, self.patient.truth, arrivals=[] if keep else None
        )

    @property
    def days(self) -> int:
        """Program days in the course (intake day included)."""
        return self.patient.days

    def live(self, day: int) -> None:
        """Live program ``day``, then deliver the rest of what arrived by its end."""
        self.patient.live(day, self.read)
        self._deliver(self.patient.arrived(self.patient.end_of(day)))

    def finish(self) -> Run:
        """Deliver whatever is still on its way (a device that syncs late) and return the run."""
        self._deliver(self.patient.arrived())
        return self.run

    def read(self, at: datetime) -> PrescriptionChanged | None:
        """The patient's reader: deliver what arrived by ``at``, then ask the feed."""
        self._deliver(self.patient.arrived(at))
        self.run.reads += 1
        return self.feed.latest()

    def _deliver(self, arrivals: list[Arrival]) -> None:
        if arrivals:
            self.run.note(arrivals)
            self.run.record(self.feed.deliver(arrivals))


class EngineFeed:
    """Folds a patient's arrivals with the pure engine, as the live prescriber would."""

    def __init__(self, user_id: str, rules: engine.RuleSet) -> None:
        self.rules = rules
        self.state = engine.initial(user_id)
        self.earlier: list[Input] | Timeline = []
        self.last: PrescriptionChanged | None = None
        self.refolds = 0

    def deliver(self, arrivals: Sequence[Arrival]) -> list[PrescriptionChanged]:
        """Fold what arrived, in arrival order; return the changes it emitted."""
        events = [a.event for a in arrivals]
        folded = fold_arrivals(self.state, events, self.earlier, self.rules)
        assert folded is not None  # the earlier history is always given
        if folded.timeline is not None:
            self.earlier = folded.timeline
        else:
            assert isinstance(self.earlier, list)
            self.earlier.extend(events)
        self.state = folded.state
        self.refolds += folded.refolds
        if folded.changes:
            self.last = folded.changes[-1]
        return folded.changes

    def latest(self) -> PrescriptionChanged | None:
        """The last change emitted so far."""
        return self.last


def run_patient(
    persona: Persona, seed: int, weeks: int, rules: engine.RuleSet, *, keep: bool = False
) -> Run:
    """Live one patient's course against the engine; deterministic in its arguments.

    ``keep`` keeps every arrival in ``run.arrivals`` (the cohort does not need them).
    """
    feed = EngineFeed(persona.user_id, rules)
    life = Life(persona, seed, weeks, feed, rules.rules_version, keep=keep)
    for day in range(life.days):
        life.live(day)
    run = life.finish()
    run.refolds = feed.refolds
    return run

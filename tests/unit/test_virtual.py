"""Virtual patients: seeded, closed-loop, and true to their archetypes and their physiology."""

from __future__ import annotations

import ast
import dataclasses
import random
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from statistics import mean, median
from uuid import UUID

import pytest

from services.prescriber.engine.rules import builtin
from shared import codec
from shared.cohort.body import Body
from shared.cohort.persona import ARCHETYPES, Persona, make_persona, mixture, personas
from shared.cohort.virtual import VirtualPatient
from shared.events import (
    Input,
    PainLogged,
    PrescriptionChanged,
    RehabStarted,
    SessionCompleted,
)

SEED = 5
ZERO = UUID(int=0)
BUILD = ("cat_camel", "rib_closure", "spine_curl_bridge", "knee_hugs", "walking")
Reader = Callable[[datetime], PrescriptionChanged | None]


def prescription(
    level: int, *, exercises: tuple[str, ...] = BUILD, phase: str = "build", per_week: int = 3
) -> PrescriptionChanged:
    """A prescription of ``exercises`` at ``level``, as the engine's ladders dose them."""
    rules = builtin("1")
    return PrescriptionChanged.model_validate(
        {
            "event_id": ZERO,
            "user_id": "u",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
            "version": 1,
            "phase": phase,
            "stage": "acute",
            "change": "started",
            "exercises": tuple(rules.prescribed(e, level) for e in exercises),
            "sessions_per_week": per_week,
            "reasons": (),
            "referral": None,
            "caused_by": ZERO,
            "rules_version": "test",
        }
    )


def fixed(rx: PrescriptionChanged | None) -> Reader:
    """A reader that always shows the same prescription."""
    return lambda at: rx


def live(patient: VirtualPatient, read: Reader) -> list[Input]:
    """Every event of a patient's course, in arrival order."""
    for day in range(patient.days):
        patient.live(day, read)
    return [a.event for a in patient.arrived()]


def of(archetype: str, count: int = 6) -> list[Persona]:
    """The first ``count`` patients of one archetype."""
    return personas(count, SEED, archetypes={archetype: 1.0})


@cache
def _mixed() -> tuple[tuple[Persona, tuple[Input, ...]], ...]:
    return tuple(
        (p, tuple(live(VirtualPatient(p, SEED), fixed(prescription(2)))))
        for p in personas(60, SEED)
    )


def test_same_seed_gives_the_same_events_and_truth() -> None:
    """Two lives of one persona with the same seed and prescriptions are byte-identical."""
    persona = personas(4, SEED)[3]
    first, second = VirtualPatient(persona, SEED), VirtualPatient(persona, SEED)
    one, two = live(first, fixed(prescription(2))), live(second, fixed(prescription(2)))
    assert [codec.dumps(e) for e in one] == [codec.dumps(e) for e in two]
    assert first.truth == second.truth


def test_patient_i_does_not_depend_on_cohort_size() -> None:
    """Persona i is the same in a cohort of 3 or of 50, and so is its course."""
    small, large = personas(3, SEED), personas(50, SEED)
    assert small == large[:3]
    a, b = VirtualPatient(small[2], SEED), VirtualPatient(large[2], SEED)
    assert live(a, fixed(prescription(1))) == live(b, fixed(prescription(1)))


def test_archetype_weights_select_and_reject_unknown_names() -> None:
    """Weights choose the mix; an unknown archetype name is a ValueError."""
    assert {p.archetype for p in of("chronic")} == {"chronic"}
    assert set(mixture(None)[0]) == set(ARCHETYPES)
    with pytest.raises(ValueError, match="unknown archetypes"):
        mixture({"sprinter": 1.0})


def test_every_event_is_valid_with_unique_ids_and_aware_times() -> None:
    """Events round-trip through the codec, ids are unique, times carry several offsets."""
    events = [e for _, evs in _mixed() for e in evs]
    assert all(codec.loads(codec.dumps(e)) == e for e in events)
    assert len({e.event_id for e in events}) == len(events)
    assert len({e.occurred_at.utcoffset() for e in events}) >= 3


def test_a_patient_does_exactly_the_prescribed_exercises_at_their_doses() -> None:
    """Sessions log the prescription's exercises with its doses: level 3 in, level 3 out."""
    for level in (1, 3):
        rx = prescription(level)
        sessions = [
            e
            for e in live(VirtualPatient(of("improver")[0], SEED), fixed(rx))
            if isinstance(e, SessionCompleted) and e.completed
        ]
        assert sessions
        for session in sessions:
            done = [(x.exercise_id, x.sets, x.reps, x.minutes) for x in session.exercises]
            assert done == [(x.exercise_id, x.sets or 1, x.reps, x.minutes) for x in rx.exercises]


def test_the_prescription_read_is_what_the_patient_does_next() -> None:
    """A reader that steps the level up mid-course is followed from the next session on."""
    patient = VirtualPatient(of("improver")[1], SEED)
    switch = patient.end_of(30)
    live(patient, lambda at: prescription(1 if at < switch else 2))
    assert {s.load for s in patient.truth.sessions if s.day <= 30} == {1.0}
    assert {s.load for s in patient.truth.sessions if s.day > 31} == {2.0}


def test_no_exercises_prescribed_means_no_session() -> None:
    """With no prescription, or one with nothing to do (refer), the patient logs no session."""
    for rx in (None, prescription(1, exercises=(), phase="refer")):
        events = live(VirtualPatient(of("improver")[2], SEED), fixed(rx))
        assert not any(isinstance(e, SessionCompleted) for e in events)
        assert any(isinstance(e, PainLogged) and e.context == "morning" for e in events)


def test_sessions_follow_the_prescribed_sessions_per_week() -> None:
    """Seven a week prescribed (protect, flare) gives far more sessions than two a week."""
    persona = dataclasses.replace(of("improver")[3], adherence=1.0)
    counts = [
        len(live_truth(persona, prescription(1, exercises=("walking",), per_week=n)).truth.sessions)
        for n in (2, 7)
    ]
    assert counts[1] > 3 * counts[0]


def live_truth(persona: Persona, rx: PrescriptionChanged) -> VirtualPatient:
    """A patient after living its course under one fixed prescription."""
    patient = VirtualPatient(persona, SEED)
    live(patient, fixed(rx))
    return patient


def test_overload_raises_pain_during_after_and_next_morning() -> None:
    """Level 5 from day one overloads: more pain during, clear overloads at 5+, higher mornings."""
    for persona in of("improver", 4):
        easy, hard = live_truth(persona, prescription(1)), live_truth(persona, prescription(5))
        over = [s for s in hard.truth.sessions if s.overloaded]
        assert over
        assert hard.truth.overload_days == [s.day for s in over]
        assert all(s.during >= 5 for s in over if s.excess >= 1)
        assert mean(s.during for s in hard.truth.sessions) > mean(
            s.during for s in easy.truth.sessions
        )
        assert not any(s.overloaded for s in easy.truth.sessions)
        assert _mean_resting(hard) > _mean_resting(easy)


def _mean_resting(patient: VirtualPatient) -> float:
    return mean(r for _, r, _ in patient.truth.daily)


def test_well_dosed_load_builds_capacity_and_too_little_stalls() -> None:
    """Sessions near capacity add capacity; far below it they add none; above it they cost."""
    persona = dataclasses.replace(of("plateau")[0], capacity0=3.0, capacity_max=6.0, gain=0.1)
    rng = random.Random(1)
    for load, grows in ((2.8, True), (1.0, False)):
        body = Body(persona)
        for _ in range(5):
            body.session(10, load, rng)
        assert (body.trained > 3.0) is grows
        assert body.trained >= 3.0
    body = Body(persona)
    response = body.session(10, 4.5, rng)
    assert response.excess > 1
    assert response.during >= 5
    assert body.trained < 3.0
    assert body.irritation > 0


def test_flares_and_irritation_lower_the_load_tolerated() -> None:
    """On a simulated flare's days the effective capacity is lower than before it."""
    persona = of("flare")[0]
    body, flare = Body(persona), persona.flares[0]
    assert body.effective(flare.start + 2) < body.effective(flare.start - 1)


def test_improvers_improve_plateaus_stay_and_chronic_stay_at_3_or_more() -> None:
    """Improvers fall by the minimal important change by day 42, plateau stays, chronic >= 3."""
    for p in of("improver"):
        assert p.natural(42) <= min(p.pain0 - 2, 0.7 * p.pain0)
    for p in of("plateau"):
        assert abs(p.natural(83) - p.natural(0)) <= 0.5
    for p in of("chronic"):
        patient = live_truth(p, prescription(1))
        assert all(r >= 3 for _, r, _ in patient.truth.daily)
        assert patient.truth.daily[-1][1] < patient.truth.daily[0][1]


def test_flare_prone_patients_have_a_sustained_rise_from_a_known_day() -> None:
    """Each flare lifts resting pain by 2 or more for at least three days from its true start."""
    for p in of("flare"):
        patient = live_truth(p, prescription(1))
        resting = {d: r for d, r, _ in patient.truth.daily}
        assert patient.truth.flares
        for start, last in patient.truth.flares:
            before = resting[start - 1]
            assert last - start >= 4
            assert all(resting[d] >= before + 2 for d in range(start + 1, start + 4))


def test_radicular_patients_log_leg_pain_below_the_knee_on_several_days() -> None:
    """A radicular patient logs leg_below_knee on two days or more; no one else ever does."""
    for p in of("radicular"):
        events = live(VirtualPatient(p, SEED), fixed(prescription(1)))
        days = {
            e.occurred_at.date()
            for e in events
            if isinstance(e, PainLogged) and e.location == "leg_below_knee"
        }
        assert len(days) >= 2
    for p, events in _mixed():
        if p.archetype != "radicular":
            assert not any(
                isinstance(e, PainLogged) and e.location == "leg_below_knee" for e in events
            )


def test_late_sync_arrivals_are_out_of_order_and_reads_go_stale() -> None:
    """An offline device delivers events out of occurred_at order and exercises on a cached read."""
    for p in of("late_sync", 4):
        patient = VirtualPatient(p, SEED)
        events = live(patient, fixed(prescription(1)))
        assert events != sorted(events, key=lambda e: e.occurred_at)
        assert any(s.stale for s in patient.truth.sessions)
    for p, events in _mixed():
        if not p.offline:
            assert list(events) == sorted(events, key=lambda e: e.occurred_at)


def test_red_flags_are_reported_and_recorded_as_truth() -> None:
    """red_flag patients report a flag (some at intake); its event ids are the truth's."""
    at_intake = 0
    for p in of("red_flag", 12):
        patient = VirtualPatient(p, SEED)
        events = live(patient, fixed(prescription(1)))
        flagged = [
            e.event_id for e in events if isinstance(e, RehabStarted | PainLogged) and e.red_flags
        ]
        assert flagged
        assert sorted(flagged) == sorted(patient.truth.red_flag_events)
        at_intake += bool(p.intake_red_flags)
    assert 0 < at_intake < 12


def test_runners_want_to_run_and_skippers_skip() -> None:
    """Runners have goal and preference running; skippers do under half their sessions."""
    assert all("running" in p.goals and "running" in p.preferences for p in of("runner"))
    for p in of("skipper"):
        patient = live_truth(p, prescription(1, per_week=p.sessions_per_week))
        assert len(patient.truth.sessions) < p.sessions_per_week * 12 / 2


def test_morning_noise_is_about_a_point_with_an_occasional_noisy_morning() -> None:
    """Most mornings are within a point of resting pain; a few are 2 or more above it."""
    gaps = []
    for p, events in _mixed():
        patient = VirtualPatient(p, SEED)
        live(patient, fixed(prescription(2)))
        resting = {d: r for d, r, _ in patient.truth.daily}
        day0 = p.started_at.date()
        for e in events:
            if isinstance(e, PainLogged) and e.context == "morning":
                gaps.append(e.score - resting[(e.occurred_at.date() - day0).days])
    within = sum(abs(g) <= 1 for g in gaps) / len(gaps)
    assert 0.8 < within < 0.98
    assert 0 < sum(g >= 2 for g in gaps) / len(gaps) < 0.06
    assert abs(median(gaps)) < 0.5


def test_sprains_in_their_first_week_and_long_onsets_both_occur() -> None:
    """Some sprains start inside the protect week, some onsets lie months before intake."""
    people = personas(200, SEED)
    since = [(p.started_at.date() - p.onset_date).days for p in people if p.onset_date]
    sprains = [p for p in people if p.cause == "sprain_strain" and p.onset_date]
    assert any((p.started_at.date() - p.onset_date).days < 7 for p in sprains if p.onset_date)
    assert max(since) > 90
    assert {p.sessions_per_week for p in people} == {2, 3, 4, 5}


def test_shared_never_imports_services() -> None:
    """No module under shared/ imports from services/ (patients read through a callable)."""
    root = Path(__file__).parents[2] / "shared"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "services" or n.startswith("services.") for n in names), path


def test_make_persona_is_a_pure_function_of_seed_and_index() -> None:
    """The same (seed, index) draws the same persona; another seed draws another."""
    assert make_persona(3, 7) == make_persona(3, 7)
    assert make_persona(3, 7) != make_persona(4, 7)

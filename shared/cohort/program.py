"""What a simulated patient does in a session: the RULES.md program, roughly.

The simulator guesses the program the engine would prescribe (ladders of
RULES.md section 9) so logged sessions look plausible; it never asks the
engine. Exercise lists are cached: frozen models are safe to share.
"""

from __future__ import annotations

from functools import lru_cache

from shared.events import ExerciseDone

from .profile import Patient

# (sets, reps, hold_seconds) per level 1-5
_LADDERS: dict[str, tuple[tuple[int, int | None, int | None], ...]] = {
    "cat_camel": ((1, 8, None), (2, 8, None), (2, 10, None), (3, 10, None), (3, 12, None)),
    "rib_closure": ((2, 6, None), (3, 6, None), (3, 8, None), (3, 8, None), (3, 10, None)),
    "spine_curl_bridge": ((2, 8, None), (3, 8, None), (3, 12, None), (3, 8, 5), (3, 8, None)),
    "knee_hugs": ((3, None, 30),) * 5,
    "bird_dog": ((2, 6, None), (3, 6, None), (3, 8, None), (3, 10, None), (3, 10, 3)),
}
_CORE = ("cat_camel", "rib_closure", "spine_curl_bridge", "knee_hugs")
_AEROBIC = ("walking", "swimming", "cycling")
MAX_LEVEL = 5


@lru_cache(maxsize=4096)
def exercise(exercise_id: str, level: int) -> ExerciseDone:
    """One exercise done at one ladder level, as the patient logs it."""
    level = max(1, min(MAX_LEVEL, level))
    if exercise_id in _LADDERS:
        sets, reps, hold = _LADDERS[exercise_id][level - 1]
        return ExerciseDone(exercise_id=exercise_id, sets=sets, reps=reps, hold_seconds=hold)
    if exercise_id == "running":  # walk-run intervals, then continuous
        if level == MAX_LEVEL:
            return ExerciseDone(exercise_id="running", sets=1, minutes=20)
        return ExerciseDone(exercise_id="running", sets=4 if level == 4 else 5, minutes=5)
    return ExerciseDone(exercise_id=exercise_id, sets=1, minutes=5 + 5 * level)


@lru_cache(maxsize=4096)
def _session(ids: tuple[str, ...], level: int) -> tuple[ExerciseDone, ...]:
    return tuple(exercise(exercise_id, level) for exercise_id in ids)


def aerobic(patient: Patient) -> str:
    """The aerobic slot: the first of walking/swimming/cycling preferred, else walking."""
    return next((p for p in patient.preferences if p in _AEROBIC), "walking")


def build_start(patient: Patient) -> int:
    """Course day the build phase starts: day 7 after a sprain, else at once."""
    if patient.cause != "sprain_strain" or patient.onset_date is None:
        return 0
    since = (patient.started_at.date() - patient.onset_date).days
    return max(0, 7 - since)


def session_plan(patient: Patient, day: int, *, flaring: bool) -> tuple[ExerciseDone, ...]:
    """The exercises a patient does on course ``day`` if the session goes to plan."""
    first = build_start(patient)
    slot = aerobic(patient)
    if day < first:
        return (exercise("walking", 1),)
    if flaring:
        return _session(("cat_camel", "knee_hugs", slot), 1)
    level = 1 + (day - first) // patient.progress_every
    ids = _CORE + (("bird_dog",) if {"strength", "pilates"} & set(patient.preferences) else ())
    plan = _session((*ids, slot), level)
    if patient.run_from is not None and day >= patient.run_from:
        run = exercise("running", 1 + (day - patient.run_from) // 7)
        return (*plan[:-1], run)
    return plan


def minutes(plan: tuple[ExerciseDone, ...]) -> int:
    """A plausible session length: aerobic minutes plus ~3 min per strength exercise."""
    return sum((e.minutes or 0) * e.sets if e.minutes else 3 for e in plan)

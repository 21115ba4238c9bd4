"""How hard a session is, in ladder levels: one load index for patients and metrics alike.

The ladders of RULES.md section 9 are the scale. A strengthening or control
exercise at level n loads the back n. Knee hugs are the same relaxing hold at
every level, so they load 1. The aerobic slot is gentler than the exercise of
the same level (walking 30 minutes, its top, loads like a level-3 bridge):
0.5 + 0.5 n. Running is harder than any walk: a walk-run with one-minute runs
starts at 3.75 and continuous running loads 6.75, so returning to running
needs more capacity than finishing the back ladders.

A session loads as much as its hardest exercise: what hurts a back is the
heaviest thing it is asked to do, not the average over the gentle ones.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.events import PrescribedExercise, PrescriptionChanged

AEROBIC = ("walking", "swimming", "cycling")
RUNNING = "running"
RELAXING = ("knee_hugs",)
CORE = ("cat_camel", "rib_closure", "spine_curl_bridge")


def intensity(exercise_id: str, level: int) -> float:
    """The load of one exercise at one ladder level."""
    if exercise_id in RELAXING:
        return 1.0
    if exercise_id in AEROBIC:
        return 0.5 + 0.5 * level
    if exercise_id == RUNNING:
        return 3.0 + 0.75 * level
    return float(level)


def load_of(exercises: Iterable[tuple[str, int]]) -> float:
    """The load of a session of (exercise_id, level) pairs: its hardest one; 0 for none."""
    return max((intensity(e, level) for e, level in exercises), default=0.0)


def prescribed_load(rx: PrescriptionChanged | None) -> float:
    """The load a prescription asks for (0 with none, or none to do)."""
    if rx is None:
        return 0.0
    return load_of((e.exercise_id, e.level) for e in rx.exercises)


def core_level(exercises: Iterable[PrescribedExercise]) -> int | None:
    """The level of the core back exercises in a prescription (their highest), or None."""
    levels = [e.level for e in exercises if e.exercise_id in CORE]
    return max(levels) if levels else None

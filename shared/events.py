"""The published language: every event in the public contract (DESIGN.md).

Events are frozen pydantic models, one discriminated union on ``type``. Field
names, enums and ranges are exactly the contract's; anything outside them is a
validation error naming the field. ``schema_version`` says which wire version
an event was written in; older versions are upcast (``shared.codec``) before
validation, so models only ever describe the current version.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

UserId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ClinicId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
ExerciseId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,40}$")]
Score = Annotated[int, Field(strict=True, ge=0, le=10)]
Count = Annotated[int, Field(strict=True, ge=0, le=1000)]

Cause = Literal["sprain_strain", "gradual", "unknown"]
Goal = Literal["daily_life", "running", "gym", "sport"]
Preference = Literal[
    "strength", "pilates", "yoga", "stretching", "walking", "swimming", "cycling", "running"
]
RedFlag = Literal[
    "saddle_numbness",
    "bladder_bowel_change",
    "progressive_leg_weakness",
    "fever_or_unwell",
    "cancer_history",
    "unexplained_weight_loss",
    "major_trauma",
    "constant_night_pain",
    "bilateral_leg_symptoms",
    "sexual_dysfunction",
    "immunosuppression",
    "iv_drug_use",
    "long_term_steroids",
    "osteoporosis",
    "thoracic_pain",
]
PainContext = Literal["baseline", "morning", "during_exercise", "after_exercise"]
#: Where the pain is felt (PainLogged v2): back, buttock, or down the leg; below
#: the knee is the classic sign of radicular (nerve root) pain.
PainLocation = Literal["lower_back", "buttock", "leg_above_knee", "leg_below_knee"]
Difficulty = Literal["easy", "ok", "hard"]
Phase = Literal["protect", "build", "flare", "return_to_run", "refer"]
Stage = Literal["acute", "subacute", "chronic"]
Change = Literal[
    "started", "progressed", "regressed", "deloaded", "resumed", "phase_changed", "referred"
]
Urgency = Literal["emergency", "urgent", "routine"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class _Event(BaseModel):
    """Fields every event carries. Times are RFC 3339 with an offset."""

    model_config = _FROZEN

    event_id: UUID
    user_id: UserId
    occurred_at: AwareDatetime
    schema_version: Literal[1] = 1


class RehabStarted(_Event):
    """A new episode of care; a later one starts the patient over."""

    type: Literal["RehabStarted"] = "RehabStarted"
    onset_date: date | None = None
    cause: Cause = "unknown"
    goals: tuple[Goal, ...] = ()
    preferences: tuple[Preference, ...] = ()
    sessions_per_week: Annotated[int, Field(strict=True, ge=1, le=7)] = 3
    clinic_id: ClinicId | None = None
    red_flags: tuple[RedFlag, ...] = ()
    start_back: Annotated[tuple[bool, ...], Field(min_length=9, max_length=9)] | None = None


class PainLogged(_Event):
    """One pain score (0-10) in one context; v2 adds where it hurts (optional).

    Version 1 payloads (no ``location``) are upcast by ``shared.codec``.
    """

    type: Literal["PainLogged"] = "PainLogged"
    schema_version: Literal[2] = 2  # type: ignore[assignment]
    score: Score
    context: PainContext
    session_id: SessionId | None = None
    red_flags: tuple[RedFlag, ...] = ()
    location: PainLocation | None = None


class ExerciseDone(BaseModel):
    """One exercise of a completed session, as the patient did it."""

    model_config = _FROZEN

    exercise_id: ExerciseId
    sets: Count
    reps: Count | None = None
    hold_seconds: Count | None = None
    minutes: Count | None = None


class SessionCompleted(_Event):
    """An exercise session the patient finished (fully or in part)."""

    type: Literal["SessionCompleted"] = "SessionCompleted"
    session_id: SessionId
    exercises: Annotated[tuple[ExerciseDone, ...], Field(max_length=50)] = ()
    completed: bool
    difficulty: Difficulty
    pain_during: Score | None = None
    duration_minutes: Annotated[int, Field(strict=True, ge=0, le=600)] | None = None


class PrescribedExercise(BaseModel):
    """One exercise of a prescription at one ladder level; unused doses are null."""

    model_config = _FROZEN

    exercise_id: str
    name: str
    level: int
    sets: int | None = None
    reps: int | None = None
    hold_seconds: int | None = None
    minutes: int | None = None


class Reason(BaseModel):
    """Why a prescription changed: a stable code clinics filter on, and a detail."""

    model_config = _FROZEN

    code: str
    detail: str


class Referral(BaseModel):
    model_config = _FROZEN

    urgency: Urgency
    reason: str


class PrescriptionChanged(_Event):
    """Output: the prescription differs from the last one emitted for this user.

    ``event_id`` is uuid5 of the causing event and the rules version, so a
    redelivered input can never produce a second, different change.
    """

    type: Literal["PrescriptionChanged"] = "PrescriptionChanged"
    version: Annotated[int, Field(ge=1)]
    phase: Phase
    stage: Stage
    change: Change
    exercises: tuple[PrescribedExercise, ...]
    sessions_per_week: int
    reasons: tuple[Reason, ...]
    referral: Referral | None
    caused_by: UUID
    rules_version: str


InputEvent = Annotated[RehabStarted | PainLogged | SessionCompleted, Field(discriminator="type")]
AnyEvent = Annotated[
    RehabStarted | PainLogged | SessionCompleted | PrescriptionChanged,
    Field(discriminator="type"),
]
Input = RehabStarted | PainLogged | SessionCompleted
Event = Input | PrescriptionChanged

INPUT_TYPES: dict[str, type[Input]] = {
    "RehabStarted": RehabStarted,
    "PainLogged": PainLogged,
    "SessionCompleted": SessionCompleted,
}

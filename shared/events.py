"""The published language: every event in the public contract (DESIGN.md).

Events are frozen pydantic models, one discriminated union on ``type``. Field
names, enums and ranges are exactly the contract's; anything outside them is a
validation error naming the field. ``schema_version`` says which wire version
an event was written in; older versions are upcast (``shared.codec``) before
validation, so models only ever describe the current version.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

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
    # v2 (RULES.md section 1): emergency
    "bilateral_leg_symptoms",
    "sexual_dysfunction",
    # v2: urgent
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
    "started",
    "progressed",
    "regressed",
    "deloaded",
    "resumed",
    "phase_changed",
    "referred",
    "adjusted",
]
Urgency = Literal["emergency", "urgent", "routine"]
ReviewAction = Literal[
    "clear_red_flags",
    "set_levels",
    "exclude_exercise",
    "include_exercise",
    "hold",
    "release",
    "acknowledge_referral",
]
#: The field each action takes besides itself; every other action leaves it out.
ARGUMENT_OF: Final[dict[str, str]] = {
    "set_levels": "levels",
    "exclude_exercise": "exercise_id",
    "include_exercise": "exercise_id",
}
Level = Annotated[int, Field(strict=True, ge=1, le=5)]
Instrument = Literal["rmdq", "odi", "psfs", "pgic"]
#: The score range of each outcome instrument (RULES.md section 11), bounds included.
OUTCOME_RANGES: Final[dict[str, tuple[int, int]]] = {
    "rmdq": (0, 24),
    "odi": (0, 100),
    "psfs": (0, 10),
    "pgic": (1, 7),
}
#: ``ClinicianReviewed.reviewed_by`` for reviews written with an operator token.
OPERATOR_REVIEWER: Final = "operator"

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


class Levels(Mapping[str, int]):
    """``exercise_id -> level`` of a ``set_levels`` review: read-only and hashable.

    On the wire a JSON object (keys as ``ExerciseId``, values strict integers
    1-5); this type only freezes what pydantic validated, so an event holding
    it stays immutable and hashable like every other event.
    """

    __slots__ = ("_levels",)

    def __init__(self, levels: Mapping[str, int]) -> None:
        self._levels = dict(levels)

    def __getitem__(self, exercise_id: str) -> int:
        return self._levels[exercise_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._levels)

    def __len__(self) -> int:
        return len(self._levels)

    def __hash__(self) -> int:
        return hash(frozenset(self._levels.items()))

    def __repr__(self) -> str:
        return f"Levels({self._levels!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # non-empty; at most as many exercises as a SessionCompleted may list
        as_object = handler(Annotated[dict[ExerciseId, Level], Field(min_length=1, max_length=50)])
        return core_schema.no_info_after_validator_function(
            cls,
            as_object,
            serialization=core_schema.plain_serializer_function_ser_schema(
                dict, return_schema=as_object
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        as_object = handler(schema)
        # patternProperties alone would leave keys that are no exercise_id unconstrained
        [(pattern, level)] = as_object.pop("patternProperties").items()
        return {**as_object, "propertyNames": {"pattern": pattern}, "additionalProperties": level}


def _actions_taking(field: str) -> list[str]:
    return [action for action, argument in ARGUMENT_OF.items() if argument == field]


def _arguments_schema(kinds: dict[str, str]) -> dict[str, Any]:
    """``ARGUMENT_OF`` in JSON Schema (``kinds``: field -> JSON type), for the API documents."""
    return {
        "allOf": [
            {
                "if": {"properties": {"action": {"enum": _actions_taking(field)}}},
                "then": {"required": [field], "properties": {field: {"type": kind}}},
                "else": {"properties": {field: {"type": "null"}}},
            }
            for field, kind in kinds.items()
        ]
    }


def _ranges_schema() -> dict[str, Any]:
    """``OUTCOME_RANGES`` in JSON Schema, for the API documents."""
    return {
        "allOf": [
            {
                "if": {"properties": {"instrument": {"const": instrument}}},
                "then": {"properties": {"score": {"minimum": low, "maximum": high}}},
            }
            for instrument, (low, high) in OUTCOME_RANGES.items()
        ]
    }


class ClinicianReviewed(_Event):
    """A clinician acted on a patient's program (RULES.md section 10).

    ``levels`` comes with ``set_levels`` only, ``exercise_id`` with
    ``exclude_exercise``/``include_exercise`` only; either out of place is an
    error naming that field. ``note`` is free text for the clinic: never
    logged, never in a webhook. ``reviewed_by`` is the clinic id or
    ``operator``, set by the ingest from the writer's token; whatever a client
    sent there is replaced.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra=_arguments_schema({"levels": "object", "exercise_id": "string"}),
    )

    type: Literal["ClinicianReviewed"] = "ClinicianReviewed"
    action: ReviewAction
    levels: Levels | None = Field(default=None, validate_default=True)
    exercise_id: ExerciseId | None = Field(default=None, validate_default=True)
    note: Annotated[str, StringConstraints(max_length=2000)] | None = None
    reviewed_by: ClinicId | None = None

    @field_validator("levels", "exercise_id")
    @classmethod
    def _argument_of_the_action(cls, value: Any, info: ValidationInfo) -> Any:
        """Given exactly when the action takes this field (``ARGUMENT_OF``), else an error on it."""
        action, field = info.data.get("action"), info.field_name
        if action is None:  # the action itself is the error
            return value
        if value is None and ARGUMENT_OF.get(action) == field:
            raise PydanticCustomError(
                "missing", "Field required for action {action}", {"action": action}
            )
        if value is not None and ARGUMENT_OF.get(action) != field:
            raise PydanticCustomError(
                "unexpected_argument",
                "Only allowed with action {actions}, not {action}",
                {"action": action, "actions": " or ".join(_actions_taking(str(field)))},
            )
        return value


class OutcomeRecorded(_Event):
    """An outcome measure's score (RULES.md section 11), within its instrument's range.

    Ranges, bounds included: ``rmdq`` 0-24, ``odi`` 0-100, ``psfs`` 0-10,
    ``pgic`` 1-7 (``OUTCOME_RANGES``). Any JSON number in range; booleans,
    strings and non-finite numbers are refused.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_ranges_schema())

    type: Literal["OutcomeRecorded"] = "OutcomeRecorded"
    instrument: Instrument
    score: Annotated[float, Field(strict=True, allow_inf_nan=False)]

    @field_validator("score")
    @classmethod
    def _score_in_range(cls, score: float, info: ValidationInfo) -> float:
        instrument = info.data.get("instrument")
        if instrument is None:  # the instrument is the error
            return score
        low, high = OUTCOME_RANGES[instrument]
        if not low <= score <= high:
            raise PydanticCustomError(
                "out_of_range",
                "Input should be between {low} and {high} for {instrument}",
                {"low": low, "high": high, "instrument": instrument},
            )
        return score


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


Input = RehabStarted | PainLogged | SessionCompleted | ClinicianReviewed | OutcomeRecorded
Event = Input | PrescriptionChanged
InputEvent = Annotated[Input, Field(discriminator="type")]
AnyEvent = Annotated[Event, Field(discriminator="type")]

INPUT_TYPES: dict[str, type[Input]] = {
    "RehabStarted": RehabStarted,
    "PainLogged": PainLogged,
    "SessionCompleted": SessionCompleted,
    "ClinicianReviewed": ClinicianReviewed,
    "OutcomeRecorded": OutcomeRecorded,
}

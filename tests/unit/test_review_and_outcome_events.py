"""ClinicianReviewed and OutcomeRecorded: fields, ranges and field-level errors (contract v1.1)."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from pydantic import ValidationError

from services.logging_svc.ingest import Rejected, to_event
from shared import codec
from shared.events import (
    INPUT_TYPES,
    ClinicianReviewed,
    Levels,
    OutcomeRecorded,
    PainLogged,
    RehabStarted,
)
from tests.integration.events_factory import make_change

COMMON = {
    "event_id": "3e7b9d21-8c4f-4a6e-b5d0-7f2a1c9e4b66",
    "user_id": "p-0001",
    "occurred_at": "2026-01-20T14:05:00+01:00",
}
ARGUMENTS: dict[str, dict[str, Any]] = {
    "clear_red_flags": {},
    "set_levels": {"levels": {"cat_camel": 3}},
    "exclude_exercise": {"exercise_id": "bird_dog"},
    "include_exercise": {"exercise_id": "bird_dog"},
    "hold": {},
    "release": {},
    "acknowledge_referral": {},
}


def review(**fields: Any) -> dict[str, Any]:
    return {**COMMON, "type": "ClinicianReviewed", "action": "hold", **fields}


def outcome(instrument: str = "rmdq", score: Any = 12, **fields: Any) -> dict[str, Any]:
    return {**COMMON, "type": "OutcomeRecorded", "instrument": instrument, "score": score, **fields}


def errors(raw: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """The (location, type) of each error as a client of the ingest sees it."""
    with pytest.raises(Rejected) as info:
        to_event(raw)
    return [(tuple(e["loc"]), e["type"]) for e in info.value.detail]


def fields_in_error(raw: dict[str, Any]) -> set[str | int]:
    return {loc[1] for loc, _ in errors(raw)}


@pytest.mark.parametrize("action", list(ARGUMENTS))
def test_each_action_is_accepted_with_exactly_its_arguments(action: str) -> None:
    """Every action of the contract validates with its argument (or none) and keeps it."""
    event = codec.input_from_raw(review(action=action, **ARGUMENTS[action]))
    assert isinstance(event, ClinicianReviewed)
    assert event.action == action
    assert (event.levels is not None) == (action == "set_levels")
    assert (event.exercise_id is not None) == (action in ("exclude_exercise", "include_exercise"))


def test_set_levels_without_levels_names_levels() -> None:
    """set_levels needs levels: absent, null or empty is an error on ``levels``."""
    assert errors(review(action="set_levels")) == [(("body", "levels"), "missing")]
    assert errors(review(action="set_levels", levels=None)) == [(("body", "levels"), "missing")]
    assert errors(review(action="set_levels", levels={})) == [(("body", "levels"), "too_short")]


@pytest.mark.parametrize("action", [a for a in ARGUMENTS if a != "set_levels"])
def test_levels_with_another_action_names_levels(action: str) -> None:
    """Levels are refused with any action but set_levels, as an error on ``levels``."""
    raw = review(action=action, levels={"cat_camel": 2}, **ARGUMENTS[action])
    assert errors(raw) == [(("body", "levels"), "unexpected_argument")]


@pytest.mark.parametrize("action", ["exclude_exercise", "include_exercise"])
def test_exclude_and_include_need_an_exercise_id(action: str) -> None:
    """exclude_exercise and include_exercise without exercise_id are an error on it."""
    assert errors(review(action=action)) == [(("body", "exercise_id"), "missing")]
    assert fields_in_error(review(action=action, exercise_id="Bird Dog")) == {"exercise_id"}


@pytest.mark.parametrize("action", [a for a in ARGUMENTS if "exercise" not in a])
def test_exercise_id_with_another_action_names_exercise_id(action: str) -> None:
    """exercise_id is refused with actions other than exclude/include_exercise."""
    raw = review(action=action, exercise_id="cat_camel", **ARGUMENTS[action])
    assert errors(raw) == [(("body", "exercise_id"), "unexpected_argument")]


def test_unknown_action_is_one_error_on_action() -> None:
    """An action outside the contract is reported on ``action`` alone, not on its arguments."""
    assert errors(review(action="discharge", exercise_id="cat_camel")) == [
        (("body", "action"), "literal_error")
    ]
    assert fields_in_error(review(action=None)) == {"action"}
    assert fields_in_error({**COMMON, "type": "ClinicianReviewed"}) == {"action"}


@pytest.mark.parametrize("level", [1, 5])
def test_levels_accept_one_to_five(level: int) -> None:
    """Levels 1 and 5, the ends of every ladder, are accepted."""
    event = codec.input_from_raw(review(action="set_levels", levels={"cat_camel": level}))
    assert isinstance(event, ClinicianReviewed)
    assert event.levels == {"cat_camel": level}


@pytest.mark.parametrize("level", [0, 6, -1, True, "3", 3.0, None])
def test_levels_refuse_anything_but_integers_one_to_five(level: Any) -> None:
    """A level outside 1-5, a boolean, a string or a float is an error on that exercise's level."""
    raw = review(action="set_levels", levels={"cat_camel": level})
    assert [loc for loc, _ in errors(raw)] == [("body", "levels", "cat_camel")]


@pytest.mark.parametrize("exercise_id", ["Cat_Camel", "cat camel", "", "x" * 41])
def test_levels_refuse_keys_that_are_not_exercise_ids(exercise_id: str) -> None:
    """Keys of ``levels`` follow the exercise_id pattern of SessionCompleted."""
    assert fields_in_error(review(action="set_levels", levels={exercise_id: 2})) == {"levels"}


def test_levels_are_a_json_object_of_at_most_fifty_exercises() -> None:
    """A list is not levels; fifty exercises are accepted and fifty-one refused."""
    assert fields_in_error(review(action="set_levels", levels=[["cat_camel", 2]])) == {"levels"}
    fifty = {f"e{i}": 1 for i in range(50)}
    assert codec.input_from_raw(review(action="set_levels", levels=fifty))
    many = {**fifty, "e50": 1}
    assert errors(review(action="set_levels", levels=many)) == [(("body", "levels"), "too_long")]


def test_note_is_optional_and_at_most_2000_characters() -> None:
    """A note of 2,000 characters (counted as characters, not bytes) fits; 2,001 do not."""
    event = codec.input_from_raw(review(note="é" * 2000))
    assert isinstance(event, ClinicianReviewed)
    assert event.note == "é" * 2000
    assert errors(review(note="x" * 2001)) == [(("body", "note"), "string_too_long")]
    assert fields_in_error(review(note=42)) == {"note"}
    without = codec.input_from_raw(review())
    assert isinstance(without, ClinicianReviewed)
    assert without.note is None


def test_reviewed_by_defaults_to_none_and_holds_an_id() -> None:
    """reviewed_by is None unless set, and holds a clinic id or ``operator``, nothing else."""
    event = codec.input_from_raw(review())
    assert isinstance(event, ClinicianReviewed)
    assert event.reviewed_by is None
    for who in ("clinic-a", "operator"):
        stamped = codec.input_from_raw(review(reviewed_by=who))
        assert isinstance(stamped, ClinicianReviewed)
        assert stamped.reviewed_by == who
    assert fields_in_error(review(reviewed_by="not an id")) == {"reviewed_by"}


def test_review_is_frozen_hashable_and_its_levels_read_only() -> None:
    """A review with levels is immutable and hashable like every event, and survives copies."""
    event = codec.input_from_raw(review(action="set_levels", levels={"cat_camel": 3, "walking": 2}))
    assert isinstance(event, ClinicianReviewed)
    assert isinstance(event.levels, Levels)
    assert hash(event) == hash(codec.loads(codec.dumps(event)))
    with pytest.raises(TypeError):
        event.levels["cat_camel"] = 5  # type: ignore[index]
    with pytest.raises(ValidationError):
        event.action = "release"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(event)) == event
    assert copy.deepcopy(event) == event
    assert dict(event.levels) == {"cat_camel": 3, "walking": 2}


def test_review_wire_form_keeps_levels_as_an_object() -> None:
    """On the wire ``levels`` is a JSON object, and decoding gives back an equal event."""
    event = codec.input_from_raw(review(action="set_levels", levels={"cat_camel": 3}))
    assert b'"levels":{"cat_camel":3}' in codec.dumps(event)
    assert codec.from_fields(codec.to_fields(event)) == event


@pytest.mark.parametrize(
    ("instrument", "low", "high"),
    [("rmdq", 0, 24), ("odi", 0, 100), ("psfs", 0, 10), ("pgic", 1, 7)],
)
def test_outcome_score_accepts_its_instrument_range_bounds_included(
    instrument: str, low: int, high: int
) -> None:
    """Each instrument takes scores from its lowest to its highest value, ints or floats."""
    for score in (low, high, (low + high) / 2):
        event = codec.input_from_raw(outcome(instrument, score))
        assert isinstance(event, OutcomeRecorded)
        assert event.score == score


@pytest.mark.parametrize(
    ("instrument", "score"),
    [
        ("rmdq", -1),
        ("rmdq", 25),
        ("rmdq", 24.5),
        ("odi", -0.5),
        ("odi", 101),
        ("psfs", 10.1),
        ("psfs", -1),
        ("pgic", 0),
        ("pgic", 0.9),
        ("pgic", 8),
        ("odi", 10**30),
    ],
)
def test_outcome_score_outside_its_range_names_score(instrument: str, score: float) -> None:
    """A score outside its instrument's range is one error on ``score``."""
    assert errors(outcome(instrument, score)) == [(("body", "score"), "out_of_range")]


@pytest.mark.parametrize("score", [True, False, "12", None, [12], {"value": 12}])
def test_outcome_score_must_be_a_json_number(score: Any) -> None:
    """Booleans, strings, null and containers are not scores, whatever their value."""
    assert fields_in_error(outcome("rmdq", score)) == {"score"}


@pytest.mark.parametrize("score", [float("nan"), float("inf"), -float("inf")])
def test_outcome_score_must_be_finite(score: float) -> None:
    """NaN and infinities are refused as scores (JSON itself cannot carry them)."""
    assert fields_in_error(outcome("odi", score)) == {"score"}
    raw = codec.dumps(codec.input_from_raw(outcome("odi", 50)))
    with pytest.raises((ValidationError, codec.DecodeError)):
        codec.loads(raw.replace(b'"score":50.0', b'"score":' + str(score).encode()))


def test_unknown_instrument_is_one_error_on_instrument() -> None:
    """An instrument outside the contract is reported on ``instrument``, not on the score."""
    assert errors(outcome("sf36", 50)) == [(("body", "instrument"), "literal_error")]


def test_both_types_are_input_events_and_not_output() -> None:
    """The two types are in INPUT_TYPES, decode through the input adapter and stay inputs."""
    assert {"ClinicianReviewed", "OutcomeRecorded"} <= set(INPUT_TYPES)
    assert isinstance(codec.input_from_raw(review()), ClinicianReviewed)
    assert isinstance(codec.input_from_raw(outcome()), OutcomeRecorded)
    assert isinstance(codec.from_raw(outcome()), OutcomeRecorded)


V2_FLAGS = (
    "bilateral_leg_symptoms",
    "sexual_dysfunction",
    "immunosuppression",
    "iv_drug_use",
    "long_term_steroids",
    "osteoporosis",
    "thoracic_pain",
)


@pytest.mark.parametrize("flag", V2_FLAGS)
def test_v2_red_flag_codes_are_accepted_at_intake_and_later(flag: str) -> None:
    """Each red-flag code RULES.md section 1 adds in v2 is valid in RehabStarted and PainLogged."""
    started = {**COMMON, "type": "RehabStarted", "red_flags": [flag]}
    pain = {**COMMON, "type": "PainLogged", "score": 3, "context": "morning", "red_flags": [flag]}
    intake, later = codec.input_from_raw(started), codec.input_from_raw(pain)
    assert isinstance(intake, RehabStarted)
    assert isinstance(later, PainLogged)
    assert intake.red_flags == later.red_flags == (flag,)


def test_prescription_change_may_be_adjusted() -> None:
    """``adjusted`` is a PrescriptionChanged.change that round-trips through the codec."""
    change = make_change(2, change="adjusted")
    decoded = codec.loads(codec.dumps(change))
    assert decoded == change
    assert decoded.change == "adjusted"  # type: ignore[union-attr]

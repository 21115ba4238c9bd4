"""The codec and the published language: wire forms pinned by golden files."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from shared import codec
from shared.events import (
    INPUT_TYPES,
    ClinicianReviewed,
    OutcomeRecorded,
    PainLogged,
    PrescriptionChanged,
    RehabStarted,
)

GOLDEN = Path(__file__).parent.parent / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.v*.json"))


def _version(path: Path) -> tuple[str, int]:
    kind, version, _ = path.name.split(".")
    return kind, int(version.removeprefix("v"))


#: Golden files at their type's current version: these round-trip exactly.
CURRENT_FILES = [
    p for p in GOLDEN_FILES if _version(p)[1] == codec.CURRENT_VERSION.get(_version(p)[0], 1)
]
#: Golden files of older versions: these must still decode, upcast to the current one.
OLDER_FILES = [p for p in GOLDEN_FILES if p not in CURRENT_FILES]


def _golden(name: str) -> dict[str, object]:
    return json.loads((GOLDEN / name).read_text())


@pytest.mark.parametrize("path", CURRENT_FILES, ids=lambda p: p.stem)
def test_golden_file_round_trips_to_identical_json(path: Path) -> None:
    """Each golden file decodes and re-encodes to exactly the same JSON object."""
    raw = path.read_bytes()
    event = codec.loads(raw)
    assert event.type == path.name.split(".")[0]
    assert orjson.loads(codec.dumps(event)) == orjson.loads(raw)


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_stream_fields_round_trip(path: Path) -> None:
    """An event written as stream fields reads back equal, with bytes or str keys; a change
    also names its version."""
    event = codec.loads(path.read_bytes())
    fields = codec.to_fields(event)
    versioned = {"version"} if isinstance(event, PrescriptionChanged) else set()
    assert set(fields) == {"type", "event_id", "user_id", "data", *versioned}
    if isinstance(event, PrescriptionChanged):
        assert fields["version"] == str(event.version)
    as_bytes = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert codec.from_fields(as_bytes) == event
    assert codec.from_fields(fields) == event


@pytest.mark.parametrize("path", OLDER_FILES, ids=lambda p: p.stem)
def test_older_golden_file_decodes_upcast_to_the_current_version(path: Path) -> None:
    """An older golden file still decodes: upcast, it equals its current form plus defaults."""
    raw = orjson.loads(path.read_bytes())
    event = codec.loads(path.read_bytes())
    kind, _ = _version(path)
    assert event.schema_version == codec.CURRENT_VERSION[kind]
    encoded = orjson.loads(codec.dumps(event))
    assert {k: v for k, v in encoded.items() if k in raw and k != "schema_version"} == {
        k: v for k, v in raw.items() if k != "schema_version"
    }


def test_older_golden_files_exist_for_every_upcaster() -> None:
    """Every registered upcaster has a golden file of the version it reads."""
    for kind, version in codec.UPCASTERS:
        assert (GOLDEN / f"{kind}.v{version}.json").exists()


def test_every_event_type_has_a_golden_file_at_its_current_version() -> None:
    """Each input type and PrescriptionChanged is pinned by a golden file of its current version."""
    for kind in [*INPUT_TYPES, "PrescriptionChanged"]:
        current = codec.CURRENT_VERSION.get(kind, 1)
        assert (GOLDEN / f"{kind}.v{current}.json").exists(), kind


def test_golden_review_and_outcome_decode_to_their_fields() -> None:
    """The v1.1 golden files read as the events they spell: levels, note, reviewer, score."""
    review = codec.loads((GOLDEN / "ClinicianReviewed.v1.json").read_bytes())
    outcome = codec.loads((GOLDEN / "OutcomeRecorded.v1.json").read_bytes())
    assert isinstance(review, ClinicianReviewed)
    assert (review.action, dict(review.levels or {})) == (
        "set_levels",
        {"cat_camel": 3, "spine_curl_bridge": 2},
    )
    assert (review.exercise_id, review.reviewed_by) == (None, "clinic-a")
    assert review.note is not None
    assert isinstance(outcome, OutcomeRecorded)
    assert (outcome.instrument, outcome.score) == ("odi", 26)


def test_pain_logged_v1_upcasts_to_v2_without_location() -> None:
    """A v1 PainLogged reads as v2 with location None; a v2 one keeps its location."""
    v1 = codec.loads((GOLDEN / "PainLogged.v1.json").read_bytes())
    v2 = codec.loads((GOLDEN / "PainLogged.v2.json").read_bytes())
    assert isinstance(v1, PainLogged)
    assert isinstance(v2, PainLogged)
    assert (v1.schema_version, v1.location) == (2, None)
    assert (v2.schema_version, v2.location) == (2, "leg_below_knee")


def test_schema_version_defaults_to_one() -> None:
    """A payload without schema_version is read as version 1 (then upcast if older)."""
    raw = _golden("PainLogged.v1.json")
    del raw["schema_version"]
    assert codec.from_raw(raw).schema_version == 2
    started = _golden("RehabStarted.v1.json")
    del started["schema_version"]
    assert codec.from_raw(started).schema_version == 1


def test_defaults_fill_optional_fields() -> None:
    """RehabStarted needs only the common fields; the rest take contract defaults."""
    raw = {k: _golden("RehabStarted.v1.json")[k] for k in ("event_id", "user_id", "occurred_at")}
    event = codec.input_from_raw({**raw, "type": "RehabStarted"})
    assert isinstance(event, RehabStarted)
    assert event.sessions_per_week == 3
    assert event.cause == "unknown"
    assert event.red_flags == ()


@pytest.mark.parametrize(
    ("field", "value", "loc"),
    [
        ("score", 11, "score"),
        ("score", -1, "score"),
        ("score", 3.5, "score"),
        ("score", True, "score"),
        ("score", "3", "score"),
        ("context", "evening", "context"),
        ("user_id", "has space", "user_id"),
        ("user_id", "x" * 65, "user_id"),
        ("event_id", "not-a-uuid", "event_id"),
        ("occurred_at", "2026-01-06T07:15:00", "occurred_at"),
        ("red_flags", ["headache"], "red_flags"),
        ("unexpected", 1, "unexpected"),
    ],
)
def test_out_of_contract_values_name_the_field(field: str, value: object, loc: str) -> None:
    """A value outside the contract is a validation error whose location names the field."""
    raw = {**_golden("PainLogged.v1.json"), field: value}
    with pytest.raises(ValidationError) as info:
        codec.input_from_raw(raw)
    assert any(loc in map(str, err["loc"]) for err in info.value.errors())


def test_unknown_type_is_rejected() -> None:
    """An unknown event type is a validation error, not a crash."""
    raw = {**_golden("PainLogged.v1.json"), "type": "PainForgotten"}
    with pytest.raises(ValidationError):
        codec.from_raw(raw)


def test_clients_cannot_send_output_events() -> None:
    """PrescriptionChanged is output only: the input adapter refuses it."""
    with pytest.raises(ValidationError):
        codec.input_from_raw(_golden("PrescriptionChanged.v1.json"))


@pytest.mark.parametrize("data", [b"{", b"[]", b"\xff\xfe", b""])
def test_garbage_is_a_decode_error(data: bytes) -> None:
    """Bytes that are not a JSON object raise DecodeError."""
    with pytest.raises(codec.DecodeError):
        codec.loads(data)


def test_entry_without_data_field_is_a_decode_error() -> None:
    """A stream entry missing its data field raises DecodeError."""
    with pytest.raises(codec.DecodeError):
        codec.from_fields({b"type": b"PainLogged"})


def test_upcaster_runs_before_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered upcaster transforms an older payload before it is validated."""
    seen: list[int] = []

    def v0_to_v1(raw: dict[str, object]) -> dict[str, object]:
        seen.append(0)
        newer = {k: v for k, v in raw.items() if k != "pain"}
        return {**newer, "score": raw["pain"], "schema_version": 1}

    monkeypatch.setitem(codec.UPCASTERS, ("PainLogged", 0), v0_to_v1)
    raw = _golden("PainLogged.v1.json")
    raw["pain"] = raw.pop("score")
    raw["schema_version"] = 0
    event = codec.from_raw(raw)
    assert isinstance(event, PainLogged)
    assert (event.score, event.schema_version, seen) == (4, 2, [0])


def test_events_are_frozen() -> None:
    """Events cannot be mutated after creation."""
    event = codec.loads((GOLDEN / "PainLogged.v1.json").read_bytes())
    with pytest.raises(ValidationError):
        event.score = 9  # type: ignore[misc,union-attr]

"""Fuzzing the codec: hostile input only ever fails cleanly, valid events round-trip."""

from __future__ import annotations

import contextlib
import json
import string
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared import codec
from shared.events import (
    INPUT_TYPES,
    OUTCOME_RANGES,
    ClinicianReviewed,
    Input,
    OutcomeRecorded,
    PainLogged,
    RehabStarted,
    ReviewAction,
    SessionCompleted,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLEAN = (ValidationError, codec.DecodeError)

ids = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)
offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
times = st.datetimes(timezones=offsets)
scores = st.integers(0, 10)
counts = st.integers(0, 1000)


def _common() -> dict[str, Any]:
    return {"event_id": st.uuids(), "user_id": ids, "occurred_at": times}


def _tuples(values: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(values), max_size=4).map(tuple)


FLAGS = ("saddle_numbness", "major_trauma", "constant_night_pain", "cancer_history")
started = st.builds(
    RehabStarted,
    **_common(),
    onset_date=st.none() | st.dates(),
    cause=st.sampled_from(["sprain_strain", "gradual", "unknown"]),
    goals=_tuples(("daily_life", "running", "gym", "sport")),
    preferences=_tuples(("strength", "pilates", "yoga", "walking")),
    sessions_per_week=st.integers(1, 7),
    clinic_id=st.none() | ids,
    red_flags=_tuples(FLAGS),
    start_back=st.none() | st.lists(st.booleans(), min_size=9, max_size=9).map(tuple),
)
pain = st.builds(
    PainLogged,
    **_common(),
    score=scores,
    context=st.sampled_from(["baseline", "morning", "during_exercise", "after_exercise"]),
    session_id=st.none() | st.text(string.ascii_letters + "_.:-", min_size=1, max_size=64),
    red_flags=_tuples(FLAGS),
    location=st.none() | st.sampled_from(["lower_back", "leg_below_knee"]),
)
exercise = st.fixed_dictionaries(
    {"exercise_id": st.text(string.ascii_lowercase + "_", min_size=1, max_size=40), "sets": counts},
    optional={"reps": counts, "hold_seconds": counts, "minutes": counts},
)
session = st.builds(
    SessionCompleted,
    **_common(),
    session_id=ids,
    exercises=st.lists(exercise, max_size=5).map(tuple),
    completed=st.booleans(),
    difficulty=st.sampled_from(["easy", "ok", "hard"]),
    pain_during=st.none() | scores,
    duration_minutes=st.none() | st.integers(0, 600),
)
exercise_ids = st.text(string.ascii_lowercase + "_", min_size=1, max_size=40)
_ARGUMENTS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "set_levels": {
        "levels": st.dictionaries(exercise_ids, st.integers(1, 5), min_size=1, max_size=6)
    },
    "exclude_exercise": {"exercise_id": exercise_ids},
    "include_exercise": {"exercise_id": exercise_ids},
}


def _review(action: str) -> st.SearchStrategy[ClinicianReviewed]:
    """Reviews of one action, with exactly the arguments it takes."""
    return st.builds(
        ClinicianReviewed,
        **_common(),
        action=st.just(action),
        note=st.none() | st.text(max_size=2000),
        reviewed_by=st.none() | ids,
        **_ARGUMENTS.get(action, {}),
    )


review = st.sampled_from(get_args(ReviewAction)).flatmap(_review)
outcome = st.sampled_from(sorted(OUTCOME_RANGES)).flatmap(
    lambda instrument: st.builds(
        OutcomeRecorded,
        **_common(),
        instrument=st.just(instrument),
        score=st.integers(*OUTCOME_RANGES[instrument]).map(float)
        | st.floats(*OUTCOME_RANGES[instrument], allow_nan=False),
    )
)
events: st.SearchStrategy[Input] = st.one_of(started, pain, session, review, outcome)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
#: Values aimed at the edges: NaN, infinities, huge ints, floats for ints, odd strings.
edgy = st.one_of(
    json_values,
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 10**30, -(10**30), 7.0, 10.5]),
    st.sampled_from(["", "\x00", "\ud800", "é" * 65, "9999-12-31T23:59:59-23:59", "0001-01-01"]),
    st.sampled_from([*list(INPUT_TYPES), "PrescriptionChanged", 1, None]),
)


def _encode(value: Any) -> bytes:
    # The stdlib writes what orjson cannot: NaN literals, ints past 64 bits, lone surrogates.
    return json.dumps(value).encode()


def _raw(event: Input) -> dict[str, Any]:
    return orjson.loads(codec.dumps(event))  # type: ignore[no-any-return]


@FUZZ
@given(event=events)
def test_valid_events_round_trip_exactly(event: Input) -> None:
    """Any valid input event survives JSON and stream fields unchanged, byte for byte."""
    data = codec.dumps(event)
    assert codec.loads(data) == event
    assert codec.dumps(codec.loads(data)) == data
    fields = codec.to_fields(event)
    assert codec.from_fields(fields) == event
    as_redis = {k.encode(): v.encode() if isinstance(v, str) else v for k, v in fields.items()}
    assert codec.from_fields(as_redis) == event
    assert codec.input_from_raw(_raw(event)) == event


@FUZZ
@given(event=events, data=st.data())
def test_mutated_events_fail_only_cleanly(event: Input, data: st.DataObject) -> None:
    """A valid event with one field replaced, dropped or added is an event or a clean error."""
    raw = _raw(event)
    key = data.draw(st.sampled_from([*raw, "extra", "schema_version", "type"]))
    if data.draw(st.booleans()):
        raw[key] = data.draw(edgy)
    else:
        raw.pop(key, None)
    try:
        decoded = codec.input_from_raw(raw)
    except CLEAN:
        return
    assert codec.loads(codec.dumps(decoded)) == decoded


@FUZZ
@given(value=json_values | st.dictionaries(st.text(), edgy, max_size=8))
def test_arbitrary_json_fails_only_cleanly(value: Any) -> None:
    """Arbitrary JSON values raise ValidationError or DecodeError, never anything else."""
    encoded = _encode(value)
    for decode, arg in ((codec.loads, encoded), (codec.loads, encoded.decode())):
        with pytest.raises(CLEAN):
            decode(arg)
    if isinstance(value, dict):
        with pytest.raises(CLEAN):
            codec.input_from_raw(value)


@FUZZ
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_fail_only_cleanly(data: bytes) -> None:
    """Random bytes (bad UTF-8, NaN literals, truncated JSON) raise only the codec's two errors."""
    for payload in (data, b'{"score": ' + data + b"}", b"[" + data):
        try:
            codec.loads(payload)
        except CLEAN:
            continue


@FUZZ
@given(
    fields=st.dictionaries(
        st.sampled_from([b"data", "data", b"type", "event_id", b"other"]),
        st.binary(max_size=60) | st.text(max_size=60) | json_values.map(_encode),
        max_size=4,
    )
)
def test_arbitrary_stream_fields_fail_only_cleanly(fields: dict[Any, Any]) -> None:
    """Stream entries with missing, garbled or non-event data raise only the codec's two errors."""
    with contextlib.suppress(CLEAN):
        codec.from_fields(fields)


@pytest.mark.parametrize(
    "literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"10.0", b"7.5", b"true", b'"7"']
)
def test_non_integer_scores_are_refused(literal: bytes) -> None:
    """NaN, infinities, floats, booleans and strings are never accepted as a pain score."""
    body = (
        b'{"event_id": "6f1d2f0e-4c1b-4e59-9a53-0d3c5b0e2a11", "type": "PainLogged",'
        b' "user_id": "u", "occurred_at": "2026-01-06T07:15:00+01:00", "context": "morning",'
        b' "score": ' + literal + b"}"
    )
    with pytest.raises(CLEAN):
        codec.loads(body)


def _general(data: bytes) -> Any:
    """What ``codec.loads`` answers on its general path: a dict first, upcast, then validated."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise codec.DecodeError("not valid JSON") from None
    if not isinstance(raw, dict):
        raise codec.DecodeError("an event is a JSON object")
    return codec.from_raw(raw)


def _outcome(decode: Any, data: bytes) -> Any:
    try:
        return decode(data)
    except CLEAN:
        return "refused"


@FUZZ
@given(event=events, data=st.data())
def test_fast_path_decodes_exactly_as_the_general_path(event: Input, data: st.DataObject) -> None:
    """Payloads naming a schema version skip the dict, yet accept and refuse exactly the same."""
    raw = _raw(event)
    key = data.draw(st.sampled_from([*raw, "extra", "schema_version", "type", "location"]))
    action = data.draw(st.sampled_from(["keep", "replace", "drop"]))
    if action == "replace":
        raw[key] = data.draw(edgy)
    elif action == "drop":
        raw.pop(key, None)
    payload = data.draw(
        st.sampled_from([_encode(raw), orjson.dumps(raw)]) if _plain(raw) else st.just(_encode(raw))
    )
    assert _outcome(codec.loads, payload) == _outcome(_general, payload)


def _plain(raw: dict[str, Any]) -> bool:
    try:
        orjson.dumps(raw)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("version", [None, 1, 2])
def test_older_or_unnamed_versions_are_upcast_whatever_the_path(version: int | None) -> None:
    """A PainLogged at v1, or naming no version, decodes upcast; its location comes from v2 only."""
    raw = _golden_pain()
    raw.pop("schema_version", None)
    raw.pop("location", None)
    if version is not None:
        raw["schema_version"] = version
    event = codec.loads(orjson.dumps(raw))
    assert isinstance(event, PainLogged)
    assert (event.schema_version, event.location) == (2, None)


def _golden_pain() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(
        (Path(__file__).parent.parent / "golden" / "PainLogged.v2.json").read_text()
    )
    return raw

"""The one codec: events to JSON and stream fields, and back.

Every reader and writer of the event log goes through here, so the wire form
lives in one place. Decoding upcasts old schema versions first (pure functions
registered in ``UPCASTERS``), then validates against the current models.

A stream entry holds plain fields any Redis client can read:
``type``, ``event_id``, ``user_id`` and ``data`` (the event's JSON); a
``PrescriptionChanged`` entry also ``version``. Stored, ``data`` is sealed
with the user's data key (``shared.data_keys``, which adds ``enc`` and
``dek``); the codec sees entries before sealing and after opening.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.events import AnyEvent, Event, Input, InputEvent, PrescriptionChanged

Raw = dict[str, Any]
Upcaster = Callable[[Raw], Raw]


def pain_logged_v1_to_v2(raw: Raw) -> Raw:
    """PainLogged v1 -> v2: v2 adds ``location``; a v1 log never said, so None."""
    return {**raw, "location": None, "schema_version": 2}


#: (type, from_version) -> function returning the payload at from_version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {("PainLogged", 1): pain_logged_v1_to_v2}
#: The version each type is validated at; absent types are at version 1.
CURRENT_VERSION: dict[str, int] = {"PainLogged": 2}

_any = TypeAdapter(AnyEvent)
#: In JSON a quote inside a string is escaped, so these bytes can only be a key.
_VERSIONED = b'"schema_version":'
_input = TypeAdapter(InputEvent)


class DecodeError(ValueError):
    """Raised for bytes that are not an event: bad JSON, UTF-8 or fields."""


def upcast(raw: Raw) -> Raw:
    """Bring a raw payload up to its type's current schema version.

    Payloads without ``schema_version`` are version 1. An unknown type is left
    alone for validation to reject with a clear message.
    """
    kind = raw.get("type")
    if not isinstance(kind, str):
        return raw
    version = raw.get("schema_version", 1)
    target = CURRENT_VERSION.get(kind, 1)
    while isinstance(version, int) and version < target:
        step = UPCASTERS.get((kind, version))
        if step is None:
            break
        raw = step(raw)
        version = raw.get("schema_version", version + 1)
    return raw


def from_raw(raw: Raw) -> Event:
    """Validate a decoded JSON object (after upcasting) as any event."""
    return _any.validate_python(upcast(raw))


def input_from_raw(raw: Raw) -> Input:
    """Validate a decoded JSON object as an input event (what clients send)."""
    return _input.validate_python(upcast(raw))


def loads(data: bytes | str) -> Event:
    """Decode one event from JSON. Raises DecodeError or ValidationError.

    What the log holds was written by ``dumps``: it names its schema version,
    and mostly the current one. Such a payload is validated straight from its
    bytes, which is about twice as fast as building a dict first. Anything
    else (no version named, an older version, or invalid) takes the general
    path, so it is upcast, and an error names what is wrong exactly as before.
    """
    if _VERSIONED in (data if isinstance(data, bytes) else data.encode()):
        try:
            return _any.validate_json(data)
        except ValidationError:
            pass  # an older version to upcast, or invalid: the general path says which
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError("an event is a JSON object")
    return from_raw(raw)


def dumps(event: Event) -> bytes:
    """The event's canonical JSON (UTF-8 bytes)."""
    return event.__pydantic_serializer__.to_json(event)


def to_fields(event: Event) -> dict[str, bytes | str]:
    """Stream entry fields for one event; a PrescriptionChanged also names its version
    (the append script reads it to keep the versions of a user's changes gapless)."""
    fields: dict[str, bytes | str] = {
        "type": event.type,
        "event_id": str(event.event_id),
        "user_id": event.user_id,
        "data": dumps(event),
    }
    if isinstance(event, PrescriptionChanged):
        fields["version"] = str(event.version)
    return fields


def from_fields(fields: Mapping[Any, Any]) -> Event:
    """Decode a stream entry written by ``to_fields`` (bytes or str keys), opened if it was
    sealed (``shared.data_keys``). Raises DecodeError for an entry still sealed."""
    if b"enc" in fields or "enc" in fields:
        raise DecodeError("a sealed entry: open it with its user's data key first")
    return _decode(_data(fields))


def _data(fields: Mapping[Any, Any]) -> bytes | str:
    data = fields.get(b"data", fields.get("data"))
    if data is None:
        raise DecodeError("stream entry has no 'data' field")
    return data  # type: ignore[no-any-return]


def _decode(data: bytes | str) -> Event:
    try:
        return loads(data)
    except ValidationError:
        raise
    except UnicodeDecodeError as exc:
        raise DecodeError(f"not valid UTF-8: {exc}") from None


__all__ = [
    "CURRENT_VERSION",
    "UPCASTERS",
    "DecodeError",
    "dumps",
    "from_fields",
    "from_raw",
    "input_from_raw",
    "loads",
    "pain_logged_v1_to_v2",
    "to_fields",
    "upcast",
]

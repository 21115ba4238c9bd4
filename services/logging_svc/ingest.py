"""Request bodies to input events, with errors clients can act on.

Pure: bytes in, events or field-level errors out; no I/O, no logging. Error
locations follow FastAPI's shape (``{"loc", "msg", "type"}``, ``loc`` starting
at ``"body"``) but name the fields as the client sent them: the union's
internal tag level (``PainLogged``) is left out.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from shared.codec import input_from_raw
from shared.events import INPUT_TYPES, Input

Detail = list[dict[str, Any]]
Loc = tuple[str | int, ...]
#: the error (409, or a batch item's) for a user's event_id sent again with another payload
CONFLICT = "event_id already used with another payload"
#: the error (410, or a batch item's) for an event of a user who was erased: nothing stored
ERASED = "user erased"


class Rejected(ValueError):  # noqa: N818 - reads as the outcome at the raise site
    """A body or item that is not a valid input event; ``detail`` says where and why."""

    def __init__(self, detail: Detail) -> None:
        super().__init__(summary(detail))
        self.detail = detail


def _error(loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


def _field_path(loc: tuple[int | str, ...], kind: str) -> Loc:
    if kind.startswith("union_tag"):
        return ("type",)
    if loc and loc[0] in INPUT_TYPES:
        return loc[1:]
    return loc


def detail_of(exc: ValidationError, prefix: Loc = ("body",)) -> Detail:
    """FastAPI-style error list for a validation error, fields named as sent."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    return [
        _error((*prefix, *_field_path(e["loc"], e["type"])), e["msg"], e["type"]) for e in errors
    ]


def summary(detail: Detail) -> str:
    """One line naming each failing field: ``score: Input should be ...; context: ...``."""
    parts = []
    for error in detail:
        path = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        parts.append(f"{path}: {error['msg']}")
    return "; ".join(parts)


def parse_json(body: bytes) -> Any:
    """The decoded JSON of a request body, or Rejected (422) if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        msg = f"body is not valid JSON: {exc}"
        raise Rejected([_error(("body",), msg, "json_invalid")]) from None


def to_event(raw: Any, prefix: Loc = ("body",)) -> Input:
    """Validate one decoded JSON value as an input event, or raise Rejected."""
    if not isinstance(raw, dict):
        raise Rejected([_error(prefix, "an event is a JSON object", "model_type")])
    try:
        return input_from_raw(raw)
    except ValidationError as exc:
        raise Rejected(detail_of(exc, prefix)) from None


def batch_items(raw: Any, max_batch: int) -> list[Any]:
    """The ``events`` list of a batch body; Rejected if missing, not a list or too long."""
    if not isinstance(raw, dict):
        raise Rejected(
            [_error(("body",), 'a batch is a JSON object {"events": [...]}', "model_type")]
        )
    unknown = sorted(set(raw) - {"events"})
    if unknown:
        raise Rejected(
            [
                _error(("body", k), "Extra inputs are not permitted", "extra_forbidden")
                for k in unknown
            ]
        )
    items = raw.get("events")
    if not isinstance(items, list):
        kind = "missing" if items is None else "list_type"
        raise Rejected([_error(("body", "events"), "events must be a list of events", kind)])
    if len(items) > max_batch:
        msg = f"at most {max_batch} events per batch, got {len(items)}"
        raise Rejected([_error(("body", "events"), msg, "too_long")])
    return items


__all__ = [
    "CONFLICT",
    "Detail",
    "Rejected",
    "batch_items",
    "detail_of",
    "parse_json",
    "summary",
    "to_event",
]

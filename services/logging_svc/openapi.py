"""What ``/openapi.json`` says about the ingest API.

Bodies are parsed by hand (raw bytes, orjson, the codec) for speed and exact
errors, so FastAPI cannot infer them: the request schemas come from the
pydantic models of the input events and are merged into the document here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field, TypeAdapter

from services.logging_svc.ingest import CONFLICT
from shared.codec import CURRENT_VERSION
from shared.events import INPUT_TYPES, InputEvent

_REF = "#/components/schemas/{model}"
_INPUT = TypeAdapter(InputEvent).json_schema(ref_template=_REF)
_DEFS: dict[str, Any] = _INPUT.pop("$defs")
EVENT_SCHEMA: dict[str, Any] = _INPUT


def _as_accepted(kind: str, schema: dict[str, Any]) -> None:
    """Say what ingest accepts rather than what the model holds after upcasting.

    ``type`` is the union's tag, so a body must carry it, default or not; and
    every older ``schema_version`` with an upcaster is still accepted.
    """
    properties = schema["properties"]
    properties["type"].pop("default", None)
    schema["required"] = ["type", *(f for f in schema.get("required", ()) if f != "type")]
    current = CURRENT_VERSION.get(kind, 1)
    if current > 1:
        properties["schema_version"] = {
            "enum": list(range(1, current + 1)),
            "default": 1,
            "title": "Schema Version",
            "type": "integer",
            "description": "The wire version sent; older versions are upcast on read.",
        }


for _kind in INPUT_TYPES:
    _as_accepted(_kind, _DEFS[_kind])


class AcceptedEvent(BaseModel):
    """The event is in the log (accepted now, or earlier: duplicate)."""

    event_id: str
    status: Literal["accepted", "duplicate"]
    position: str


class ItemError(BaseModel):
    """One batch item not stored, and why: invalid, forbidden, or a reused event_id."""

    index: int
    error: str


class BatchResults(BaseModel):
    results: list[AcceptedEvent | ItemError]


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationFailed(BaseModel):
    detail: list[FieldError]


class Failure(BaseModel):
    detail: str


class Conflict(BaseModel):
    """The user sent this event_id before with another payload; nothing was stored."""

    error: str = Field(examples=[CONFLICT])


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


EVENT_BODY = _json_body(EVENT_SCHEMA)


def batch_body(max_batch: int) -> dict[str, Any]:
    """The batch request body: ``{"events": [...]}`` of at most ``max_batch`` events."""
    events = {"type": "array", "items": EVENT_SCHEMA, "maxItems": max_batch}
    return _json_body(
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {"events": events},
        }
    )


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Failure, "description": "Missing or invalid bearer token."},
    413: {"model": Failure, "description": "Body larger than the configured limit."},
    422: {
        "model": ValidationFailed,
        "description": "Not JSON, not a valid event, or occurred_at outside the ingest window"
        " (by default more than 5 minutes ahead of the server clock, or older than 30 days"
        " from a device token, 5 years from a clinic or operator token).",
    },
    429: {
        "model": Failure,
        "description": "Over the token's rate limit (one token per event; a batch is refused"
        " whole when the bucket holds fewer than its items); nothing stored."
        " Retry after Retry-After.",
    },
    503: {
        "model": Failure,
        "description": "Event store unavailable; nothing stored. Retry after Retry-After.",
    },
}
EVENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": AcceptedEvent, "description": "Stored (or stored before)."},
    403: {
        "model": Failure,
        "description": "The token may not write this type of event, or not for this user.",
    },
    409: {
        "model": Conflict,
        "description": "This user's event_id was stored with another payload; nothing stored."
        " (The same payload again is a 202 duplicate; another user's event_id is no obstacle.)",
    },
    410: {
        "model": Failure,
        "description": "An event of an erased user (GDPR Art. 17); nothing stored. (In a batch,"
        " that item's error is 'user erased'.)",
    },
    **_AUTH_ERRORS,
}
BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": BatchResults, "description": "One result per item, in order."},
    **_AUTH_ERRORS,
}


def install(app: FastAPI) -> None:
    """Make ``app.openapi()`` include the input event schemas."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_DEFS)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

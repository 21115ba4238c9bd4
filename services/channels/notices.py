"""The ``PatientErased`` webhook: the last thing a clinic hears of an erased patient.

Its body is exactly ``{"type": "PatientErased", "user_id", "occurred_at"}``
(the erasure's start, RFC 3339 in UTC with milliseconds): nothing else of the
patient is left to send. It travels on the patient's webhook queue like a
change, and is signed and retried the same way, but the dispatcher posts it
without the enrolment check (the patient is no longer enrolled with anyone
by then). Its ``webhook-id`` is uuid5 of the user and the erasure time, so
the same erasure gives the same id on every run and every retry, and
receivers dedupe on it as on any delivery. Pure.
"""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID, uuid5

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from services.channels.webhooks import Attempt
from shared.events import UserId

TYPE = "PatientErased"
#: Namespace of the notices' ids: uuid5(NOTICE_NAMESPACE, f"{user_id}:{occurred_at}").
NOTICE_NAMESPACE = UUID("2d0b6c1e-7a4f-5b8e-9c3d-1e5f7a9b0c2d")
_PREFIX = b'{"type":"' + TYPE.encode() + b'"'


class PatientErased(BaseModel):
    """The notice as a clinic receives it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["PatientErased"] = "PatientErased"
    user_id: UserId
    occurred_at: AwareDatetime

    @property
    def webhook_id(self) -> str:
        """The notice's ``webhook-id``: the same for every run and retry of one erasure."""
        return notice_id(self.user_id, self.occurred_at.isoformat(timespec="milliseconds"))


def notice_id(user_id: str, occurred_at: str) -> str:
    """The id of the notice of ``user_id``'s erasure begun at ``occurred_at`` (RFC 3339)."""
    return str(uuid5(NOTICE_NAMESPACE, f"{user_id}:{occurred_at}"))


def body(user_id: str, occurred_at: str) -> bytes:
    """The bytes queued and posted (what the signature covers)."""
    return orjson.dumps({"type": TYPE, "user_id": user_id, "occurred_at": occurred_at})


def parse(item: bytes) -> PatientErased | None:
    """The notice a queued item holds, or None for anything else (a change)."""
    if not item.startswith(_PREFIX):
        return None
    try:
        return PatientErased.model_validate_json(item)
    except ValidationError:
        return None


def log_entry(notice: PatientErased, attempt: int, at: str, result: Attempt) -> dict[str, Any]:
    """The delivery-log entry of one attempt made ``at``: a change's fields but the version,
    and the notice's ``type``."""
    return {
        "event_id": notice.webhook_id,
        "type": TYPE,
        "user_id": notice.user_id,
        "attempt": attempt,
        "at": at,
        "status": result.status,
        "latency_ms": result.latency_ms,
        "error": result.error,
    }


__all__ = ["NOTICE_NAMESPACE", "TYPE", "PatientErased", "body", "log_entry", "notice_id", "parse"]

"""Webhook subscriptions, kept as events on the small stream ``bt:subs``.

The stream is never trimmed: the read model is a fold over it, so
subscriptions survive restarts and replays. Secrets are stored there because
the dispatcher must sign with them; ``bt:subs`` is as sensitive as the
``BACKTRACK_SECRET`` and never leaves Redis except in the creation answer.

A subscription matches a change when the change's user is enrolled with the
subscription's clinic at delivery time and (``user_ids`` is None or the user
is in it), and the change was fed after the subscription was created.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from redis.asyncio import Redis

from shared.events import ClinicId, UserId
from shared.streams import START, text

SUBS = "bt:subs"
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SubscriptionCreated(BaseModel):
    model_config = _FROZEN
    type: Literal["SubscriptionCreated"] = "SubscriptionCreated"
    sub_id: str
    clinic_id: ClinicId
    url: str
    user_ids: tuple[UserId, ...] | None
    secret: str
    occurred_at: AwareDatetime


class SubscriptionDeleted(BaseModel):
    model_config = _FROZEN
    type: Literal["SubscriptionDeleted"] = "SubscriptionDeleted"
    sub_id: str
    occurred_at: AwareDatetime


class SubscriptionDisabled(BaseModel):
    """The endpoint answered 410 Gone: no more deliveries."""

    model_config = _FROZEN
    type: Literal["SubscriptionDisabled"] = "SubscriptionDisabled"
    sub_id: str
    reason: str
    occurred_at: AwareDatetime


SubEvent = Annotated[
    SubscriptionCreated | SubscriptionDeleted | SubscriptionDisabled,
    Field(discriminator="type"),
]
_adapter: TypeAdapter[SubEvent] = TypeAdapter(SubEvent)
Status = Literal["active", "deleted", "disabled"]


class Subscription(BaseModel):
    model_config = _FROZEN
    sub_id: str
    clinic_id: str
    url: str
    user_ids: frozenset[str] | None
    secret: str
    created_at: datetime
    created_ms: int
    status: Status = "active"

    def matches(self, user_id: str, clinic_of_user: str | None, fed_ms: int) -> bool:
        """True if a change of ``user_id`` fed at ``fed_ms`` should go to this subscription."""
        return (
            self.status == "active"
            and clinic_of_user == self.clinic_id
            and (self.user_ids is None or user_id in self.user_ids)
            and fed_ms >= self.created_ms
        )

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the secret."""
        users = None if self.user_ids is None else sorted(self.user_ids)
        return {
            "id": self.sub_id,
            "clinic_id": self.clinic_id,
            "url": self.url,
            "user_ids": users,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


Subscriptions = dict[str, Subscription]


def stream_ms(position: str) -> int:
    """The millisecond part of a stream entry id."""
    return int(position.partition("-")[0])


def evolve(subs: Subscriptions, position: str, event: SubEvent) -> Subscriptions:
    """The read model after one event at ``position``; pure, never mutates ``subs``."""
    if isinstance(event, SubscriptionCreated):
        users = None if event.user_ids is None else frozenset(event.user_ids)
        sub = Subscription(
            sub_id=event.sub_id,
            clinic_id=event.clinic_id,
            url=event.url,
            user_ids=users,
            secret=event.secret,
            created_at=event.occurred_at,
            created_ms=stream_ms(position),
        )
        return {**subs, event.sub_id: sub}
    current = subs.get(event.sub_id)
    if current is None or current.status != "active":
        return subs
    status: Status = "deleted" if isinstance(event, SubscriptionDeleted) else "disabled"
    return {**subs, event.sub_id: current.model_copy(update={"status": status})}


def replay(
    entries: Iterable[tuple[str, SubEvent]], subs: Subscriptions | None = None
) -> Subscriptions:
    """Fold ``entries`` (oldest first) onto ``subs`` (empty by default)."""
    state: Subscriptions = dict(subs or {})
    for position, event in entries:
        state = evolve(state, position, event)
    return state


class SubscriptionLog:
    """Appends subscription events to ``bt:subs`` and keeps a folded read model."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._subs: Subscriptions = {}
        self._last = START

    async def append(self, event: SubEvent) -> str:
        """Store one event; returns its position."""
        data = event.__pydantic_serializer__.to_json(event)
        fields: dict[Any, Any] = {"type": event.type, "sub_id": event.sub_id, "data": data}
        return text(await self.redis.xadd(SUBS, fields))

    async def refresh(self) -> Subscriptions:
        """Fold whatever was appended since the last call (one XRANGE) and return all."""
        entries: Any = await self.redis.xrange(SUBS, f"({self._last}", "+")
        decoded = [
            (
                text(pos),
                _adapter.validate_python(orjson.loads(fields.get(b"data", fields.get("data")))),
            )
            for pos, fields in entries
        ]
        if decoded:
            self._subs = replay(decoded, self._subs)
            self._last = decoded[-1][0]
        return self._subs

    async def get(self, sub_id: str) -> Subscription | None:
        return (await self.refresh()).get(sub_id)


__all__ = [
    "SUBS",
    "SubEvent",
    "Subscription",
    "SubscriptionCreated",
    "SubscriptionDeleted",
    "SubscriptionDisabled",
    "SubscriptionLog",
    "Subscriptions",
    "evolve",
    "replay",
    "stream_ms",
]

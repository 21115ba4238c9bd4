"""Webhook subscriptions, kept as events on the small stream ``bt:subs``.

The stream is never trimmed: the read model is a fold over it, so
subscriptions survive restarts and replays. The signing secrets are not in
it: each is kept apart, encrypted with the master key (``shared.sealing``,
bound to its subscription id), in the hash ``bt:{bt:subs}:secrets`` (the
stream's slot), and deleted with its subscription, in one script with the
event. Entries written before carry their secret in the stream and keep
working until ``seal_legacy_secrets`` (``backtrack migrate encrypt``) moves
them out.

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
from shared.sealing import MasterKeys, unwrap, wrap
from shared.streams import START, text

SUBS = "bt:subs"
#: sub_id -> its signing secret, wrapped by the master key. The hash tag puts it in the
#: slot of SUBS (one transaction on a Redis Cluster); the prefix keeps it among the
#: keys the services' ACL user may touch (``bt:*``).
SECRETS = "bt:{bt:subs}:secrets"
#: the secret's write (or delete) and the event's XADD, as one atomic step
_APPEND = """
if ARGV[1] == 'set' then
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
elseif ARGV[1] == 'del' then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
"""
#: KEYS stream, secrets; ARGV the stream's length and last id as read, then per entry to
#: rewrite: id, its new data, its sealed secret ('' for none) -> 1 if rewritten, 0 if the
#: stream changed meanwhile (nothing written). Every entry keeps its id (positions are the
#: subscriptions' creation times); the rest of the stream is copied as it is.
_SEAL_LEGACY = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+')
local last = entries[#entries]
if #entries ~= tonumber(ARGV[1]) or (last and last[1] or '') ~= ARGV[2] then return 0 end
local new, sealed = {}, {}
for i = 3, #ARGV, 3 do
  new[ARGV[i]] = ARGV[i + 1]
  sealed[ARGV[i]] = ARGV[i + 2]
end
redis.call('DEL', KEYS[1])
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  if new[id] then
    local sub_id = ''
    for k = 1, #fields, 2 do
      if fields[k] == 'data' then fields[k + 1] = new[id] end
      if fields[k] == 'sub_id' then sub_id = fields[k + 1] end
    end
    if sealed[id] ~= '' then redis.call('HSET', KEYS[2], sub_id, sealed[id]) end
  end
  redis.call('XADD', KEYS[1], id, unpack(fields))
end
return 1
"""
_FROZEN = ConfigDict(frozen=True, extra="forbid")


class SubscriptionCreated(BaseModel):
    model_config = _FROZEN
    type: Literal["SubscriptionCreated"] = "SubscriptionCreated"
    sub_id: str
    clinic_id: ClinicId
    url: str
    user_ids: tuple[UserId, ...] | None
    secret: str | None = None  # kept apart, sealed (SECRETS); only older entries carry it
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
            secret=event.secret or "",
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
    """Appends subscription events to ``bt:subs`` and keeps a folded read model.

    ``masters`` seal new secrets and open stored ones; without them (tools that
    only read statuses) secrets stay empty and creating a subscription raises.
    """

    def __init__(self, redis: Redis, masters: MasterKeys | None = None) -> None:
        self.redis = redis
        self.masters = masters
        self._subs: Subscriptions = {}
        self._last = START

    async def append(self, event: SubEvent) -> str:
        """Store one event (a new subscription's secret sealed, apart); returns its position."""
        op, sealed, stored = "", b"", event
        if isinstance(event, SubscriptionCreated) and event.secret is not None:
            if self.masters is None:
                raise ValueError("sealing a subscription's secret needs the master keys")
            op = "set"
            sealed = wrap(self.masters.current, event.secret.encode(), _bound(event.sub_id))
            stored = event.model_copy(update={"secret": None})
        elif isinstance(event, SubscriptionDeleted):
            op = "del"
        data = stored.__pydantic_serializer__.to_json(stored)
        fields = ["type", stored.type, "sub_id", stored.sub_id, "data", data]
        position = await self.redis.eval(
            _APPEND, 2, SUBS, SECRETS, op, event.sub_id, sealed, *fields
        )
        return text(position)

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
            decoded = await self._with_secrets(decoded)
            self._subs = replay(decoded, self._subs)
            self._last = decoded[-1][0]
        return self._subs

    async def _with_secrets(
        self, entries: list[tuple[str, SubEvent]]
    ) -> list[tuple[str, SubEvent]]:
        """The entries, each new subscription with its secret opened (empty once deleted)."""
        apart = [
            e.sub_id for _, e in entries if isinstance(e, SubscriptionCreated) and e.secret is None
        ]
        if not apart or self.masters is None:
            return entries
        found: list[Any] = await self.redis.hmget(SECRETS, apart)
        sealed = dict(zip(apart, found, strict=True))
        opened: list[tuple[str, SubEvent]] = []
        for position, event in entries:
            wrapped = sealed.get(event.sub_id) if isinstance(event, SubscriptionCreated) else None
            if wrapped is None:
                opened.append((position, event))
                continue
            raw = wrapped if isinstance(wrapped, bytes) else wrapped.encode()
            secret = unwrap(self.masters, raw, _bound(event.sub_id)).decode()
            opened.append((position, event.model_copy(update={"secret": secret})))
        return opened

    async def get(self, sub_id: str) -> Subscription | None:
        return (await self.refresh()).get(sub_id)

    async def seal_legacy_secrets(self, attempts: int = 5) -> int:
        """Move every secret older entries carry in ``bt:subs`` out of it: sealed into
        ``SECRETS`` for a subscription still there, dropped for a deleted one; returns how
        many entries were rewritten (0: none left). Entries keep their ids; a stream that
        changed meanwhile is read again. Raises ValueError without the master keys.
        """
        if self.masters is None:
            raise ValueError("sealing subscriptions' secrets needs the master keys")
        for _ in range(attempts):
            entries: Any = await self.redis.xrange(SUBS, "-", "+")
            decoded = [(text(pos), _adapter.validate_json(_data(f))) for pos, f in entries]
            deleted = {e.sub_id for _, e in decoded if isinstance(e, SubscriptionDeleted)}
            args: list[Any] = []
            for position, event in decoded:
                if not isinstance(event, SubscriptionCreated) or event.secret is None:
                    continue
                bare = event.model_copy(update={"secret": None})
                sealed = b""
                if event.sub_id not in deleted:
                    bound = _bound(event.sub_id)
                    sealed = wrap(self.masters.current, event.secret.encode(), bound)
                args += [position, bare.__pydantic_serializer__.to_json(bare), sealed]
            if not args:
                return 0
            tip = text(entries[-1][0])
            if await self.redis.eval(_SEAL_LEGACY, 2, SUBS, SECRETS, len(entries), tip, *args):
                self._subs, self._last = {}, START  # fold again from the rewritten stream
                return len(args) // 3
        raise RuntimeError("bt:subs kept changing; run again")


def _data(fields: Any) -> bytes:
    value = fields.get(b"data", fields.get("data"))
    return value if isinstance(value, bytes) else str(value).encode()


def _bound(sub_id: str) -> str:
    """What a sealed secret is bound to: its subscription (not a patient's id)."""
    return f"subscription:{sub_id}"


__all__ = [
    "SECRETS",
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

"""Stream users and their histories out of Redis in pages; never the whole log.

Users are found with SCAN over ``bt:{p*}:user:*``, less the erased ones (an
erasure record: their history is being deleted, or was), and visited in a stable
order, (partition, user_id), so a long job can record where it got to and a
rerun can continue after it. Histories are read with XRANGE in pages of
``page`` entries, several users per pipeline round trip, opened with the
users' data keys and decoded through ``shared.codec``; only one group of
users is in memory at a time. An erased user (key destroyed) reads as empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis

from shared import sealing
from shared.codec import DecodeError, from_fields
from shared.data_keys import DataKeys, KeyDestroyed
from shared.events import Input, InputEvent, PrescriptionChanged
from shared.keys import PREFIX, Keys
from shared.streams import text

Entry = tuple[str, Input]
_PAGE: TypeAdapter[list[Input]] = TypeAdapter(list[InputEvent])


@dataclass(frozen=True, slots=True)
class UserLog:
    """One user's history in arrival order (``entries``: (position, event))."""

    user_id: str
    entries: list[Entry]

    @property
    def events(self) -> list[Input]:
        return [event for _, event in self.entries]

    @property
    def tip(self) -> str:
        """The position of the newest entry ("" for none)."""
        return self.entries[-1][0] if self.entries else ""


async def user_ids(redis: Redis, keys: Keys, count: int = 1000) -> list[str]:
    """Every user with a history and no erasure record, in (partition, user_id) order."""
    found: set[str] = set()
    async for key in redis.scan_iter(match=f"{PREFIX}:{{p*}}:user:*", count=count):
        found.add(text(key).split(":user:", 1)[1])
    users = sorted(found, key=lambda user: (keys.partition(user), user))
    erased: list[int] = []
    for start in range(0, len(users), count):
        pipe = redis.pipeline(transaction=False)
        for user in users[start : start + count]:
            pipe.exists(keys.erased(user))
        erased += await pipe.execute()
    return [user for user, gone in zip(users, erased, strict=True) if not gone]


def order_key(keys: Keys, user_id: str) -> tuple[int, str]:
    """Where a user sits in the order ``user_ids`` returns."""
    return keys.partition(user_id), user_id


def _decode(raw: Any) -> list[Entry]:
    """A page of entries: one validation of the joined JSON when every entry is current.

    An entry at an older schema version fails that validation (its version is
    not the model's); the page is then decoded entry by entry through the
    codec, which upcasts. Either way the events are the codec's.
    """
    try:
        datas = [fields[b"data"] for _, fields in raw]
        events = _PAGE.validate_json(b"[" + b",".join(datas) + b"]")
        return [(text(p), e) for (p, _), e in zip(raw, events, strict=True)]
    except (KeyError, TypeError, ValidationError):
        return _decode_each(raw)


def _decode_each(raw: Any) -> list[Entry]:
    out: list[Entry] = []
    for position, fields in raw:
        event = from_fields(fields)
        if isinstance(event, PrescriptionChanged):
            raise DecodeError(f"{event.type} found in a user history")
        out.append((text(position), event))
    return out


async def _opened(data_keys: DataKeys | None, raw: Any, user: str) -> Any:
    """A page of ``user``'s entries with sealed ones opened (as ``(position, {b"data":
    plain})``: all the decoding reads); None if the user was erased (skipped).

    Raises Unreadable for an entry that does not open, DecodeError for a sealed
    page and no ``data_keys``.
    """
    if not any(sealing.is_sealed(fields) for _, fields in raw):
        return raw
    if data_keys is None:
        raise DecodeError("sealed entries, and no data keys to open them")
    try:
        datas = await data_keys.open_datas(user, [fields for _, fields in raw])
    except KeyDestroyed:
        return None
    return [(position, {b"data": data}) for (position, _), data in zip(raw, datas, strict=True)]


async def histories(
    redis: Redis,
    keys: Keys,
    users: Sequence[str],
    page: int = 1000,
    *,
    data_keys: DataKeys | None = None,
) -> list[UserLog]:
    """The histories of ``users`` (one pipeline round trip per page of entries); an erased
    user's is empty (replays skip them). ``data_keys`` open sealed entries."""
    logs = {user: UserLog(user, []) for user in users}
    todo = dict.fromkeys(users, "-")
    if data_keys is not None:
        await data_keys.prefetch(users)  # one round trip for the group, not one per user
    while todo:
        pipe = redis.pipeline(transaction=False)
        for user, after in todo.items():
            pipe.xrange(keys.history(user), after, "+", count=page)
        replies = await pipe.execute()
        nxt: dict[str, str] = {}
        for (user, _), raw in zip(todo.items(), replies, strict=True):
            plain = await _opened(data_keys, raw, user)
            if plain is None:
                logs[user].entries.clear()
                continue
            entries = _decode(plain)
            logs[user].entries.extend(entries)
            if len(entries) == page:
                nxt[user] = f"({entries[-1][0]}"
        todo = nxt
    return [logs[user] for user in users]


async def stream_histories(
    redis: Redis,
    keys: Keys,
    users: Sequence[str],
    group: int = 64,
    page: int = 1000,
    *,
    data_keys: DataKeys | None = None,
) -> AsyncIterator[list[UserLog]]:
    """Histories of ``users`` in groups of ``group`` users, in the given order."""
    for start in range(0, len(users), group):
        yield await histories(redis, keys, users[start : start + group], page, data_keys=data_keys)


async def prescriptions(
    redis: Redis, keys: Keys, users: Sequence[str], data_keys: DataKeys | None = None
) -> list[list[tuple[str, PrescriptionChanged]]]:
    """Each user's PrescriptionChanged stream (small: a handful per user); none for an
    erased user."""
    if data_keys is not None:
        await data_keys.prefetch(users)
    pipe = redis.pipeline(transaction=False)
    for user in users:
        pipe.xrange(keys.rx(user), "-", "+")
    out: list[list[tuple[str, PrescriptionChanged]]] = []
    for user, raw in zip(users, await pipe.execute(), strict=True):
        plain = await _opened(data_keys, raw, user) or []
        changes = [(text(pos), from_fields(fields)) for pos, fields in plain]
        out.append([(p, c) for p, c in changes if isinstance(c, PrescriptionChanged)])
    return out


async def latest_prescriptions(
    redis: Redis, keys: Keys, users: Sequence[str], data_keys: DataKeys | None = None
) -> list[PrescriptionChanged | None]:
    """Each user's newest PrescriptionChanged (None for none or an erased user), one round
    trip."""
    if data_keys is not None:
        await data_keys.prefetch(users)
    pipe = redis.pipeline(transaction=False)
    for user in users:
        pipe.xrevrange(keys.rx(user), "+", "-", count=1)
    out: list[PrescriptionChanged | None] = []
    for user, raw in zip(users, await pipe.execute(), strict=True):
        plain = await _opened(data_keys, raw, user)
        change = from_fields(plain[0][1]) if plain else None
        out.append(change if isinstance(change, PrescriptionChanged) else None)
    return out


async def total_events(redis: Redis, keys: Keys, users: Sequence[str], chunk: int = 1000) -> int:
    """How many history entries ``users`` hold (XLEN, pipelined): a progress bar's total."""
    total = 0
    for start in range(0, len(users), chunk):
        pipe = redis.pipeline(transaction=False)
        for user in users[start : start + chunk]:
            pipe.xlen(keys.history(user))
        total += sum(await pipe.execute())
    return total


__all__ = [
    "Entry",
    "UserLog",
    "histories",
    "latest_prescriptions",
    "order_key",
    "prescriptions",
    "stream_histories",
    "total_events",
    "user_ids",
]

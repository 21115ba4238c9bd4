"""Erasure on Redis (GDPR Art. 17): the erasure record, and deleting a user's data.

The record is the user's tombstone ``bt:{pNN}:erased:<user_id>``, a hash
written by ``DataKeys.destroy`` in the same script that deletes the user's
data key, so the record exists from the moment nothing of theirs can be
decrypted. It holds no health data:

- ``at``: when the erasure began (the Redis server's clock, unix ms); a re-run
  never changes it, so the ``PatientErased`` notice built from it is the same;
- ``by``: who asked (``operator:<jti>`` for the clinic API, ``cli:<OS user>``
  for the CLI);
- ``state``: ``started``, then ``done`` once every step has run;
- ``notify``: while ``started``, the subscriptions to tell (their ids, comma
  separated), collected before the user's clinic is deleted, so a re-run after
  a crash still knows them; removed when the erasure is done.

``delete_user_data`` deletes what the user's partition and the dead letters
hold of the user: history, prescription stream, snapshot, clinic, every read
model version, dedupe keys, and the user's entries in the partition feeds,
the enrolment record stream and ``bt:dlq`` (and its resolved copies). Stream
entries are found and deleted by a script page by page on the server, so a
long feed costs Redis time in small slices and nothing crosses the network
but counts. Every step is idempotent: a re-run deletes what is left.
The partition's audit stream is not touched: it holds no health data and is
the record of who read the user's data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

from redis.asyncio import Redis

from shared.keys import DLQ, PREFIX, Keys
from shared.streams import text

State = Literal["started", "done"]
#: SCAN pattern of every erasure record
RECORDS: Final = f"{PREFIX}:{{p*}}:erased:*"
#: the resolved dead letters (``backtrack dlq retry|drop`` copies each letter there)
DLQ_RESOLVED: Final = f"{DLQ}:resolved"
#: stream entries one script call looks at
PAGE: Final = 1000
#: keys asked of each SCAN call
SCAN_COUNT: Final = 1000

#: KEYS a stream; ARGV field, value, after ('-' or '(id'), count, spare field, spare value
#: -> {the last id looked at ('' at the end), entries deleted}. Deletes the entries whose
#: ``field`` is ``value``, except those whose ``spare field`` is ``spare value``.
_PURGE = """
local page = redis.call('XRANGE', KEYS[1], ARGV[3], '+', 'COUNT', tonumber(ARGV[4]))
local gone = {}
for _, entry in ipairs(page) do
  local fields, match, spare = entry[2], false, false
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[1] and fields[i + 1] == ARGV[2] then match = true end
    if fields[i] == ARGV[5] and fields[i + 1] == ARGV[6] then spare = true end
  end
  if match and not spare then table.insert(gone, entry[1]) end
end
if #gone > 0 then redis.call('XDEL', KEYS[1], unpack(gone)) end
local last = ''
if #page == tonumber(ARGV[4]) then last = page[#page][1] end
return {last, #gone}
"""
#: KEYS the record -> 1 if it was started and is done now
_FINISH = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' then return 0 end
redis.call('HDEL', KEYS[1], 'notify')
if redis.call('HGET', KEYS[1], 'state') == 'done' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done')
return 1
"""


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """One user's erasure record; ``notify`` is None until the subscriptions are collected."""

    user_id: str
    at_ms: int
    by: str
    state: State
    notify: tuple[str, ...] | None = None

    @property
    def at(self) -> datetime:
        """When the erasure began, as an aware UTC time."""
        return datetime.fromtimestamp(self.at_ms / 1000, UTC)

    @property
    def occurred_at(self) -> str:
        """``at`` in RFC 3339 with milliseconds, as the notice carries it."""
        return self.at.isoformat(timespec="milliseconds")


def record_of(user_id: str, raw: dict[Any, Any]) -> ErasureRecord:
    """The record from its hash (HGETALL)."""
    got = {text(k): text(v) for k, v in raw.items()}
    notify = got.get("notify")
    return ErasureRecord(
        user_id=user_id,
        at_ms=int(got.get("at", "0")),
        by=got.get("by", ""),
        state="done" if got.get("state") == "done" else "started",
        notify=None if notify is None else tuple(s for s in notify.split(",") if s),
    )


def names_user(key: str, user_id: str) -> bool:
    """Whether ``key`` (of the user's partition) holds the user's data: the tombstone and the
    data key aside, a key whose user segment is exactly ``user_id`` (a migration's
    temporary copy of their streams included). User ids never contain ``:``, so
    ``bt:{pNN}:rx:<version>:<user>`` cannot be another user's. Pure."""
    parts = key.split(":")
    if len(parts) < 4 or parts[0] != PREFIX:  # bt, {pNN}, kind, user...
        return False
    kind, rest = parts[2], parts[3:]
    if kind == "seen":  # bt:{pNN}:seen:<user>:<event_id>
        return len(rest) == 2 and rest[0] == user_id
    if kind in ("rx", "snap", "migrating"):  # bt:{pNN}:<kind>:<version...>:<user>, and a
        return rest[-1] == user_id  # migration's copy bt:{pNN}:migrating:<user|rx...>:<user>
    if kind in ("user", "clinic"):
        return rest == [user_id]
    return False


@dataclass
class Deleted:
    """What ``delete_user_data`` deleted: keys, and stream entries per stream kind."""

    keys: int = 0
    entries: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, count: int) -> None:
        self.entries[kind] = self.entries.get(kind, 0) + count


class ErasureRecords:
    """Reads and completes erasure records on one Redis (or Cluster)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._finish = redis.register_script(_FINISH)
        self._purge = redis.register_script(_PURGE)

    async def erased(self, user_id: str) -> bool:
        """Whether ``user_id`` carries an erasure record (begun or done)."""
        return bool(await self.redis.exists(self.keys.erased(user_id)))

    async def get(self, user_id: str) -> ErasureRecord | None:
        """The user's record, or None if never erased (or readmitted)."""
        raw: Any = await self.redis.hgetall(self.keys.erased(user_id))
        return record_of(user_id, raw) if raw else None

    async def note_notify(self, user_id: str, sub_ids: Sequence[str]) -> tuple[str, ...]:
        """Keep the subscriptions to tell, unless a run before kept some; the ones kept."""
        key = self.keys.erased(user_id)
        await self.redis.hsetnx(key, "notify", ",".join(sub_ids))
        kept = text(await self.redis.hget(key, "notify") or b"")
        return tuple(s for s in kept.split(",") if s)

    async def finish(self, user_id: str) -> bool:
        """Mark the erasure done and drop its ``notify``; True if it was ``started``."""
        return bool(await self._finish(keys=[self.keys.erased(user_id)]))

    async def started(self) -> list[str]:
        """Users whose erasure began and is not done (a scan of every record)."""
        users: list[str] = []
        async for name in self.redis.scan_iter(match=RECORDS, count=SCAN_COUNT):
            key = text(name)
            kind = text(await self.redis.type(key))
            if kind == "string" or text(await self.redis.hget(key, "state") or b"") == "started":
                users.append(key.split(":erased:", 1)[1])  # a string: the first format, begun
        return sorted(users)

    async def purge_stream(
        self, stream: str, field_name: str, value: str, spare: tuple[str, str] = ("", "")
    ) -> int:
        """Delete every entry of ``stream`` whose ``field_name`` is ``value`` (but those whose
        ``spare`` field has the spare value), a page per script call; how many."""
        after, deleted = "-", 0
        while True:
            args: list[str | int] = [field_name, value, after, PAGE, *spare]
            last, count = await self._purge(keys=[stream], args=args)
            deleted += int(count)
            if not last:
                return deleted
            after = "(" + text(last)

    async def delete_user_data(self, user_id: str) -> Deleted:
        """Delete the user's keys and stream entries in their partition and the dead letters."""
        keys, done = self.keys, Deleted()
        named = [keys.history(user_id), keys.rx(user_id), keys.snapshot(user_id)]
        done.keys += int(await self.redis.delete(*named, keys.clinic(user_id)))
        done.keys += await self._delete_scanned(user_id)
        streams = {
            "feed": (keys.feed_of(user_id), "user_id"),
            "rxfeed": (keys.rxfeed_of(user_id), "user_id"),
            "enrolments": (keys.enrolments(user_id), "user_id"),
            "dead_letters": (DLQ, "f:user_id"),
            "resolved_dead_letters": (DLQ_RESOLVED, "f:user_id"),
        }
        for kind, (stream, name) in streams.items():
            done.add(kind, await self.purge_stream(stream, name, user_id))
        return done

    async def _delete_scanned(self, user_id: str) -> int:
        """Read model versions and dedupe keys: found by SCAN in the user's partition."""
        base = self.keys.erased(user_id).rsplit(":erased:", 1)[0]
        batch: list[str] = []
        deleted = 0
        async for name in self.redis.scan_iter(match=f"{base}:*{user_id}*", count=SCAN_COUNT):
            key = text(name)
            if names_user(key, user_id):
                batch.append(key)
            if len(batch) >= PAGE:
                deleted += int(await self.redis.delete(*batch))
                batch = []
        if batch:
            deleted += int(await self.redis.delete(*batch))
        return deleted


__all__ = [
    "DLQ_RESOLVED",
    "RECORDS",
    "Deleted",
    "ErasureRecord",
    "ErasureRecords",
    "names_user",
    "record_of",
]

"""Sealing in place what is not a stream: snapshots and webhook queue items.

- A snapshot hash (``bt:{pNN}:snap:<user>``, and a rebuilt read model's
  ``...:snap:<version>:<user>``) is sealed as ``RedisStore`` seals one today
  (``snapshot_envelope``: bound to the user, the position and both versions), and written
  back by ``SNAPSHOT_LUA`` only if it is still what was read (the prescriber may have saved
  a newer one meanwhile: that one is sealed already, or taken by a later run).
- A webhook queue (``bt:{wh}:q:<sub>:<user>``) has its plaintext items, all but the head,
  replaced by ``QUEUE_LUA`` with the packed sealed entry the dispatcher queues today, each
  only where it still stands. The head is never rewritten: a dispatcher may hold it in
  flight, and ``Queues.finish`` pops the head only if it is the very bytes it holds. A
  plaintext head is left for a later run (it is delivered, or dead-lettered, meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.channels.queues import queue_item
from services.replay import plaintext
from services.replay.scripts import Lua, run_many
from services.replay.sealer import seal_all
from shared import sealing
from shared.data_keys import DataKeys, KeyDestroyed
from shared.redis_store import snapshot_envelope

#: KEYS snapshot; ARGV data, position, rules_version, state_version as read, then the
#: sealed data, enc and dek -> 1 if sealed, 0 if it changed meanwhile
SNAPSHOT_LUA = """
local now = redis.call('HMGET', KEYS[1], 'data', 'position', 'rules_version',
  'state_version', 'enc')
for i = 1, 4 do
  if now[i] ~= ARGV[i] then return 0 end
end
if now[5] and now[5] ~= '' then return 0 end
redis.call('HSET', KEYS[1], 'data', ARGV[5], 'enc', ARGV[6], 'dek', ARGV[7])
return 1
"""
#: KEYS queue; ARGV the packed prefix, then pairs of a plaintext item and its sealed one
#: -> {items replaced, plaintext items left (the head among them)}
QUEUE_LUA = """
local sealed = {}
for i = 2, #ARGV, 2 do sealed[ARGV[i]] = ARGV[i + 1] end
local replaced, left = 0, 0
for i, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #ARGV[1]) ~= ARGV[1] then
    local new = sealed[item]
    if i > 1 and new then
      redis.call('LSET', KEYS[1], i - 1, new)
      replaced = replaced + 1
    else
      left = left + 1
    end
  end
end
return {replaced, left}
"""
_SNAPSHOT, _QUEUE = Lua(SNAPSHOT_LUA), Lua(QUEUE_LUA)


@dataclass(frozen=True, slots=True)
class Sealed:
    """What one batch did: copies sealed, left plaintext for a later run, an erased user's
    left as they are, naming no patient."""

    sealed: int = 0
    left: int = 0
    skipped: frozenset[str] = frozenset()
    unsealable: int = 0


def user_of(key: str) -> str:
    """The user a partitioned key belongs to: its last part (user ids hold no ``:``)."""
    return key.rsplit(":", 1)[1]


async def seal_snapshots(redis: Redis, data_keys: DataKeys, names: Sequence[str]) -> Sealed:
    """Seal the plaintext snapshots among ``names`` (hashes), each only if unchanged."""
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    found: list[tuple[str, dict[str, Any]]] = []
    unsealable = 0
    for name, raw in zip(names, await pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(raw, dict) or not raw or not plaintext.is_plain_snapshot(raw):
            continue  # sealed, gone, or not a hash
        fields = plaintext.snapshot_fields(raw)
        if fields is None:
            unsealable += 1
        else:
            found.append((name, fields))
    envelopes = [snapshot_envelope(user_of(name), fields) for name, fields in found]
    calls, skipped = [], set()
    for (name, fields), sealed in zip(found, await seal_all(data_keys, envelopes), strict=True):
        if isinstance(sealed, KeyDestroyed):
            skipped.add(sealed.user_id)
            continue
        was = [fields[k] for k in ("data", "position", "rules_version", "state_version")]
        now = [sealed[k] for k in ("data", sealing.MARKER, sealing.KEY_FIELD)]
        calls.append(([name], [*was, *now]))
    done = sum(int(reply) for reply in await run_many(redis, _SNAPSHOT, calls))
    return Sealed(done, len(calls) - done, frozenset(skipped), unsealable)


async def seal_queues(redis: Redis, data_keys: DataKeys, names: Sequence[str]) -> Sealed:
    """Seal the plaintext items of the webhook queues ``names``, all but each head."""
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.lrange(name, 1, -1)
    queues: list[tuple[str, list[bytes]]] = []
    for name, listed in zip(names, await pipe.execute(raise_on_error=False), strict=True):
        if isinstance(listed, list):  # else gone, or not a list
            plain = [bytes(i) for i in listed if plaintext.is_plain_item(i)]
            queues.append((name, list(dict.fromkeys(plain))))
    fields = [
        (q, item, plaintext.change_fields(item))
        for q, (_, plain) in enumerate(queues)
        for item in plain
    ]
    ready = [(q, item, f) for q, item, f in fields if f is not None]
    sealed = await seal_all(data_keys, [f for _, _, f in ready])
    pairs: list[list[bytes]] = [[] for _ in queues]
    kept = [0] * len(queues)  # plaintext items no rerun will seal
    for q, _, f in fields:
        kept[q] += f is None
    for (q, item, _), done in zip(ready, sealed, strict=True):
        if isinstance(done, KeyDestroyed):
            kept[q] += 1
        else:
            pairs[q] += [item, queue_item(done)]
    calls = [([name], [sealing.PACKED, *pairs[q]]) for q, (name, _) in enumerate(queues)]
    replies = await run_many(redis, _QUEUE, calls)
    left = sum(max(int(reply[1]) - kept[q], 0) for q, reply in enumerate(replies))
    return Sealed(
        sealed=sum(int(reply[0]) for reply in replies),
        left=left,
        skipped=frozenset(d.user_id for d in sealed if isinstance(d, KeyDestroyed)),
        unsealable=sum(f is None for _, _, f in fields),
    )


__all__ = ["QUEUE_LUA", "SNAPSHOT_LUA", "Sealed", "seal_queues", "seal_snapshots", "user_of"]

"""Blue/green read models per user: stage a rebuilt copy, then switch in one script.

A rebuild writes a user's ``PrescriptionChanged`` stream and snapshot into
staged keys (``bt:{pNN}:rx:staged:<id>:<user>``, ``...:snap:staged:<id>:<user>``)
while live processing keeps writing the current ones. ``SWITCH_LUA`` then, in
one atomic script on the user's hash slot (every key shares the ``{pNN}`` tag,
so it runs on Redis Cluster too):

1. answers ``erased`` for a user with an erasure record, deleting the staged
   keys (a rebuild that read the user before the erasure writes nothing of
   theirs back); then checks the user's history tip and current rx tip are
   still those the rebuild read (nothing arrived, nothing was emitted since)
   and answers ``stale`` otherwise, touching nothing;
2. RENAMEs the current keys to retired ones (kept ``retire_ttl`` seconds for
   rollback) and the staged keys to the current names.

Readers (the clinic API, SSE, ``RedisStore``) and the append script keep using
the current key names, so they follow the switch with no pointer to read and
no window where they see half of a read model. The rxfeed is never written:
clinics are not notified of a rebuilt history (DESIGN.md invariant 8).

Rebuilt entries keep their stream ids where the same change (same event id)
was there before, so an SSE client resuming with ``Last-Event-ID`` neither
misses nor repeats them; a change new to the stream takes the position of the
event that caused it (bumped to stay increasing). A staged stream is one
fold's changes, versions 1, 2, 3... each entry naming its version (the one
codec), so the append script's version check carries on from its tip: no path
stores a version twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha1
from typing import Any

from redis.asyncio.client import Pipeline

from services.prescriber import engine
from services.prescriber.arrivals import Folded
from services.replay.scan import UserLog
from shared import sealing
from shared.codec import to_fields
from shared.data_keys import DataKeys, KeyDestroyed
from shared.events import PrescriptionChanged
from shared.keys import Keys
from shared.redis_store import snapshot_envelope
from shared.streams import position_key

STAGED_TTL = 24 * 3600  # an abandoned rebuild's staged keys clean themselves up

SWITCH_LUA = """
local function tip(key)
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #newest == 0 then return '' end
  return newest[1][1]
end
if redis.call('EXISTS', KEYS[8]) == 1 then
  redis.call('DEL', KEYS[4], KEYS[5])
  return 'erased'
end
if tip(KEYS[1]) ~= ARGV[1] or tip(KEYS[2]) ~= ARGV[2] then
  return 'stale'
end
for i = 0, 1 do
  local current, staged, retired = KEYS[2 + i], KEYS[4 + i], KEYS[6 + i]
  if redis.call('EXISTS', current) == 1 then
    redis.call('RENAME', current, retired)
    redis.call('EXPIRE', retired, ARGV[3])
  end
  if redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, current)
    redis.call('PERSIST', current)
  end
end
return 'switched'
"""
SWITCH_SHA = sha1(SWITCH_LUA.encode(), usedforsecurity=False).hexdigest()


def entry_ids(
    changes: Sequence[PrescriptionChanged],
    old: Sequence[tuple[str, PrescriptionChanged]],
    log: UserLog,
) -> Iterator[str]:
    """Stream ids for rebuilt changes: the old id of the same change, else its cause's."""
    kept = {change.event_id: position for position, change in old}
    caused = {event.event_id: position for position, event in log.entries}
    previous = (0, 0)
    for change in changes:
        wanted = position_key(kept.get(change.event_id) or caused.get(change.caused_by, "0-1"))
        previous = wanted if wanted > previous else (previous[0], previous[1] + 1)
        yield f"{previous[0]}-{previous[1]}"


@dataclass(frozen=True, slots=True)
class Staged:
    """A user's rebuilt read model as it is written: rx entries' fields and snapshot hash."""

    entries: list[Mapping[Any, Any]]
    snapshot: dict[str, Any]


async def records(
    data_keys: DataKeys | None, log: UserLog, folded: Folded, rules: engine.RuleSet
) -> Staged | None:
    """One user's rebuilt changes and snapshot, sealed with their data key; None if the
    user was erased meanwhile (nothing is staged for them)."""
    entries: list[Mapping[Any, Any]] = [to_fields(change) for change in folded.changes]
    snapshot: dict[str, Any] = {
        "data": engine.dump_state(folded.state),
        "position": log.tip,
        "rules_version": rules.rules_version,
        "state_version": engine.STATE_VERSION,
    }
    if data_keys is None or not data_keys.seals:
        return Staged(entries, snapshot | {sealing.MARKER: "", sealing.KEY_FIELD: ""})
    try:
        *sealed, snap = await data_keys.seal_many(
            [*entries, snapshot_envelope(log.user_id, snapshot)]
        )
    except KeyDestroyed:
        return None
    fields = ("data", sealing.MARKER, sealing.KEY_FIELD)
    return Staged(sealed, snapshot | {name: snap[name] for name in fields})


def stage(
    pipe: Pipeline,
    keys: Keys,
    *,
    rebuild_id: str,
    log: UserLog,
    old: Sequence[tuple[str, PrescriptionChanged]],
    folded: Folded,
    staged: Staged,
) -> None:
    """Queue on ``pipe`` the writes of one user's staged read model (``records``)."""
    user = log.user_id
    rx = keys.read_model("rx", user, f"staged:{rebuild_id}")
    snap = keys.read_model("snap", user, f"staged:{rebuild_id}")
    pipe.delete(rx, snap)
    ids = entry_ids(folded.changes, old, log)
    for entry_id, fields in zip(ids, staged.entries, strict=True):
        pipe.xadd(rx, fields, id=entry_id)  # type: ignore[arg-type]
    pipe.hset(snap, mapping=staged.snapshot)  # type: ignore[arg-type]
    pipe.expire(rx, STAGED_TTL)
    pipe.expire(snap, STAGED_TTL)


def switch_call(
    keys: Keys, rebuild_id: str, log: UserLog, old_tip: str, retire_ttl: int
) -> list[Any]:
    """EVALSHA arguments (after the sha) of one user's switch."""
    user = log.user_id
    staged, retired = f"staged:{rebuild_id}", f"retired:{rebuild_id}"
    names = [
        keys.history(user),
        keys.rx(user),
        keys.snapshot(user),
        keys.read_model("rx", user, staged),
        keys.read_model("snap", user, staged),
        keys.read_model("rx", user, retired),
        keys.read_model("snap", user, retired),
        keys.erased(user),
    ]
    return [len(names), *names, log.tip, old_tip, retire_ttl]


__all__ = ["STAGED_TTL", "SWITCH_LUA", "SWITCH_SHA", "entry_ids", "stage", "switch_call"]

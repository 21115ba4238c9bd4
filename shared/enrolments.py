"""Enrolments on Redis: which clinic holds a user, changed only with a record of who and when.

A user's clinic is the key ``bt:{pNN}:clinic:<user_id>``; every change of it
made by an enrolment (``POST``/``DELETE /v1/enrolments``) is one script that
sets or deletes the key and appends a record to the partition's enrolment
stream ``bt:{pNN}:enrolments`` in one atomic step, so the key never changes
without its record and no record is written for a change that did not
happen. The stream is never trimmed: it is the audit trail of transfers.
The one other writer of the key is ``append.lua``: an operator's RehabStarted
naming a clinic sets it when no clinic holds the user (SET NX, never a
transfer); that enrolment's record is the RehabStarted in the user's history.

A record's fields: ``action`` (``enrolled`` or ``unenrolled``), ``user_id``,
``clinic_id`` (the clinic now, ``""`` after an unenrolment), ``previous``
(the clinic before, ``""`` if none), ``by`` (``clinic:<id>`` or
``operator``) and ``at`` (RFC 3339, the writer's clock). A transfer is an
``enrolled`` record whose ``previous`` names another clinic.

Both scripts check the stream's type before their first write, so a key of
the wrong type fails them with nothing written. Their two keys share the
user's hash tag (Redis Cluster safe).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from shared.keys import Keys
from shared.store import Enrolment, UserErased
from shared.streams import text

_CHECK = """
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' and kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE backtrack enrolment: ' .. KEYS[2] .. ' holds a ' .. kind)
end
"""
#: KEYS clinic key, enrolment stream, erasure record; ARGV user, clinic, by, at ->
#: {record id, previous clinic}, or {} for an erased user (nothing written)
_ENROL = (
    _CHECK
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return {} end
local previous = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[2])
local id = redis.call('XADD', KEYS[2], '*', 'action', 'enrolled', 'user_id', ARGV[1],
  'clinic_id', ARGV[2], 'previous', previous, 'by', ARGV[3], 'at', ARGV[4])
return {id, previous}
"""
)
#: ARGV user, the clinic that must hold the user ('' for any), by, at -> {} or {id, previous}
_UNENROL = (
    _CHECK
    + """
local current = redis.call('GET', KEYS[1])
if not current or (ARGV[2] ~= '' and current ~= ARGV[2]) then
  return {}
end
redis.call('DEL', KEYS[1])
local id = redis.call('XADD', KEYS[2], '*', 'action', 'unenrolled', 'user_id', ARGV[1],
  'clinic_id', '', 'previous', current, 'by', ARGV[3], 'at', ARGV[4])
return {id, current}
"""
)


def _record(position: Any, fields: dict[Any, Any]) -> Enrolment:
    got = {text(k): text(v) for k, v in fields.items()}
    return Enrolment(
        user_id=got["user_id"],
        clinic_id=got["clinic_id"] or None,
        previous=got["previous"] or None,
        by=got["by"],
        at=datetime.fromisoformat(got["at"]),
        position=text(position),
    )


class RedisEnrolments:
    """The enrolment scripts and reads on one Redis (or Cluster); errors are the caller's."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.keys = keys
        self.redis = redis
        self._enrol = redis.register_script(_ENROL)
        self._unenrol = redis.register_script(_UNENROL)

    def _keys(self, user_id: str) -> list[str]:
        return [self.keys.clinic(user_id), self.keys.enrolments(user_id)]

    async def enrol(self, user_id: str, clinic_id: str, by: str, at: datetime) -> Enrolment:
        """Raises UserErased (nothing written) for a user whose erasure record exists."""
        args = [user_id, clinic_id, by, at.isoformat()]
        keys = [*self._keys(user_id), self.keys.erased(user_id)]
        reply = await self._enrol(keys=keys, args=args)
        if not reply:
            raise UserErased(user_id)
        position, previous = reply
        return Enrolment(user_id, clinic_id, text(previous) or None, by, at, text(position))

    async def unenrol(
        self, user_id: str, clinic_id: str | None, by: str, at: datetime
    ) -> Enrolment | None:
        args = [user_id, clinic_id or "", by, at.isoformat()]
        reply = await self._unenrol(keys=self._keys(user_id), args=args)
        if not reply:
            return None
        position, previous = reply
        return Enrolment(user_id, None, text(previous), by, at, text(position))

    async def of(self, user_id: str) -> list[Enrolment]:
        """The user's records, oldest first (a scan of the partition's stream: audit use)."""
        entries: Any = await self.redis.xrange(self.keys.enrolments(user_id))
        found = [_record(position, fields) for position, fields in entries]
        return [e for e in found if e.user_id == user_id]


__all__ = ["RedisEnrolments"]

"""Patients' data keys on Redis: created once, cached, destroyed on erasure, rewrapped on rotation.

A user's data key lives at ``bt:{pNN}:dek:<user_id>``, wrapped by the
current master key (``shared.sealing``); the plain key never leaves the
process. ``DataKeys.seal``/``open`` seal and open stream entry fields with it.

- Creation: the first ``seal`` for a user runs one script that refuses an
  erased user, sets the new wrapped key only if none exists (SET NX) and
  returns the stored one, so two processes racing both end with the winner's.
- Cache: unwrapped keys are kept in a bounded LRU for ``cache_ttl`` seconds.
  An erasure by another process is therefore seen here within that time: a
  process that had the key cached may still open the user's entries until its
  entry expires (``BACKTRACK_DATA_KEY_CACHE_TTL``); the erasing process drops
  its own entry at once.
- Erasure, ``destroy``: one script deletes the wrapped key and writes the
  tombstone ``bt:{pNN}:erased:<user_id>``, the erasure record
  (``shared.erasure``: ``at`` the server's time, ``by``, ``state`` ``started``);
  a re-run keeps the record as it is (``at`` above all). Afterwards ``open`` of
  a sealed entry raises ``KeyDestroyed``, and so does ``seal``: no new key is
  made for an erased user until ``readmit`` removes the tombstone (an operator
  reusing the id for a new person, once the erasure is done; the old entries
  stay unreadable).
- Rotation, ``rewrap``: every wrapped key not under the current master key is
  unwrapped with a previous one and written back under the current one, only
  if unchanged meanwhile (a destroyed key is never brought back). Events are
  not touched. A rerun skips what is done, so an interrupted rotation resumes.

Every key a script touches shares the user's hash tag (Redis Cluster safe).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from shared import sealing
from shared.keys import DATA_KEYS, Keys
from shared.sealing import DataKey, MasterKeys, OtherDataKey, Unreadable
from shared.settings import Settings
from shared.streams import text

#: KEYS data key, tombstone; ARGV a new wrapped key -> the stored wrapped key, or nil if erased
_CREATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""
#: KEYS data key, tombstone; ARGV by -> 1 if a key was deleted, else 0. A tombstone of the
#: first format (a string: the server's time in seconds) becomes a record begun then.
_DESTROY = """
local deleted = redis.call('DEL', KEYS[1])
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind == 'string' then
  local seconds = tonumber(redis.call('GET', KEYS[2])) or 0
  redis.call('DEL', KEYS[2])
  local at = string.format('%d', seconds * 1000)
  redis.call('HSET', KEYS[2], 'at', at, 'by', '', 'state', 'started')
end
if redis.call('HEXISTS', KEYS[2], 'at') == 0 then
  local now = redis.call('TIME')
  local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
  redis.call('HSET', KEYS[2], 'at', ms, 'by', ARGV[1], 'state', 'started')
end
return deleted
"""
#: KEYS tombstone -> 1 if removed, 0 if none, -1 if the erasure is not done
_READMIT = """
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then return 0 end
if kind ~= 'hash' or redis.call('HGET', KEYS[1], 'state') ~= 'done' then return -1 end
return redis.call('DEL', KEYS[1])
"""
#: KEYS data key; ARGV the wrapped key read, its replacement -> 1 if replaced, else 0
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class ErasureUnfinished(RuntimeError):  # noqa: N818 - reads as the state it reports
    """The user's erasure has begun and is not done: the id cannot be readmitted yet."""


class KeyDestroyed(LookupError):  # noqa: N818 - the name readers catch
    """The user's data key was destroyed (erased): their sealed entries can never be read."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"the data key of {user_id!r} was destroyed")
        self.user_id = user_id


#: An opened entry's fields, or why it does not open (``DataKeys.open_many``).
Opened = Mapping[Any, Any] | KeyDestroyed | Unreadable


@dataclass(frozen=True, slots=True)
class Rewrapped:
    """What a ``rewrap`` did: keys rewrapped now, and keys already under the current master key."""

    rewrapped: int
    current: int


class DataKeys:
    """Patients' data keys on one Redis (or Cluster), and sealing with them.

    ``clock`` (monotonic seconds) times the cache entries; tests pass their own.
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        masters: MasterKeys,
        *,
        cache_size: int = 10_000,
        cache_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        seals: bool = True,
    ) -> None:
        self.redis = redis
        #: whether new entries are sealed (``seal_many``); reads open sealed entries either way
        self.seals = seals
        self.keys = keys
        self.masters = masters
        self._cache: OrderedDict[str, tuple[DataKey, float]] = OrderedDict()
        self._size = cache_size
        self._ttl = cache_ttl
        self._clock = clock
        self._create = redis.register_script(_CREATE)
        self._destroy = redis.register_script(_DESTROY)
        self._readmit = redis.register_script(_READMIT)
        self._swap = redis.register_script(_SWAP)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings) -> DataKeys:
        """The data keys of a service: master keys, partitions and cache from ``settings``."""
        return cls(
            redis,
            Keys(settings.partitions),
            settings.master_keys(),
            cache_size=settings.data_key_cache_size,
            cache_ttl=settings.data_key_cache_ttl,
            seals=settings.encrypt_at_rest,
        )

    async def seal(self, user_id: str, fields: Mapping[Any, Any]) -> dict[Any, Any]:
        """``fields`` (of ``user_id``'s entry) sealed under their data key, made on first use.

        Raises KeyDestroyed for an erased user, ValueError for another user's entry.
        """
        _check_user(user_id, fields)
        return sealing.seal(await self._key(user_id, create=True), fields)

    async def open(self, user_id: str, fields: Mapping[Any, Any]) -> dict[Any, Any]:
        """The plain fields of ``user_id``'s entry; a plaintext entry comes back unchanged.

        Raises KeyDestroyed when the key that sealed it is not the user's key
        (destroyed, perhaps replaced since ``readmit``; or an entry copied from
        another user and renamed), Unreadable for an entry that does not
        authenticate (tampered with) or names another user.
        """
        if not sealing.is_sealed(fields):
            return dict(fields)
        if sealing.entry_user(fields) != user_id:
            raise Unreadable(f"the entry is not {user_id!r}'s")
        try:
            return sealing.open_sealed(await self._key(user_id, create=False), fields)
        except OtherDataKey:
            raise KeyDestroyed(user_id) from None

    async def seal_many(self, entries: Sequence[Mapping[Any, Any]]) -> list[Mapping[Any, Any]]:
        """Each entry sealed under its user's data key (made on first use), in order;
        unchanged when this process does not seal (``seals`` false).

        Raises KeyDestroyed if any entry's user was erased (nothing is sealed then).
        """
        sealed = await self.seal_each(entries)
        for item in sealed:
            if isinstance(item, KeyDestroyed):
                raise item
        return cast(list[Mapping[Any, Any]], sealed)

    async def seal_each(
        self, entries: Sequence[Mapping[Any, Any]]
    ) -> list[Mapping[Any, Any] | KeyDestroyed]:
        """Each entry sealed as ``seal_many`` does, or KeyDestroyed for an erased user's."""
        if not self.seals:
            return list(entries)
        users = [sealing.entry_user(fields) for fields in entries]
        found = await self._keys(set(users), create=True)
        out: list[Mapping[Any, Any] | KeyDestroyed] = []
        for user, fields in zip(users, entries, strict=True):
            key = found[user]
            out.append(key if isinstance(key, KeyDestroyed) else sealing.seal(key, fields))
        return out

    async def open_many(self, entries: Sequence[Mapping[Any, Any]]) -> list[Opened]:
        """Each entry opened, in order: its plain fields, or the error that stops it.

        An entry of an erased user gives ``KeyDestroyed`` (readers skip it); one
        that does not authenticate, or has no ``user_id``, gives ``Unreadable``
        (readers dead-letter it). A plaintext entry comes back as it is.
        """
        users: list[str | None] = []
        names: dict[Any, str] = {}  # each user's id decoded once per call, not per entry
        for fields in entries:
            if not sealing.is_sealed(fields):
                users.append(None)
                continue
            raw = fields.get(b"user_id", fields.get("user_id"))
            user = names.get(raw) if raw is not None else ""
            if user is None:
                user = names[raw] = raw.decode() if isinstance(raw, bytes) else str(raw)
            users.append(user)
        found = await self._keys({u for u in users if u}, create=False)
        out: list[Opened] = []
        for user, fields in zip(users, entries, strict=True):
            if user is None:
                out.append(fields)
            elif not user:
                out.append(Unreadable("a sealed entry has no user_id"))
            else:
                out.append(_open(found[user], user, fields))
        return out

    async def open_datas(self, user_id: str, entries: Sequence[Mapping[Any, Any]]) -> list[Any]:
        """The plain ``data`` of each of ``user_id``'s entries, in order, and nothing else
        built (a replay's page of one history). Raises KeyDestroyed for an erased user,
        Unreadable for an entry that does not open or names another user."""
        key: DataKey | None = None
        out: list[Any] = []
        owner = user_id.encode()
        for fields in entries:
            if not sealing.is_sealed(fields):
                out.append(fields.get(b"data", fields.get("data")))
                continue
            named = fields.get(b"user_id")
            if named != owner and (named is not None or sealing.entry_user(fields) != user_id):
                raise Unreadable(f"the entry is not {user_id!r}'s")
            key = key or await self._key(user_id, create=False)
            try:
                plain = sealing.open_data(key, fields)
                if plain is None:  # not as Redis answers it: the general path
                    plain = sealing.open_sealed(key, fields)["data"]
            except OtherDataKey:
                raise KeyDestroyed(user_id) from None
            out.append(plain)
        return out

    async def prefetch(self, users: Sequence[str]) -> None:
        """Fetch the data keys of ``users`` not cached yet, in one round trip (a reader about
        to open many users' entries one user at a time)."""
        await self._keys(set(users), create=False)

    async def open_all(self, entries: Sequence[Mapping[Any, Any]]) -> list[Mapping[Any, Any]]:
        """Each entry opened, in order; raises the first entry's error (``open_many``)."""
        opened = await self.open_many(entries)
        for item in opened:
            if isinstance(item, Exception):
                raise item
        return cast(list[Mapping[Any, Any]], opened)

    async def destroy(self, user_id: str, by: str = "") -> bool:
        """Crypto-shred ``user_id``: delete the wrapped key, write the erasure record (begun,
        by ``by``) unless one exists, forget the key.

        True if a key existed. Idempotent: a re-run changes no field of the record.
        """
        keys = [self.keys.data_key(user_id), self.keys.erased(user_id)]
        deleted = await self._destroy(keys=keys, args=[by])
        self._cache.pop(user_id, None)
        return bool(deleted)

    async def readmit(self, user_id: str) -> bool:
        """Remove ``user_id``'s tombstone so the next ``seal`` makes a new key; True if erased.

        Raises ErasureUnfinished while the erasure is not done (its deletion
        could still remove the new person's data).
        """
        removed = int(await self._readmit(keys=[self.keys.erased(user_id)]))
        if removed < 0:
            raise ErasureUnfinished(f"the erasure of {user_id!r} is not done; finish it first")
        return bool(removed)

    async def erased(self, user_id: str) -> bool:
        """Whether ``user_id`` carries an erasure tombstone (the erasure begun or done)."""
        return bool(await self.redis.exists(self.keys.erased(user_id)))

    async def rewrap(self, count: int = 500) -> Rewrapped:
        """Rewrap every data key not under the current master key; resumable (see module doc).

        Raises UnknownMasterKey for a key wrapped by a master key not configured.
        """
        current = self.masters.current
        done = already = 0
        async for name in self.redis.scan_iter(match=DATA_KEYS, count=count):
            wrapped = _raw(await self.redis.get(name))
            if wrapped is None:
                continue  # destroyed since the scan saw it
            if sealing.wrapped_by(wrapped) == current.id:
                already += 1
                continue
            user_id = text(name).split(":dek:", 1)[1]
            data_key = sealing.unwrap(self.masters, wrapped, user_id)
            replacement = sealing.wrap(current, data_key, user_id)
            done += await self._swap(keys=[name], args=[wrapped, replacement])
        return Rewrapped(rewrapped=done, current=already)

    async def _keys(self, users: set[str], *, create: bool) -> dict[str, DataKey | KeyDestroyed]:
        """The data keys of ``users``: cached ones at once, the others in one pipeline."""
        now = self._clock()
        found: dict[str, DataKey | KeyDestroyed] = {}
        missing: list[str] = []
        for user in users:
            cached = self._cache.get(user)
            if cached is not None and cached[1] > now:
                self._cache.move_to_end(user)
                found[user] = cached[0]
            else:
                missing.append(user)
        if missing:
            stored = await self._fetch(missing, create=create)
            for user, wrapped in zip(missing, stored, strict=True):
                found[user] = self._remember(user, wrapped, now)
        return found

    async def _key(self, user_id: str, *, create: bool) -> DataKey:
        key = (await self._keys({user_id}, create=create))[user_id]
        if isinstance(key, KeyDestroyed):
            raise key
        return key

    def _remember(self, user_id: str, wrapped: bytes | None, now: float) -> DataKey | KeyDestroyed:
        """The unwrapped key, cached; KeyDestroyed (nothing cached) for none stored.

        Raises UnknownMasterKey (this process lacks the master key that wrapped it: a
        configuration to mend, not the entry's fault), Unreadable for a damaged wrapped key.
        """
        if wrapped is None:
            self._cache.pop(user_id, None)
            return KeyDestroyed(user_id)
        key = DataKey.of(sealing.unwrap(self.masters, wrapped, user_id))
        self._cache[user_id] = (key, now + self._ttl)
        self._cache.move_to_end(user_id)
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return key

    async def _fetch(self, users: Sequence[str], *, create: bool) -> list[bytes | None]:
        """The stored wrapped keys of ``users`` (None: none, or erased) in one round trip;
        with ``create``, one made for each user that has none and is not erased.

        Each creation is its own script call in the pipeline (Redis Cluster safe:
        each touches one user's keys); a script cache flushed meanwhile is
        loaded again and the missing calls sent once more.
        """
        if not create:
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                pipe.get(self.keys.data_key(user))
            return [_raw(reply) for reply in await pipe.execute()]
        calls = {
            user: (
                "EVALSHA",
                self._create.sha,
                2,
                self.keys.data_key(user),
                self.keys.erased(user),
                sealing.wrap(self.masters.current, sealing.new_data_key(), user),
            )
            for user in users
        }
        replies: dict[str, Any] = {}
        for _ in range(2):
            todo = [user for user in users if user not in replies]
            pipe = self.redis.pipeline(transaction=False)
            for user in todo:
                pipe.execute_command(*calls[user])
            answers = await pipe.execute(raise_on_error=False)
            for user, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError):
                    continue
                if isinstance(answer, Exception):
                    raise answer
                replies[user] = answer
            if len(replies) == len(users):
                return [_raw(replies[user]) for user in users]
            await self.redis.script_load(_CREATE)
        raise NoScriptError("the data key script could not be loaded")


def _raw(reply: bytes | str | None) -> bytes | None:
    """A wrapped key as Redis answers it, as bytes (whether the client decodes replies or not)."""
    return reply.encode() if isinstance(reply, str) else reply


def _open(key: DataKey | KeyDestroyed, user_id: str, fields: Mapping[Any, Any]) -> Opened:
    if isinstance(key, KeyDestroyed):
        return key
    try:
        return sealing.open_sealed(key, fields)
    except OtherDataKey:
        return KeyDestroyed(user_id)
    except Unreadable as exc:
        return exc


def _check_user(user_id: str, fields: Mapping[Any, Any]) -> None:
    if sealing.entry_user(fields) != user_id:
        raise ValueError(f"the entry is not {user_id!r}'s")


__all__ = ["DataKeys", "ErasureUnfinished", "KeyDestroyed", "Opened", "Rewrapped"]

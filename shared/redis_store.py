"""The event store on Redis Streams (``EventStore`` in ``shared.store``).

Every append is done by ``append.lua`` (per-user dedupe check, history XADD,
feed XADD, dedupe key, clinic key if none is set), atomic on the server: no dual writes from
Python, and every key it touches shares the partition's hash tag (Redis
Cluster safe). A batch goes as one script call per partition (each event
still atomic on its own), pipelined: a few commands instead of one per event.
History streams are never trimmed. Every read and write goes through
``shared.codec``. Any failure to reach Redis is raised as
``StoreUnavailable``; because each event's append is atomic, an append that
raised either happened entirely or not at all, and retrying it is safe (the
retry answers ``duplicate`` with the original position).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from hashlib import sha1
from importlib.resources import files
from typing import Any, NamedTuple, cast

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from shared import sealing
from shared.codec import DecodeError, from_fields, to_fields
from shared.data_keys import DataKeys, KeyDestroyed
from shared.enrolments import RedisEnrolments
from shared.events import Event, Input, PrescriptionChanged, RehabStarted
from shared.keys import Keys
from shared.store import Appended, Enrolment, Snapshot, StoreUnavailable, VersionGapError
from shared.streams import START, is_start, text

APPEND_LUA = files("shared").joinpath("append.lua").read_text(encoding="utf-8")
APPEND_SHA = sha1(APPEND_LUA.encode(), usedforsecurity=False).hexdigest()
DEFAULT_DEDUPE_TTL = 7 * 24 * 3600

#: Server answers meaning "not now" (nothing was written): callers answer 503.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # includes BusyLoadingError and MaxConnectionsError
    rx.TimeoutError,
    rx.OutOfMemoryError,  # refused before the script's first write
    rx.ReadOnlyError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.SlotNotCoveredError,  # a cluster node is down and nobody took over its slots
    OSError,
    asyncio.TimeoutError,
)
_UNAVAILABLE_PREFIXES = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "LOADING", "BUSY ")
_CLUSTER_UNREACHABLE = "Redis Cluster cannot be connected"
#: ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS) asks for a cluster client.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def _is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, rx.RedisClusterException):  # not a RedisError: cluster discovery failed
        return str(exc).startswith(_CLUSTER_UNREACHABLE)
    return isinstance(exc, _UNAVAILABLE) or (
        isinstance(exc, rx.ResponseError) and str(exc).startswith(_UNAVAILABLE_PREFIXES)
    )


@contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if _is_unavailable(exc):
            raise StoreUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}") from exc
        raise


def is_cluster_url(url: str) -> bool:
    """True for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    return url.partition("://")[0].lower() in CLUSTER_SCHEMES


def node_url(url: str) -> str:
    """The plain ``redis://`` (or ``rediss://``) URL of a cluster URL's seed node."""
    scheme, sep, rest = url.partition("://")
    return f"{CLUSTER_SCHEMES.get(scheme.lower(), scheme)}{sep}{rest}"


def connect(
    url: str, *, max_connections: int = 512, pool_timeout: float = 5.0, **kwargs: Any
) -> Redis:
    """A client for ``url`` tuned for the services; the caller ``aclose()``s it.

    A blocking pool waits up to ``pool_timeout`` for a free connection rather
    than failing at once past ``max_connections`` (redis-py 8.1's default
    pool does). Connection refusals are retried twice with a short backoff, so
    a dead server surfaces as ``StoreUnavailable`` in well under a second.
    Timeouts are not retried: a hung server surfaces after ``socket_timeout``
    (2 s), and the client, not this process, retries (appends are idempotent).
    Blocking reads longer than that need a client with a larger timeout.
    hiredis is used automatically when installed.

    A ``redis+cluster://host:port`` URL gives a ``redis.asyncio.RedisCluster``
    seeded with that node (it discovers the others), ``max_connections`` per
    node and no pool wait (RedisCluster has no blocking pool). It is typed as
    ``Redis`` because it answers the same single-slot commands every service
    uses (each touches one key, or keys of one hash tag); pipelines must be
    ``transaction=False`` and send EVALSHA through ``execute_command`` (see
    ``RedisStore._run_many``).
    """
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "socket_connect_timeout": 1.5,
        "socket_timeout": 2.0,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "retry": Retry(
            ExponentialBackoff(cap=0.25, base=0.05),
            retries=2,
            supported_errors=(rx.ConnectionError,),
        ),
    }
    if is_cluster_url(url):
        cluster = RedisCluster.from_url(node_url(url), **(options | kwargs))
        return cast(Redis, cluster)
    pool = BlockingConnectionPool.from_url(url, **(options | {"timeout": pool_timeout} | kwargs))
    return Redis.from_pool(pool)


async def ping(redis: Redis) -> bool:
    """True if Redis (every node of a cluster) answers PING within two seconds; never raises."""
    # A cluster client PINGs one node unless told otherwise: ask every primary.
    extra: dict[str, Any] = {}
    if isinstance(redis, RedisCluster):
        extra["target_nodes"] = RedisCluster.PRIMARIES
    try:
        async with asyncio.timeout(2.0):
            return bool(await redis.ping(**extra))
    except (rx.RedisError, rx.RedisClusterException, OSError, TimeoutError):
        return False


def _lower(after: str) -> str:
    return "-" if is_start(after) else f"({after}"


def _as_input(fields: Mapping[Any, Any]) -> Input:
    event = from_fields(fields)
    if isinstance(event, PrescriptionChanged):
        raise DecodeError(f"{event.type} found in a user history")
    return event


def _as_change(fields: Mapping[Any, Any]) -> PrescriptionChanged:
    event = from_fields(fields)
    if not isinstance(event, PrescriptionChanged):
        raise DecodeError(f"{event.type} found in a prescription stream")
    return event


#: KEYS snapshot, erasure record; ARGV field, value, ... -> 1 if written, 0 if erased
_SAVE_SNAPSHOT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
#: the ``type`` a snapshot's sealed data is bound to (with its user, position and versions)
SNAPSHOT_TYPE = "Snapshot"


def snapshot_envelope(user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A snapshot hash as a sealable entry: its data bound to the user, the position it
    was folded to and both versions, so a snapshot moved or relabelled does not open."""
    return {
        "type": f"{SNAPSHOT_TYPE}/{text(fields['rules_version'])}",
        "event_id": text(fields["position"]),
        "user_id": user_id,
        "version": text(fields["state_version"]),
        **{k: fields[k] for k in ("data", sealing.MARKER, sealing.KEY_FIELD) if k in fields},
    }


def _snapshot_fields(snapshot: Snapshot) -> dict[str, bytes | str | int]:
    return {
        "data": snapshot.data,
        "position": snapshot.position,
        "rules_version": snapshot.rules_version,
        "state_version": snapshot.state_version,
    }


def _flat(fields: Mapping[Any, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]


def _fields_or_none(opened: Any) -> Mapping[Any, Any] | None:
    return None if isinstance(opened, Exception) else cast(Mapping[Any, Any], opened)


class Item(NamedTuple):
    """One event for the append script: its partition, six keys, field/value arguments, clinic."""

    event: Event
    event_id: str
    partition: int
    keys: list[str]
    fields: list[Any]
    clinic: str
    version: str = ""  # a PrescriptionChanged's version: idempotent by version, not dedupe


#: the most items one script call appends (a script holds the server while it runs)
CALL_ITEMS = 100


def _pairs(flat: Sequence[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _stored_as(event: Event, fields: Mapping[Any, Any]) -> bool:
    """Whether the stored entry's (opened) ``fields`` decode to ``event``.

    The script compares fields byte for byte; a sealed entry never matches
    (each seal draws a new nonce), and an entry written under an older schema
    version or encoding differs in bytes from the same event written today,
    so a conflict is confirmed on the decoded events before it is answered.
    """
    try:
        return from_fields(fields) == event
    except ValueError:  # DecodeError, pydantic's ValidationError: not this event either
        return False


def _appended(item: Item, reply: Sequence[Any], stored: Mapping[Any, Any] | None) -> Appended:
    """An ``Appended`` from the script's reply for one item; ``stored``: the opened fields
    of the entry a conflict names (None if it does not open)."""
    status = text(reply[0])
    if status == "error":
        message = text(reply[1])
        if message.startswith("GAP "):
            raise VersionGapError(message.removeprefix("GAP "))
        raise rx.ResponseError(message)
    position = text(reply[1])
    if status == "erased":
        return Appended(item.event_id, "erased", "")
    if status == "conflict":
        same = stored is not None and _stored_as(item.event, stored)
        return Appended(item.event_id, "duplicate" if same else "conflict", position)
    if status not in ("accepted", "duplicate"):
        raise rx.ResponseError(f"unexpected append reply {reply!r}")
    return Appended(item.event_id, "accepted" if status == "accepted" else "duplicate", position)


class RedisStore:
    """``EventStore`` on one Redis (or Redis Cluster: keys are hash-tagged).

    ``redis`` should be a bytes client (``decode_responses=False``, as
    ``connect`` makes): snapshot data are opaque bytes.
    """

    def __init__(
        self,
        redis: Redis,
        partitions: int = 16,
        dedupe_ttl: int = DEFAULT_DEDUPE_TTL,
        data_keys: DataKeys | None = None,
    ) -> None:
        if dedupe_ttl < 1:
            raise ValueError("dedupe_ttl must be at least 1 second")
        self.redis = redis
        self.keys = Keys(partitions)
        self.dedupe_ttl = dedupe_ttl
        #: seals what is written and opens what is read; None: plaintext only (tools, tests)
        self.data_keys = data_keys
        self._enrolments = RedisEnrolments(redis, self.keys)

    # -- writes -----------------------------------------------------------

    def _event_item(self, event: Input, enrols: bool = True) -> Item:
        k, user, event_id = self.keys, event.user_id, str(event.event_id)
        keys = [
            k.seen(user, event_id),
            k.legacy_seen(user, event_id),
            k.history(user),
            k.feed_of(user),
            k.clinic(user),
            k.erased(user),
        ]
        clinic = ""
        if enrols and isinstance(event, RehabStarted) and event.clinic_id:
            clinic = event.clinic_id
        return Item(event, event_id, k.partition(user), keys, _flat(to_fields(event)), clinic)

    def _change_item(self, change: PrescriptionChanged) -> Item:
        k, user, event_id = self.keys, change.user_id, str(change.event_id)
        # a change is idempotent by version: the script reads neither dedupe key
        seen = [k.seen(user, event_id), k.legacy_seen(user, event_id)]
        keys = [*seen, k.rx(user), k.rxfeed_of(user), k.clinic(user), k.erased(user)]
        fields = _flat(to_fields(change))
        return Item(change, event_id, k.partition(user), keys, fields, "", str(change.version))

    def _call(self, items: Sequence[Item]) -> list[Any]:
        """The arguments after the script's SHA for one call appending ``items``."""
        keys: list[Any] = []
        args: list[Any] = [self.dedupe_ttl]
        for item in items:
            keys += item.keys
            args += [len(item.fields), *item.fields, item.clinic, item.version]
        return [len(keys), *keys, *args]

    async def _append_items(self, items: Sequence[Item]) -> list[Appended]:
        """Append items: one script call per partition, pipelined, results in order.

        Each item is atomic on its own; a call takes at most ``CALL_ITEMS``,
        so no single script holds the server long.
        """
        with _guard():
            sealed = await self._sealed(items)
        answers: list[Any] = [["erased", ""] if item is None else None for item in sealed]
        by_partition: dict[int, list[int]] = {}
        for i, item in enumerate(sealed):
            if item is not None:
                by_partition.setdefault(item.partition, []).append(i)
        groups = [
            indices[start : start + CALL_ITEMS]
            for indices in by_partition.values()
            for start in range(0, len(indices), CALL_ITEMS)
        ]
        items = [s or item for s, item in zip(sealed, items, strict=True)]
        calls = [self._call([items[i] for i in group]) for group in groups]
        with _guard():
            # one EVALSHA costs less CPU than a pipeline of one
            replies = (
                [await self._run(calls[0])] if len(calls) == 1 else await self._run_many(calls)
            )
        for group, reply in zip(groups, replies, strict=True):
            for i, answer in zip(group, reply, strict=True):
                answers[i] = answer
        stored = await self._conflicting(answers)
        return [_appended(*args) for args in zip(items, answers, stored, strict=True)]

    async def _sealed(self, items: Sequence[Item]) -> list[Item | None]:
        """The items with their fields sealed; None for an erased user's (never sent: the
        script would refuse it anyway, and it is not even sealed)."""
        if self.data_keys is None or not self.data_keys.seals:
            return list(items)
        sealed = await self.data_keys.seal_each([_pairs(item.fields) for item in items])
        return [
            None if isinstance(fields, KeyDestroyed) else item._replace(fields=_flat(fields))
            for item, fields in zip(items, sealed, strict=True)
        ]

    async def _conflicting(self, answers: Sequence[Any]) -> list[Mapping[Any, Any] | None]:
        """For each answer naming a conflict, the stored entry's fields opened (None if not)."""
        found: list[Mapping[Any, Any] | None] = [
            _pairs(a[2]) if isinstance(a, list) and text(a[0]) == "conflict" else None
            for a in answers
        ]
        named = [fields for fields in found if fields is not None]
        if not named or self.data_keys is None:
            return found
        with _guard():
            opened = iter(await self.data_keys.open_many(named))
        return [None if f is None else _fields_or_none(next(opened)) for f in found]

    async def _run(self, call: list[Any]) -> Any:
        try:
            return await self.redis.evalsha(APPEND_SHA, *call)
        except rx.NoScriptError:
            await self.redis.script_load(APPEND_LUA)
            return await self.redis.evalsha(APPEND_SHA, *call)

    async def _run_many(self, calls: list[list[Any]]) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(2):  # the second pass only after a SCRIPT FLUSH or a restart
            pipe = self.redis.pipeline(transaction=False)
            for i in todo:  # redis-py blocks pipe.evalsha on a cluster; the command is fine
                pipe.execute_command("EVALSHA", APPEND_SHA, *calls[i])
            answers = await pipe.execute(raise_on_error=False)
            missing = []
            for i, answer in zip(todo, answers, strict=True):
                if isinstance(answer, rx.NoScriptError):
                    missing.append(i)
                elif isinstance(answer, Exception):
                    raise answer
                else:
                    results[i] = answer
            if not missing:
                return results
            await self.redis.script_load(APPEND_LUA)
            todo = missing
        raise rx.NoScriptError("append script could not be loaded")

    async def append(self, event: Input, *, enrols: bool = True) -> Appended:
        """Store one event atomically (dedupe, history, partition feed, clinic if none).

        ``enrols``: whether a RehabStarted naming a clinic enrols its user with
        it when no clinic holds them (``EventStore.append``). Its event_id
        stored for this user already: ``duplicate`` (same payload) or
        ``conflict`` (another payload), with that entry's position; nothing
        written either way.
        """
        [appended] = await self._append_items([self._event_item(event, enrols)])
        return appended

    async def append_many(self, events: Sequence[Input], *, enrols: bool = True) -> list[Appended]:
        """Store many events in one round trip, each atomically, results in order.

        The batch as a whole is not atomic: if Redis goes away mid-batch some
        events may be stored; retrying the batch is safe (those answer
        ``duplicate``). A user's event_id repeated inside the batch answers
        ``duplicate`` (or ``conflict``, another payload) with the first one's
        position.
        """
        if not events:
            return []
        return await self._append_items([self._event_item(e, enrols) for e in events])

    async def append_change(self, change: PrescriptionChanged) -> Appended:
        """Store a PrescriptionChanged on rx + rxfeed once per version, forever.

        Its version already there: ``duplicate`` (that entry's position), nothing
        written; the next version: appended; a later one: ``VersionGapError``.
        """
        [appended] = await self._append_items([self._change_item(change)])
        return appended

    async def append_changes(self, changes: Sequence[PrescriptionChanged]) -> list[Appended]:
        """Store many changes in one round trip, each once and atomically, results in order."""
        if not changes:
            return []
        return await self._append_items([self._change_item(c) for c in changes])

    async def save_snapshot(self, user_id: str, snapshot: Snapshot) -> None:
        """Replace the user's snapshot (one HSET: all fields or none)."""
        await self.save_snapshots([(user_id, snapshot)])

    async def save_snapshots(self, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        """Replace many users' snapshots in one round trip (each one HSET, sealed).

        A user erased meanwhile gets no snapshot: not sealed once their key is gone, and
        not written once their erasure record exists (checked with the write, in one
        script, so a process still holding their key cannot write one back).
        """
        if not snapshots:
            return
        with _guard():
            hashes = await self._sealed_snapshots(snapshots)
            pipe = self.redis.pipeline(transaction=False)
            for user_id, mapping in hashes:
                keys = (self.keys.snapshot(user_id), self.keys.erased(user_id))
                pipe.execute_command("EVAL", _SAVE_SNAPSHOT, 2, *keys, *_flat(mapping))
            await pipe.execute()

    async def _sealed_snapshots(
        self, snapshots: Sequence[tuple[str, Snapshot]]
    ) -> list[tuple[str, dict[str, Any]]]:
        plain = [(user, _snapshot_fields(snapshot)) for user, snapshot in snapshots]
        if self.data_keys is None or not self.data_keys.seals:
            # empty markers: a plaintext snapshot replaces a sealed one in the same HSET
            return [(user, f | {sealing.MARKER: "", sealing.KEY_FIELD: ""}) for user, f in plain]
        envelopes = [snapshot_envelope(user, fields) for user, fields in plain]
        sealed = await self.data_keys.seal_each(envelopes)  # the keys a batch lacks: one trip
        names = ("data", sealing.MARKER, sealing.KEY_FIELD)
        return [
            (user, fields | {name: got[name] for name in names})
            for (user, fields), got in zip(plain, sealed, strict=True)
            if not isinstance(got, KeyDestroyed)  # erased: no snapshot (their key is gone)
        ]

    # -- reads ------------------------------------------------------------

    async def history(
        self, user_id: str, after: str = START, count: int | None = None
    ) -> list[tuple[str, Input]]:
        """A user's events after ``after`` (exclusive), oldest first."""
        with _guard():
            entries: Any = await self.redis.xrange(
                self.keys.history(user_id), _lower(after), "+", count
            )
            opened = await self._open_all(fields for _, fields in entries)
        return [(text(p), _as_input(f)) for (p, _), f in zip(entries, opened, strict=True)]

    async def histories(
        self, cursors: Sequence[tuple[str, str]], until: Sequence[str | None] | None = None
    ) -> list[list[tuple[str, Input]]]:
        """Many users' new events in one round trip: one XRANGE each, pipelined."""
        if not cursors:
            return []
        ends = until or [None] * len(cursors)
        with _guard():
            pipe = self.redis.pipeline(transaction=False)
            for (user_id, after), end in zip(cursors, ends, strict=True):
                pipe.xrange(self.keys.history(user_id), _lower(after), end or "+")
            replies: list[Any] = await pipe.execute()
            return [await self._inputs(reply) for reply in replies]

    async def _inputs(self, entries: Any) -> list[tuple[str, Input]]:
        """A page of a user's history decoded; none for an erased user (replays skip them)."""
        try:
            opened = await self._open_all(fields for _, fields in entries)
        except KeyDestroyed:
            return []
        return [(text(p), _as_input(f)) for (p, _), f in zip(entries, opened, strict=True)]

    async def _open_all(self, entries: Iterable[Mapping[Any, Any]]) -> list[Mapping[Any, Any]]:
        """Entries opened (raises KeyDestroyed, Unreadable); as they are with no data keys."""
        todo = list(entries)
        if self.data_keys is None or not any(sealing.is_sealed(f) for f in todo):
            return todo
        return await self.data_keys.open_all(todo)

    async def prescriptions(
        self, user_id: str, after: str = START
    ) -> list[tuple[str, PrescriptionChanged]]:
        """A user's prescription changes after ``after`` (exclusive), oldest first."""
        with _guard():
            entries: Any = await self.redis.xrange(self.keys.rx(user_id), _lower(after), "+")
            opened = await self._open_all(fields for _, fields in entries)
        return [(text(p), _as_change(f)) for (p, _), f in zip(entries, opened, strict=True)]

    async def latest_prescription(self, user_id: str) -> PrescriptionChanged | None:
        """The user's newest PrescriptionChanged, or None."""
        with _guard():
            entries: Any = await self.redis.xrevrange(self.keys.rx(user_id), "+", "-", 1)
            opened = await self._open_all(fields for _, fields in entries)
        return _as_change(opened[0]) if opened else None

    async def clinic_of(self, user_id: str) -> str | None:
        """The clinic the user is enrolled with now, or None."""
        with _guard():
            value = await self.redis.get(self.keys.clinic(user_id))
        return None if value is None else text(value)

    async def enrol(self, user_id: str, clinic_id: str, by: str) -> Enrolment:
        """Set the user's clinic and record it (``shared.enrolments``), atomically."""
        with _guard():
            return await self._enrolments.enrol(user_id, clinic_id, by, datetime.now(UTC))

    async def unenrol(self, user_id: str, clinic_id: str | None, by: str) -> Enrolment | None:
        """Delete the user's clinic if ``clinic_id`` (None: any) holds them, and record it."""
        with _guard():
            return await self._enrolments.unenrol(user_id, clinic_id, by, datetime.now(UTC))

    async def enrolments(self, user_id: str) -> list[Enrolment]:
        """The user's enrolment records, oldest first."""
        with _guard():
            return await self._enrolments.of(user_id)

    async def load_snapshot(self, user_id: str) -> Snapshot | None:
        """The user's snapshot, or None. Staleness is the reader's call."""
        with _guard():
            raw = await self.redis.hgetall(self.keys.snapshot(user_id))
        if not raw:
            return None
        got = {text(k): v for k, v in raw.items()}
        if got.get(sealing.MARKER):
            if self.data_keys is None:
                return None  # sealed, and nothing here opens it: rebuilt from history instead
            [opened] = await self.data_keys.open_many([snapshot_envelope(user_id, got)])
            if isinstance(opened, Exception):
                return None  # erased, or damaged: a snapshot is only ever a shortcut
            got["data"] = opened["data"]
        data = got["data"]
        return Snapshot(
            data=data.encode() if isinstance(data, str) else bytes(data),
            position=text(got["position"]),
            rules_version=text(got["rules_version"]),
            state_version=int(got["state_version"]),
        )


__all__ = ["APPEND_LUA", "RedisStore", "connect", "is_cluster_url", "node_url", "ping"]

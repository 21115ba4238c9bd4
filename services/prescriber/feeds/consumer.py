"""Partition feed batches -> Processor, acknowledged only when their users are done.

One consumer group (``prescriber``) reads every partition feed; a partition
is read by the one instance holding its lease (``ownership``), one batch at a
time (``reader``), so a user's events are never processed twice at once
(invariant 4). Entries are acknowledged only after their users' changes are
stored; an entry whose user failed stays pending for the reclaimer, which
retries it and dead-letters it after ``max_deliveries`` attempts (invariant
7). An entry that cannot be read, or whose user hit a version gap, is
dead-lettered at once: retrying cannot mend it. An entry of an erased user
(an erasure record, ``shared.erasure``) is acknowledged unprocessed: nothing
of theirs is written again.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from pydantic import ValidationError
from redis.asyncio import Redis

from services.prescriber.processing.histories import Fed
from services.prescriber.processing.processor import Processor
from shared import codec
from shared.data_keys import DataKeys, KeyDestroyed, Opened
from shared.dead_letters import dead_letter, reason
from shared.events import Input, PrescriptionChanged
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.store import VersionGapError
from shared.streams import text

log = structlog.get_logger(__name__)

GROUP = PRESCRIBER_GROUP
Entry = tuple[bytes, Mapping[Any, Any]]
#: an entry waiting on whether its user was erased
Parked = tuple[bytes, Mapping[Any, Any]]


def _readable(fields: Mapping[Any, Any]) -> tuple[Input | None, str]:
    """The entry's event if it holds a valid input event for its user, else None and why.

    Decoding the whole event here (not just its user) is what sends poison to
    the dead letters at once; the processor then folds this decode.
    """
    user = fields.get(b"user_id", fields.get("user_id"))
    if user is None:
        return None, "feed entry has no user_id"
    try:
        event = codec.from_fields(fields)
    except ValidationError as exc:  # what is wrong, never the values (they are health data)
        wrong = "; ".join(f"{e['loc']}: {e['msg']}" for e in exc.errors(include_input=False))
        return None, f"unreadable feed entry: {wrong[:500]}"
    except ValueError as exc:  # DecodeError
        return None, f"unreadable feed entry: {str(exc)[:500]}"
    if isinstance(event, PrescriptionChanged):
        return None, f"feed entry holds a {event.type}, not an input event"
    if event.user_id != text(user):
        return None, "feed entry user_id does not match its event"
    return event, ""


def _position(fields: Mapping[Any, Any], name: bytes) -> str | None:
    """A history position the feed entry names (``pos`` or ``prev``), or None."""
    value = fields.get(name, fields.get(name.decode()))
    if value is None:
        return None
    position = text(value)
    return position if _STREAM_ID.fullmatch(position) else None


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


class FeedConsumer:
    """Turns batches of feed entries into processed users and acks."""

    def __init__(
        self,
        redis: Redis,
        processor: Processor,
        keys: Keys,
        max_deliveries: int = 5,
        data_keys: DataKeys | None = None,
    ) -> None:
        self.redis = redis
        #: opens sealed entries (None: the feed holds plaintext only)
        self.data_keys = data_keys
        self.processor = processor
        self.keys = keys
        self.max_deliveries = max_deliveries
        self._locks = [asyncio.Lock() for _ in range(keys.partitions)]

    async def handle(
        self, partition: int, entries: Sequence[Entry], *, ack: bool = True
    ) -> list[bytes]:
        """Process a batch; dead-letter what cannot be read; return the ids that are done.

        The done ids are acknowledged here, unless ``ack`` is false: then the
        caller must (the feed reader sends them with its next read).
        """
        feed = self.keys.feed(partition)
        done, by_user, fed, keyless = await self._sort(feed, entries)
        erased = set(await self._erased({**by_user, **keyless}))  # one round trip
        done += await self._keyless(feed, keyless, erased)
        for user_id in erased & by_user.keys():
            done += by_user.pop(user_id)
            fed.pop(user_id, None)
        async with self._locks[partition]:
            failed = await self.processor.process_batch(list(by_user), fed)
            done += await self._settle(feed, entries, by_user, failed)
        if done and ack:
            await self.redis.xack(feed, GROUP, *done)
        return done

    async def _sort(
        self, feed: str, entries: Sequence[Entry]
    ) -> tuple[list[bytes], dict[str, list[bytes]], dict[str, list[Fed]], dict[str, list[Parked]]]:
        """Dead-letter the unreadable entries (done); group the others' ids and events by user,
        and the entries whose user has no data key (erased, or not) apart."""
        done: list[bytes] = []
        by_user: dict[str, list[bytes]] = {}
        fed: dict[str, list[Fed]] = {}
        keyless: dict[str, list[Parked]] = {}
        opened = await self._open([fields for _, fields in entries])
        for (entry_id, fields), plain in zip(entries, opened, strict=True):
            if isinstance(plain, KeyDestroyed):  # erased, if the record says so (below)
                keyless.setdefault(plain.user_id, []).append((entry_id, fields))
                continue
            event, error = (None, str(plain)) if isinstance(plain, Exception) else _readable(plain)
            if event is None:
                await self.dead_letter(feed, entry_id, fields, error)
                done.append(entry_id)
                continue
            by_user.setdefault(event.user_id, []).append(entry_id)
            item = Fed(event, _position(fields, b"pos"), _position(fields, b"prev"))
            fed.setdefault(event.user_id, []).append(item)
        return done, by_user, fed, keyless

    async def _keyless(
        self, feed: str, keyless: Mapping[str, list[Parked]], erased: set[str]
    ) -> list[bytes]:
        """Entries whose user has no data key: skipped if the user was erased, else parked
        (sealed, and no key stored: that never mends by itself). All are done."""
        done: list[bytes] = []
        for user_id, parked in keyless.items():
            for entry_id, fields in parked:
                if user_id in erased:  # the patient was erased: nothing to do
                    log.info("erased_user_skipped", stream=feed, entry_id=text(entry_id))
                else:
                    await self.dead_letter(feed, entry_id, fields, "no data key for the user")
                done.append(entry_id)
        return done

    async def _open(self, entries: list[Mapping[Any, Any]]) -> list[Opened]:
        if self.data_keys is None:
            return list(entries)
        return await self.data_keys.open_many(entries)

    async def _erased(self, users: Mapping[str, object]) -> list[str]:
        """The users among ``users`` with an erasure record (one round trip)."""
        if not users:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for user_id in users:
            pipe.exists(self.keys.erased(user_id))
        found = await pipe.execute()
        return [user for user, erased in zip(users, found, strict=True) if erased]

    async def _settle(
        self,
        feed: str,
        entries: Sequence[Entry],
        by_user: Mapping[str, list[bytes]],
        failed: Mapping[str, Exception],
    ) -> list[bytes]:
        """The ids that are done: their user's batch succeeded, or it hit a version gap
        (retrying cannot mend that: the entries are parked now). A user that failed
        otherwise leaves its entries pending for the reclaimer."""
        done: list[bytes] = []
        for user_id, ids in by_user.items():
            exc = failed.get(user_id)
            if isinstance(exc, VersionGapError):
                log.error("version_gap", user_id=user_id, reason=str(exc))
                entries_of = dict(entries)
                for entry_id in ids:
                    await self.dead_letter(feed, entry_id, entries_of[entry_id], repr(exc))
                done.extend(ids)
            elif exc is not None:
                log.warning("user_failed", user_id=user_id, error=type(exc).__name__)
            else:
                done.extend(ids)
        return done

    async def dead_letter(
        self, stream: str, entry_id: bytes, fields: Mapping[Any, Any], error: str
    ) -> None:
        """Park an entry in the dead-letter stream with its error (never trimmed)."""
        await self.redis.xadd(self.keys.dlq, dead_letter(stream, entry_id, GROUP, error, fields))
        log.warning("dead_lettered", stream=stream, entry_id=text(entry_id), reason=reason(error))

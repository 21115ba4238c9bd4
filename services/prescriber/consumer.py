"""Partition feed batches -> Processor, acknowledged only when their users are done.

One consumer group (``prescriber``) reads every partition feed; a partition
is read by the one instance holding its lease (``ownership``), one batch at a
time, so a user's events are never processed twice at once (invariant 4).
FastStream subscribers cannot be gated by a lease before every batch, so the
owner's read loop is plain XREADGROUP; FastStream runs the channels. Entries are
acknowledged only after their users' changes are stored (MANUAL ack); an
entry whose user failed stays pending for the reclaimer, which retries it and
dead-letters it after ``max_deliveries`` attempts (invariant 7).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.prescriber.processor import Fed, Processor
from shared import codec
from shared.events import Input, PrescriptionChanged
from shared.keys import Keys
from shared.store import VersionGapError

log = structlog.get_logger(__name__)

GROUP = "prescriber"
Entry = tuple[bytes, Mapping[Any, Any]]


async def ensure_groups(redis: Redis, streams: Sequence[str], group: str) -> None:
    """Create ``group`` on each stream at its beginning, if it does not exist yet.

    FastStream would create a missing group at ``$`` (only new entries), which
    would skip everything appended before a consumer first started. Created
    here first, the group starts at ``0`` and FastStream finds it existing.
    """
    for stream in streams:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


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
    except ValueError as exc:  # DecodeError and pydantic's ValidationError
        return None, f"unreadable feed entry: {str(exc)[:500]}"
    if isinstance(event, PrescriptionChanged):
        return None, f"feed entry holds a {event.type}, not an input event"
    if event.user_id != _text(user):
        return None, "feed entry user_id does not match its event"
    return event, ""


def _position(fields: Mapping[Any, Any], name: bytes) -> str | None:
    """A history position the feed entry names (``pos`` or ``prev``), or None."""
    value = fields.get(name, fields.get(name.decode()))
    if value is None:
        return None
    text = _text(value)
    return text if _STREAM_ID.fullmatch(text) else None


_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FeedConsumer:
    """Turns batches of feed entries into processed users and acks."""

    def __init__(
        self,
        redis: Redis,
        processor: Processor,
        keys: Keys,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
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
        done: list[bytes] = []
        by_user: dict[str, list[bytes]] = {}
        fed: dict[str, list[Fed]] = {}
        for entry_id, fields in entries:
            event, error = _readable(fields)
            if event is None:
                await self.dead_letter(feed, entry_id, fields, error)
                done.append(entry_id)
                continue
            by_user.setdefault(event.user_id, []).append(entry_id)
            item = Fed(event, _position(fields, b"pos"), _position(fields, b"prev"))
            fed.setdefault(event.user_id, []).append(item)
        async with self._locks[partition]:
            failed = await self.processor.process_batch(list(by_user), fed)
            for user_id, ids in by_user.items():
                exc = failed.get(user_id)
                if isinstance(exc, VersionGapError):  # retrying cannot mend it: park it now
                    log.error("version_gap", user_id=user_id, reason=str(exc))
                    entries_of = dict(entries)
                    for entry_id in ids:
                        await self.dead_letter(feed, entry_id, entries_of[entry_id], repr(exc))
                    done.extend(ids)
                elif exc is not None:
                    log.warning("user_failed", user_id=user_id, error=type(exc).__name__)
                else:
                    done.extend(ids)
        if done and ack:
            await self.redis.xack(feed, GROUP, *done)
        return done

    async def dead_letter(
        self, stream: str, entry_id: bytes, fields: Mapping[Any, Any], error: str
    ) -> None:
        """Park an entry in the dead-letter stream with its error (never trimmed)."""
        record: dict[Any, Any] = {
            "stream": stream,
            "entry_id": entry_id,
            "group": GROUP,
            "error": error[:2000],
        }
        for key, value in fields.items():
            record[b"f:" + (key if isinstance(key, bytes) else key.encode())] = value
        await self.redis.xadd(self.keys.dlq, record)
        # the reason stays in the dead letter; its text may quote event values
        reason = error.split(":", 1)[0]
        log.warning("dead_lettered", stream=stream, entry_id=_text(entry_id), reason=reason)

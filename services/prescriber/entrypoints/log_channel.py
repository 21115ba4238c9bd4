"""The log channel: one structured line per PrescriptionChanged on the rx feeds.

FastStream batch subscribers (one per partition rx feed) in their own
consumer group, ``channel-log``, so the log channel and the webhook channel
never hold each other up. A line holds ids and the version: the prescription
itself (phase, change, exercises) is health data, kept sealed in Redis, and
stays out of logs, as scores and notes do.
"""

from __future__ import annotations

from typing import Any

import structlog
from faststream import AckPolicy
from faststream.redis import RedisBroker, RedisStreamMessage, StreamSub

from shared import codec
from shared.broker import raw_entries
from shared.data_keys import DataKeys, KeyDestroyed
from shared.events import PrescriptionChanged
from shared.keys import Keys

log = structlog.get_logger("backtrack.channel.log")

LOG_GROUP = "channel-log"


def subscribe_log_channel(
    broker: RedisBroker, keys: Keys, consumer: str, data_keys: DataKeys | None = None
) -> None:
    """One batch subscriber per rx feed that logs each change, then acks; ``data_keys``
    open sealed entries (None: the feeds hold plaintext only)."""
    for partition in range(keys.partitions):
        sub = StreamSub(
            keys.rxfeed(partition),
            group=LOG_GROUP,
            consumer=consumer,
            batch=True,
            max_records=200,
            polling_interval=100,
        )
        broker.subscriber(stream=sub, ack_policy=AckPolicy.MANUAL, parser=raw_entries)(
            _log_handler(partition, data_keys)
        )


def _log_handler(partition: int, data_keys: DataKeys | None) -> Any:
    # FastStream reads every handler parameter it does not know as a body
    # field, so the partition is bound by this closure, not a default argument.
    async def on_changes(body: list[Any], msg: RedisStreamMessage) -> None:
        raw: Any = msg.raw_message
        entries = list(raw["data"])
        for opened in await data_keys.open_many(entries) if data_keys else entries:
            if isinstance(opened, KeyDestroyed):
                continue  # an erased patient's change: nothing to say
            if isinstance(opened, Exception):
                log.warning("unreadable_change", error=type(opened).__name__)
                continue
            log_change(opened)
        await msg.ack()

    on_changes.__name__ = f"log_changes_p{partition:02d}"
    return on_changes


def log_change(fields: Any) -> None:
    """The log channel's one line for one opened rx feed entry (ids and version)."""
    try:
        change = codec.from_fields(fields)
    except ValueError as exc:
        log.warning("unreadable_change", error=type(exc).__name__)
        return
    if isinstance(change, PrescriptionChanged):
        log.info(
            "prescription_changed",
            event_id=str(change.event_id),
            user_id=change.user_id,
            version=change.version,
            caused_by=str(change.caused_by),
        )

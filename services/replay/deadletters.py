"""Dead letters: list, inspect, retry and drop entries of ``bt:dlq``.

A dead letter (``shared.dead_letters``: the prescriber's feed consumer and
the webhook dispatcher write the same shape) holds ``stream``, ``entry_id``,
``group``, ``error`` and a copy of each original field as ``f:<field>``.

- retry: a feed letter (``stream`` is a Redis stream) is appended again to
  that stream with its original fields, so the consumer group reads it as
  new; a webhook letter (``subscription`` set) is queued again for that one
  subscription through the channels' own queue API.
- drop: nothing is re-sent.

Either way the letter is first copied, with what was done and when, to
``bt:dlq:resolved``, and only then removed from ``bt:dlq`` (XDEL). The
dead-letter stream is a work queue, not an event history, so invariant 5
(never trim a history) does not bind it; the resolved stream keeps the
audit trail that deleting would otherwise lose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from shared.dead_letters import originals, split
from shared.keys import DLQ
from shared.streams import text

RESOLVED = f"{DLQ}:resolved"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: its id in the DLQ, metadata, and the original fields."""

    letter_id: str
    meta: dict[str, str]
    fields: dict[bytes, bytes]

    @property
    def error(self) -> str:
        return self.meta.get("error", "")


def _letter(letter_id: Any, raw: Any) -> DeadLetter:
    meta, fields = split(raw)
    return DeadLetter(text(letter_id), meta, fields)


async def list_letters(redis: Redis, count: int = 100, after: str = "-") -> list[DeadLetter]:
    """Dead letters oldest first, ``count`` at most, after ``after`` (exclusive)."""
    low = after if after == "-" else f"({after}"
    raw: Any = await redis.xrange(DLQ, low, "+", count=count)
    return [_letter(i, f) for i, f in raw]


async def show(redis: Redis, letter_id: str) -> DeadLetter | None:
    raw: Any = await redis.xrange(DLQ, letter_id, letter_id)
    return _letter(*raw[0]) if raw else None


async def _resolve(redis: Redis, letter: DeadLetter, action: str, result: str) -> None:
    record: dict[Any, Any] = {"letter_id": letter.letter_id, "action": action, "result": result}
    record["resolved_at_ms"] = int(time.time() * 1000)
    record |= letter.meta
    record |= originals(letter.fields)
    await redis.xadd(RESOLVED, record)
    await redis.xdel(DLQ, letter.letter_id)


async def retry(redis: Redis, letter_id: str) -> str | None:
    """Send a dead letter back where it came from; returns where, or None if not found."""
    letter = await show(redis, letter_id)
    if letter is None:
        return None
    subscription = letter.meta.get("subscription")
    if subscription:
        from services.replay.redeliver import requeue  # noqa: PLC0415

        await requeue(redis, subscription, [letter.fields[b"data"]], force=True)
        result = f"queued for subscription {subscription}"
    else:
        stream = letter.meta["stream"]
        new_id = await redis.xadd(stream, dict(letter.fields))  # type: ignore[arg-type]
        result = f"{stream} {text(new_id)}"
    await _resolve(redis, letter, "retried", result)
    return result


async def drop(redis: Redis, letter_id: str) -> bool:
    """Resolve a dead letter without sending it again; False if not found."""
    letter = await show(redis, letter_id)
    if letter is None:
        return False
    await _resolve(redis, letter, "dropped", "")
    return True


__all__ = ["RESOLVED", "DeadLetter", "drop", "list_letters", "retry", "show"]

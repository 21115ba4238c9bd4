"""Redis Streams conventions shared by every reader and writer: ids, text, consumer groups.

Stream ids are ``<ms>-<seq>``; ``START`` (``0-0``) sorts before every entry,
so "after START" means "from the beginning". redis-py answers bytes or str
depending on how a client was made; ``text`` reads either.
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

#: the id before every stream entry: a position that has folded nothing yet
START = "0-0"
#: the spellings of "before the first entry" that callers use for a position
_BEFORE_ALL = frozenset(("", "-", "0", START))


def text(value: bytes | str) -> str:
    """A Redis reply as text, whether the client decoded it or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_start(position: str) -> bool:
    """True if ``position`` is before every entry (nothing read yet)."""
    return position in _BEFORE_ALL


def position_key(position: str) -> tuple[int, int]:
    """A stream id as a pair that sorts the way Redis orders entries."""
    ms, _, seq = position.partition("-")
    return int(ms), int(seq or 0)


async def ensure_groups(redis: Redis | RedisCluster, streams: Iterable[str], group: str) -> None:
    """Create ``group`` on each stream at its beginning, if it does not exist yet.

    FastStream would create a missing group at ``$`` (only new entries), which
    would skip everything appended before a consumer first started. Created
    here first, the group starts at ``0`` and FastStream finds it existing.
    Idempotent: an existing group (BUSYGROUP) is left as it is.
    """
    for stream in streams:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


__all__ = ["START", "ensure_groups", "is_start", "position_key", "text"]

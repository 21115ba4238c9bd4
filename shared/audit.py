"""The audit log: who read a patient's data, what and when (invariant 10); never health data.

One stream per partition, ``bt:{pNN}:audit`` (the read user's partition), so
an entry sits in the slot of the user it is about (an erasure finds it
there) and the appends spread over the partitions like the users do. An
entry's fields are exactly ``AuditLog.FIELDS``:

- ``role``: ``clinic``, ``operator`` or ``device`` (a device refused another user);
- ``by``: the clinic id; an operator token's ``jti``; ``cli:<OS user>`` for
  the operator CLI (it holds no token); a device's user id;
- ``what``: ``GET /v1/users/{user_id}/prescription`` (the route, never its
  query or body), ``export``, ``history``; an erasure (``DELETE
  /v1/users/{user_id}``, ``erase``) is recorded the same way;
- ``user_id``: whose data;
- ``outcome``: ``allowed`` (the read went ahead) or ``refused`` (403:
  probing shows up too).

When is the entry's id (the Redis server's clock, milliseconds). A patient's
own device reading its own user is the patient, not a third party: not
recorded (``concerns``). Entries are appended only; each append also trims
its stream to ``retention_days`` by id (``MINID ~``, whole macro nodes, so
it costs next to nothing and may keep a little more than the window).
Redis unreachable is ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import getpass
import heapq
import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.auth import Principal
from shared.keys import Keys
from shared.store import StoreUnavailable
from shared.streams import position_key, text

Outcome = Literal["allowed", "refused"]
DAY_MS: Final = 86_400_000
#: entries read per XRANGE while listing
PAGE: Final = 1000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded read: ``position`` is its stream id, ``at`` the time in that id."""

    position: str
    at: datetime
    role: str
    by: str
    what: str
    user_id: str
    outcome: str

    def public(self) -> dict[str, str]:
        """The entry as JSON-ready text, ``at`` in RFC 3339."""
        return {
            "at": self.at.isoformat(timespec="milliseconds"),
            "role": self.role,
            "by": self.by,
            "what": self.what,
            "user_id": self.user_id,
            "outcome": self.outcome,
            "position": self.position,
        }


def concerns(principal: Principal, user_id: str) -> bool:
    """Whether a read of ``user_id`` by ``principal`` is audited: all but the patient's own."""
    return not (principal.role == "device" and principal.subject == user_id)


def reader(principal: Principal) -> str:
    """``by`` for a token: the clinic's or device's subject, an operator token's ``jti``."""
    if principal.role == "operator":
        return principal.jti or ""
    return principal.subject or ""


def cli_reader() -> str:
    """``by`` for the operator CLI (no token): ``cli:<OS user>``, or ``cli`` if none is known."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "cli"


@contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"audit log unavailable: {type(exc).__name__}") from exc


def _entry(position: Any, fields: dict[Any, Any]) -> AuditEntry:
    got = {text(k): text(v) for k, v in fields.items()}
    pos = text(position)
    at = datetime.fromtimestamp(position_key(pos)[0] / 1000, UTC)
    return AuditEntry(pos, at, got["role"], got["by"], got["what"], got["user_id"], got["outcome"])


class AuditLog:
    """Appends and lists audit entries on one Redis (or Cluster); unreachable: StoreUnavailable."""

    FIELDS: Final = ("role", "by", "what", "user_id", "outcome")

    def __init__(self, redis: Redis, keys: Keys, retention_days: int) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.redis = redis
        self.keys = keys
        self.retention_ms = retention_days * DAY_MS

    async def record(
        self, role: str, by: str, what: str, user_id: str, outcome: Outcome = "allowed"
    ) -> str:
        """Append one entry to the user's partition stream, trimming it by age; its id."""
        values = (role, by, what, user_id, outcome)
        fields: dict[Any, Any] = dict(zip(self.FIELDS, values, strict=True))
        oldest = max(0, int(time.time() * 1000) - self.retention_ms)
        with _reachable():
            position = await self.redis.xadd(
                self.keys.audit(user_id), fields, minid=oldest, approximate=True
            )
        return text(position)

    async def read_by(self, principal: Principal, what: str, user_id: str, read: Awaitable[T]) -> T:
        """Await ``read`` (of ``user_id``'s data, already authorised) with its entry.

        The append goes concurrently with the read, so it adds no round trip;
        if either fails this raises and the caller answers nothing read.
        """
        result, _ = await asyncio.gather(read, self.allowed(principal, what, user_id))
        return result

    async def allowed(self, principal: Principal, what: str, user_id: str) -> None:
        """Record a read of ``user_id`` by ``principal`` that goes ahead (unless ``concerns``
        says it is the patient's own)."""
        if concerns(principal, user_id):
            await self.record(principal.role, reader(principal), what, user_id)

    async def refused(self, principal: Principal, what: str, user_id: str) -> None:
        """Record a read of ``user_id`` refused to ``principal`` (403; not the patient's own)."""
        if concerns(principal, user_id):
            await self.record(principal.role, reader(principal), what, user_id, "refused")

    async def entries(self, user_id: str | None = None, since_ms: int = 0) -> list[AuditEntry]:
        """Entries (of ``user_id`` only, if given) from ``since_ms`` on, oldest first."""
        streams = [self.keys.audit(user_id)] if user_id else self.keys.audits()
        with _reachable():
            found = await asyncio.gather(*(self._read(key, since_ms) for key in streams))
        merged = heapq.merge(*found, key=lambda e: position_key(e.position))
        return [e for e in merged if user_id is None or e.user_id == user_id]

    async def _read(self, key: str, since_ms: int) -> list[AuditEntry]:
        got: list[AuditEntry] = []
        lower = f"{since_ms}-0"
        while True:
            page: Any = await self.redis.xrange(key, lower, "+", PAGE)
            got.extend(_entry(position, fields) for position, fields in page)
            if len(page) < PAGE:
                return got
            lower = "(" + text(page[-1][0])


__all__ = ["AuditEntry", "AuditLog", "Outcome", "cli_reader", "concerns", "reader"]

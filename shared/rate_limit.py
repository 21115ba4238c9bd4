"""Per-token rate limits: a token bucket per token in Redis, taken by one atomic script.

A bucket holds up to ``burst`` tokens and refills at ``per_second``. The
ingest takes one token per event (a batch of n takes n, or nothing: the
whole request is refused when the bucket holds fewer than n); the clinic and
channels APIs take one per request. Buckets are per token (its ``jti``) and
per scope (``ingest`` counts events, ``api`` requests), with limits per role
(``RateLimits``), at ``bt:rate:<scope>:<jti>``; ``token_bucket.lua`` does the
arithmetic on Redis's clock, so every process and worker shares one count,
and lets a bucket's key expire once it would be full again.

A refused request gets ``RateLimited`` with ``retry_after``: whole seconds,
rounded up, until the bucket holds what it asked for. A bucket only refills
with time (other processes only take from it), so what Redis last said it
held, plus the refill since, is an upper bound: this process refuses a
request above that bound without asking Redis again, so a flood from one
token costs a round trip per refill rather than one per request. A Redis
failure is ``StoreUnavailable`` (callers answer 503), never a silent pass.

The other way round, a process may take up to ``ahead_seconds`` of a role's
refill ahead of a token's requests and spend it without asking Redis: an
operator's import or a benchmark posting single events costs a round trip
per thousand of them, not per event. Tokens taken ahead are gone from the
bucket (so nothing is ever let through beyond it); those a process does not
spend are lost when it stops, and refill. For devices and clinics that share
is under one or about one token, so their count stays exact or nearly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from hashlib import sha1
from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from shared.auth import Principal, Role
from shared.keys import PREFIX
from shared.store import StoreUnavailable

BUCKET_LUA = files("shared").joinpath("token_bucket.lua").read_text(encoding="utf-8")
BUCKET_SHA = sha1(BUCKET_LUA.encode(), usedforsecurity=False).hexdigest()
#: Buckets this process remembers the last answer of (those refilled by now go first).
REMEMBERED = 10_000


class Rate(BaseModel):
    """A token bucket's shape: refills at ``per_second``, holds at most ``burst``."""

    model_config = ConfigDict(frozen=True)
    per_second: float = Field(gt=0)
    burst: int = Field(ge=1)


class RateLimits(BaseSettings):
    """Limits per role: ``BACKTRACK_RATE_<SCOPE>_<ROLE>='{"per_second": 5, "burst": 1000}'``.

    ``ingest_*`` count events, ``api_*`` requests (clinic and channels APIs).
    A phone syncing a month offline (a few hundred events, in batches) fits a
    device's burst; a clinic dashboard reading a few hundred patients fits a
    clinic's; operators (the demo, imports, benchmarks) get far more, but not
    unlimited: a runaway script with an operator token still meets a ceiling.
    """

    model_config = SettingsConfigDict(env_prefix="BACKTRACK_RATE_", frozen=True)

    ingest_device: Rate = Rate(per_second=5, burst=1_000)
    ingest_clinic: Rate = Rate(per_second=20, burst=2_000)
    ingest_operator: Rate = Rate(per_second=20_000, burst=200_000)
    api_device: Rate = Rate(per_second=20, burst=200)
    api_clinic: Rate = Rate(per_second=50, burst=1_000)
    api_operator: Rate = Rate(per_second=500, burst=5_000)
    #: how much of a role's refill a process may take ahead (whole tokens only)
    ahead_seconds: float = Field(default=0.05, ge=0, le=1)

    def ingest(self) -> dict[Role, Rate]:
        """Events per role."""
        return {
            "device": self.ingest_device,
            "clinic": self.ingest_clinic,
            "operator": self.ingest_operator,
        }

    def api(self) -> dict[Role, Rate]:
        """Requests per role."""
        return {"device": self.api_device, "clinic": self.api_clinic, "operator": self.api_operator}

    def buckets(self, redis: Redis, scope: Literal["ingest", "api"]) -> TokenBuckets:
        """A process's buckets of ``scope``: events (ingest) or requests (api) per token."""
        rates = self.ingest() if scope == "ingest" else self.api()
        return TokenBuckets(redis, scope, rates, self.ahead_seconds)


class RateLimited(Exception):  # noqa: N818 - names the answer (429), not a failure
    """Over the token's rate limit: retry after ``retry_after`` whole seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Taken:
    """The script's answer: tokens taken, how long until they could be, the tokens left."""

    #: the cost and any tokens taken ahead; 0 when refused
    taken: int
    #: 0 when taken, else how long until the bucket holds the cost
    wait_ms: int
    #: tokens the bucket holds after this request, rounded down to thousandths
    left: float

    @property
    def ok(self) -> bool:
        return self.wait_ms == 0


def bucket_key(scope: str, principal: Principal) -> str:
    """``bt:rate:<scope>:<jti>`` (a token without a jti counts under its role and subject)."""
    who = principal.jti or f"{principal.role}.{principal.subject or '-'}"
    return f"{PREFIX}:rate:{scope}:{who}"


async def take(
    redis: Redis, key: str, rate: Rate, cost: int, *, ahead: int = 0, now_ms: int | None = None
) -> Taken:
    """Take ``cost`` tokens from the bucket at ``key`` if it holds them, and up to ``ahead`` more.

    ``now_ms`` (tests) stands in for Redis's clock.
    """
    when = "" if now_ms is None else now_ms
    args: list[Any] = [key, rate.per_second, rate.burst, cost, when, ahead]
    reply: Any
    try:
        try:
            reply = await redis.evalsha(BUCKET_SHA, 1, *args)
        except NoScriptError:
            await redis.script_load(BUCKET_LUA)
            reply = await redis.evalsha(BUCKET_SHA, 1, *args)
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"rate limit unavailable: {type(exc).__name__}: {exc}") from exc
    return Taken(int(reply[0]), int(reply[1]), int(reply[2]) / 1000)


class TokenBuckets:
    """The buckets of one scope (``ingest`` or ``api``), with ``rates`` per role."""

    def __init__(
        self, redis: Redis, scope: str, rates: dict[Role, Rate], ahead_seconds: float = 0.0
    ) -> None:
        self.redis = redis
        self.scope = scope
        self.rates = rates
        #: whole tokens taken ahead per role
        self.ahead = {role: int(rate.per_second * ahead_seconds) for role, rate in rates.items()}
        #: bucket key -> (at most this many tokens left, monotonic time the question was sent)
        self._last: dict[str, tuple[float, float]] = {}
        #: bucket key -> tokens this process took ahead and has not spent
        self._held: dict[str, int] = {}

    async def take(self, principal: Principal, cost: int = 1) -> None:
        """Take ``cost`` tokens from the principal's bucket, or raise RateLimited (taking none).

        Raises ValueError if ``cost`` exceeds the role's burst (it could never
        be taken) and StoreUnavailable when Redis cannot answer.
        """
        rate = self.rates[principal.role]
        if cost > rate.burst:
            raise ValueError(f"a cost of {cost} exceeds the {principal.role} burst {rate.burst}")
        key = bucket_key(self.scope, principal)
        held = self._held.get(key, 0)
        if held >= cost:
            self._held[key] = held - cost
            return
        asked = time.monotonic()
        most = self._most(key, rate, asked)
        if most < cost:
            raise RateLimited(_seconds((cost - most) / rate.per_second))
        answer = await take(self.redis, key, rate, cost, ahead=self.ahead[principal.role])
        self._remember(key, answer.left + 0.001, asked)  # left was rounded down
        if not answer.ok:
            raise RateLimited(_seconds(answer.wait_ms / 1000))
        if answer.taken > cost:
            self._hold(key, held + answer.taken - cost)

    def refuses(self, principal: Principal) -> int | None:
        """Retry-After if this process knows the principal's bucket lacks even one token."""
        rate = self.rates[principal.role]
        most = self._most(bucket_key(self.scope, principal), rate, time.monotonic())
        return _seconds((1 - most) / rate.per_second) if most < 1 else None

    def _most(self, key: str, rate: Rate, now: float) -> float:
        """The most tokens the bucket can hold now, from its last answer (its burst if none)."""
        last = self._last.get(key)
        if last is None:
            return rate.burst
        left, at = last
        return min(rate.burst, left + (now - at) * rate.per_second)

    def _hold(self, key: str, tokens: int) -> None:
        if len(self._held) >= REMEMBERED and key not in self._held:
            self._held.clear()  # tokens taken ahead and never spent simply refill
        self._held[key] = tokens

    def _remember(self, key: str, left: float, at: float) -> None:
        if len(self._last) >= REMEMBERED and key not in self._last:
            now = time.monotonic()
            full = max(rate.burst / rate.per_second for rate in self.rates.values())
            self._last = {k: v for k, v in self._last.items() if now - v[1] < full}
            if len(self._last) >= REMEMBERED:
                self._last.clear()
        self._last[key] = (left, at)


def _seconds(wait: float) -> int:
    """Retry-After: whole seconds, rounded up, at least one."""
    return max(1, math.ceil(wait))


__all__ = [
    "BUCKET_LUA",
    "Rate",
    "RateLimited",
    "RateLimits",
    "Taken",
    "TokenBuckets",
    "bucket_key",
    "take",
]

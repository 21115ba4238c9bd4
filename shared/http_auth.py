"""Bearer tokens over HTTP: the one auth dependency of every API (ingest, clinic, channels).

``Authorization: Bearer <token>`` becomes the ``auth.Principal`` it speaks
for, or a 401 whose ``WWW-Authenticate`` challenge says ``Bearer`` when no
token came and ``Bearer error="invalid_token"`` when a bad one did (RFC 6750);
a revoked token is a bad one. Each app checks tokens with one
``auth.Verifier`` (``verifier``) built from its ``state.settings`` (keys,
lifetimes), so a token already accepted costs a lookup. ``revocations_watched``,
run by each service's lifespan, gives that verifier the process's view of
``bt:revocations``, consulted on every call. While the view is stale a
request first asks the watcher to catch up at once; if Redis does not answer,
the token is answered 503 with ``Retry-After`` (fail closed,
``shared.revocations``).
Read scopes (invariant 9) are checked here too, on every request, and
reads of a patient by anyone but the patient are recorded in the app's
``state.audit`` (``shared.audit``, invariant 10): ``authorize_audited_read``
records a refusal, ``audited`` an allowed read. A read of an erased patient
(``shared.erasure``; the app's ``state.erasures``) that the scope allows
answers 404 ``user erased``: a clinic no longer holds an erased patient, so it
gets the 403 of any user outside its scope, and cannot tell an erased id from
one it never had.

An app that counts requests per token (the clinic and channels APIs) puts
its ``rate_limit.TokenBuckets`` in ``state.request_limits``: each
authenticated request then takes one token, and a token over its limit gets
429 with ``Retry-After`` (503 with ``Retry-After`` if Redis cannot say). The
ingest counts events instead, in its handlers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

from fastapi import FastAPI, HTTPException, Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import HTTPConnection

from shared import auth
from shared.audit import AuditLog
from shared.erasure import ErasureRecords
from shared.rate_limit import RateLimited, TokenBuckets
from shared.revocation_log import RevocationWatcher
from shared.revocations import Revocations, RevocationsStale
from shared.settings import Settings
from shared.store import EventStore, StoreUnavailable

RETRY_AFTER_SECONDS = 1
#: the 404 detail of a read of an erased patient
USER_ERASED = "user erased"
T = TypeVar("T")


def build_verifier(settings: Settings, revocations: Revocations | None = None) -> auth.Verifier:
    """A verifier with the settings' keys and lifetimes, asking ``revocations`` if given."""
    return auth.Verifier(
        settings.token_keys(), lifetimes=settings.token_lifetimes(), revocations=revocations
    )


def verifier(connection: HTTPConnection) -> auth.Verifier:
    """The app's one ``auth.Verifier`` (built on first use when no lifespan installed one)."""
    state = connection.app.state
    check: auth.Verifier | None = getattr(state, "verifier", None)
    if check is None:
        state.verifier = check = build_verifier(state.settings)
    return check


def authenticate(check: auth.Verifier, authorization: str | None) -> auth.Principal:
    """The principal of an ``Authorization`` header value, or HTTPException 401 (503: see above).

    Call it again with the same header to re-check a long-lived stream: a
    revoked token is refused from the moment the process's view knows.
    """
    try:
        return check(auth.from_header(authorization))
    except auth.InvalidToken as exc:
        challenge = "Bearer" if "missing" in str(exc) else 'Bearer error="invalid_token"'
        raise HTTPException(401, f"unauthorised: {exc}", {"WWW-Authenticate": challenge}) from None
    except RevocationsStale:
        raise HTTPException(
            503,
            "token revocations cannot be checked now; retry",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None


@asynccontextmanager
async def revocations_watched(app: FastAPI, redis: Redis) -> AsyncIterator[Revocations]:
    """While open, the app's verifier refuses tokens revoked in ``bt:revocations`` on ``redis``.

    Waits up to one blocking read (``revocation_block_ms``) for the view to
    catch up before it yields, so a service that starts with Redis up refuses
    nothing; with Redis down it starts anyway and answers 503 until it is back.
    """
    settings: Settings = app.state.settings
    view = Revocations(settings.revocation_stale_after)
    before = getattr(app.state, "verifier", None)
    watcher = RevocationWatcher(redis, view, settings.revocation_block_ms)
    app.state.verifier = build_verifier(settings, view)
    app.state.revocation_watcher = watcher
    try:
        async with watcher.running(wait=settings.revocation_block_ms / 1000):
            yield view
    finally:
        app.state.verifier, app.state.revocation_watcher = before, None


class BearerAuth(SecurityBase):
    """The dependency: documented as OpenAPI's HTTP bearer scheme, answering the Principal."""

    def __init__(self, description: str) -> None:
        self.model = HTTPBearerModel(description=description)
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> auth.Principal:
        # async: a sync dependency would cost a thread-pool hop per request
        principal = await _principal(request)
        buckets: TokenBuckets | None = getattr(request.app.state, "request_limits", None)
        if buckets is not None:
            await charge(buckets, principal)
        return principal


async def _principal(request: Request) -> auth.Principal:
    check, header = verifier(request), request.headers.get("authorization")
    try:
        return authenticate(check, header)
    except HTTPException as exc:
        watcher = getattr(request.app.state, "revocation_watcher", None)
        if exc.status_code != 503 or watcher is None:
            raise
    await watcher.catch_up()  # the view was stale: read now rather than at the next retry
    return authenticate(check, header)


async def charge(buckets: TokenBuckets, principal: auth.Principal, cost: int = 1) -> None:
    """Take ``cost`` from the principal's bucket; HTTPException 429 (or 503) if it cannot."""
    try:
        await buckets.take(principal, cost)
    except RateLimited as exc:
        raise HTTPException(429, str(exc), {"Retry-After": str(exc.retry_after)}) from None
    except StoreUnavailable:
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        raise HTTPException(503, "rate limits unavailable; retry", retry) from None


bearer = BearerAuth("A device, clinic or operator token (backtrack token).")
PrincipalDep = Annotated[auth.Principal, Security(bearer)]


async def authorize_read(
    user_id: str,
    principal: auth.Principal,
    store: EventStore,
    erasures: ErasureRecords | None = None,
) -> None:
    """Return if ``principal`` may read ``user_id`` now (``Principal.can_read``); 403 otherwise,
    and 404 (``USER_ERASED``) for an erased user the scope allows, when ``erasures`` is given.

    The user's clinic is read (from ``store``) for clinic tokens only. A user
    outside the scope is 403 whether or not they exist (or were erased), so
    tokens cannot probe for other clinics' patients.
    """
    clinic = await store.clinic_of(user_id) if principal.role == "clinic" else None
    if not principal.can_read(user_id, clinic):
        raise HTTPException(403, "this token may not read that user")
    if erasures is not None and await _erased(erasures, user_id):
        raise HTTPException(404, USER_ERASED)


async def _erased(erasures: ErasureRecords, user_id: str) -> bool:
    try:
        return await erasures.erased(user_id)
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"erasure records unavailable: {type(exc).__name__}") from exc


def erasures_of(connection: HTTPConnection) -> ErasureRecords | None:
    """The app's erasure records (wired by its composition root), if it has them."""
    records: ErasureRecords | None = getattr(connection.app.state, "erasures", None)
    return records


def route(request: Request) -> str:
    """What a request reads, for the audit log: method and route template, never values."""
    template = getattr(request.scope.get("route"), "path", request.url.path)
    return f"{request.method} {template}"


def audit_log(connection: HTTPConnection) -> AuditLog:
    """The app's audit log (wired by its composition root)."""
    log: AuditLog = connection.app.state.audit
    return log


async def authorize_audited_read(
    request: Request, user_id: str, principal: auth.Principal, store: EventStore
) -> None:
    """``authorize_read`` (erasures checked), recording a refusal in the audit log before
    the 403."""
    try:
        await authorize_read(user_id, principal, store, erasures_of(request))
    except HTTPException as exc:
        if exc.status_code == 403:
            await audit_log(request).refused(principal, route(request), user_id)
        raise


async def audited(
    request: Request, user_id: str, principal: auth.Principal, read: Awaitable[T]
) -> T:
    """Await ``read`` of ``user_id``'s data (authorised) with its entry (``AuditLog.read_by``)."""
    return await audit_log(request).read_by(principal, route(request), user_id, read)


__all__ = [
    "USER_ERASED",
    "BearerAuth",
    "PrincipalDep",
    "audit_log",
    "audited",
    "authenticate",
    "authorize_audited_read",
    "authorize_read",
    "bearer",
    "build_verifier",
    "charge",
    "erasures_of",
    "revocations_watched",
    "route",
    "verifier",
]

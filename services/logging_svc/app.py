"""The ingest API (DESIGN.md "Ingest API"): validate, authorise, append. Nothing else.

``create_app`` is the composition root: it wires settings, the event store,
metrics and the canonical request log, and connects nothing at import time
(the lifespan connects to Redis when no store is given). The two POSTs are
``DirectRoute``s: declared like any route, and that declaration is both what
``/openapi.json`` says and what serves them (``DirectRoutes`` hands their
requests straight to them, past FastAPI's per-request machinery). Tokens are
checked by ``shared.http_auth``, against the revocations the lifespan watches.

Invariant 1: 202 is sent only after ``append`` returned, i.e. Redis has the
event; any failure of the store is a 503 with ``Retry-After`` (appends are
idempotent by ``event_id``, so retrying is always safe), never a 500.
Invariant 2: dedupe is per user; a user's ``event_id`` sent again with another
payload is refused (409, or that item's error in a batch) and stores nothing.
Invariant 9: ``writers`` says who may write what (devices their own user,
clinics their users, each role only its event types; a device's RehabStarted
names no clinic or the one that enrolled it). The store is asked for a user's
clinic only when ``writers.needs_clinic`` says so, so a device's pain log stays
one round trip to the store. Only operators' writes may enrol a user (``enrols``).

Limits: ``shared.body_limit.BodyLimit`` refuses bodies over ``max_body_bytes``
(413) before anything reads them; each token's bucket (``shared.rate_limit``,
``RateLimits.ingest_*``) pays one token per event, taken before anything is
stored: a single event before its body is read, a batch of n once its items
are counted, all n or the whole request is 429 with ``Retry-After``. That is
one more Redis round trip per request. How far back an event may be dated
depends on the role (``IngestLimits``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.logging_svc import openapi
from services.logging_svc.direct_route import DirectRoute, DirectRoutes, read_body
from services.logging_svc.ingest import (
    CONFLICT,
    ERASED,
    Rejected,
    batch_items,
    parse_json,
    to_event,
)
from services.logging_svc.limits import IngestLimits, Window
from services.logging_svc.metrics import Metrics
from services.logging_svc.writers import Forbidden, admit, needs_clinic
from shared import auth
from shared.access_log import CanonicalLog
from shared.body_limit import BodyLimit
from shared.events import Input
from shared.http_auth import PrincipalDep, revocations_watched
from shared.rate_limit import RateLimited, RateLimits, TokenBuckets
from shared.settings import Settings
from shared.store import Appended, EventStore, StoreUnavailable

RETRY_AFTER_SECONDS = 1
_log = structlog.get_logger("backtrack.ingest")
router = APIRouter()


@dataclass
class Ingest:
    """What the handlers need, built by ``create_app`` and completed by the lifespan."""

    settings: Settings
    metrics: Metrics
    store: EventStore | None = None
    redis: Any = None
    limits: IngestLimits = field(default_factory=IngestLimits)
    rates: RateLimits = field(default_factory=RateLimits)
    #: events per token; None without a Redis client (an in-memory store counts nothing)
    buckets: TokenBuckets | None = None

    def event(self, raw: Any, window: Window, prefix: tuple[str | int, ...] = ("body",)) -> Input:
        """A valid input event dated within the ingest ``window``, or Rejected."""
        event = to_event(raw, prefix)
        window.check(event, prefix)
        return event

    def window(self, role: auth.Role) -> Window:
        """The ingest window for ``role`` around the server clock now."""
        return Window.around(datetime.now(UTC), self.limits, role)


def _ingest(request: Request) -> Ingest:
    ingest: Ingest = request.app.state.ingest
    return ingest


IngestDep = Annotated[Ingest, Depends(_ingest)]


def _unavailable(ingest: Ingest, exc: Exception, count: int) -> HTTPException:
    """The 503 for a failed store call; ``count`` events were not stored."""
    if isinstance(exc, StoreUnavailable):
        _log.warning("store_unavailable", error=str(exc), count=count)
    else:
        # Unexpected, but retrying is still safe (idempotent appends): 503, never 500.
        _log.error("store_failed", error=type(exc).__name__, count=count, exc_info=exc)
    ingest.metrics.count("unavailable", count)
    return HTTPException(
        503,
        "event store unavailable; retry (appends are idempotent by event_id)",
        {"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _rate_limited(ingest: Ingest, retry_after: int, count: int) -> HTTPException:
    """The 429 for a token over its limit; ``count`` events were not stored."""
    ingest.metrics.count("rate_limited", count)
    return HTTPException(
        429,
        f"rate limit exceeded for this token; retry after {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


async def _take(ingest: Ingest, principal: auth.Principal, count: int) -> None:
    """Take ``count`` events from the token's bucket, or raise 429 (or 503) storing nothing."""
    if ingest.buckets is None or count == 0:
        return
    try:
        await ingest.buckets.take(principal, count)
    except RateLimited as exc:
        raise _rate_limited(ingest, exc.retry_after, count) from None
    except Exception as exc:
        raise _unavailable(ingest, exc, count) from None


async def _append(
    ingest: Ingest, events: Sequence[Input], principal: auth.Principal
) -> list[Appended]:
    assert ingest.store is not None, "the lifespan sets the store"
    try:
        # a device names only the clinic that enrolled it: its writes never enrol
        return await ingest.store.append_many(events, enrols=principal.role == "operator")
    except Exception as exc:
        raise _unavailable(ingest, exc, len(events)) from None


async def _clinic(
    ingest: Ingest, user_id: str, known: dict[str, str | None], count: int
) -> str | None:
    """The user's clinic, read once per request (``known``); a failing read is a 503."""
    if user_id not in known:
        assert ingest.store is not None, "the lifespan sets the store"
        try:
            known[user_id] = await ingest.store.clinic_of(user_id)
        except Exception as exc:
            raise _unavailable(ingest, exc, count) from None
    return known[user_id]


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


#: a batch item's error for each status that stored nothing
_REFUSED = {"conflict": CONFLICT, "erased": ERASED}


def _result(appended: Appended) -> dict[str, str]:
    return {"event_id": appended.event_id, "status": appended.status, "position": appended.position}


def _tally(appended: list[Appended]) -> dict[str, int]:
    tally = {"accepted": 0, "duplicate": 0, "conflict": 0, "erased": 0}
    for a in appended:
        tally[a.status] += 1
    return tally


async def post_event(request: Request, principal: PrincipalDep) -> Response:
    """Validate one input event, check the token may write it, store it: 202 once Redis has it."""
    ingest = _ingest(request)
    log_fields = request.state.log_fields
    log_fields["count"] = 1
    await _take(ingest, principal, 1)
    body = await read_body(request.receive)
    try:
        event = ingest.event(parse_json(body), ingest.window(principal.role))
        clinic = None
        if needs_clinic(principal, event):
            clinic = await _clinic(ingest, event.user_id, {}, 1)
        event = admit(principal, event, clinic)
    except Rejected as exc:
        ingest.metrics.count("rejected")
        raise HTTPException(422, exc.detail) from None
    except Forbidden as exc:
        ingest.metrics.count("rejected")
        raise HTTPException(403, str(exc)) from None
    (appended,) = await _append(ingest, [event], principal)
    ingest.metrics.count_appended([appended])
    # the id that the prescriber's and the channels' lines name as caused_by
    log_fields.update(_tally([appended]), event_id=appended.event_id)
    if appended.status == "conflict":
        return _json({"error": CONFLICT}, 409)
    if appended.status == "erased":
        return _json({"error": ERASED}, 410)
    return _json(_result(appended), 202)


async def _check_items(
    items: list[Any], principal: auth.Principal, ingest: Ingest
) -> tuple[list[tuple[int, Input]], dict[int, str]]:
    valid: list[tuple[int, Input]] = []
    errors: dict[int, str] = {}
    window = ingest.window(principal.role)
    clinics: dict[str, str | None] = {}
    for index, item in enumerate(items):
        try:
            event = ingest.event(item, window, ("events", index))
            clinic = None
            if needs_clinic(principal, event):
                clinic = await _clinic(ingest, event.user_id, clinics, len(items))
            valid.append((index, admit(principal, event, clinic)))
        except Rejected as exc:
            errors[index] = f"invalid: {exc}"
        except Forbidden as exc:
            errors[index] = str(exc)
    return valid, errors


async def post_batch(request: Request, principal: PrincipalDep) -> Response:
    """Store each valid event the token may write; a bad item does not reject the others."""
    ingest = _ingest(request)
    log_fields = request.state.log_fields
    retry_after = ingest.buckets.refuses(principal) if ingest.buckets else None
    if retry_after is not None:  # not even one token left: refused before reading the body
        raise _rate_limited(ingest, retry_after, 0)
    body = await read_body(request.receive)
    try:
        items = batch_items(parse_json(body), ingest.settings.max_batch)
    except Rejected as exc:
        raise HTTPException(422, exc.detail) from None
    log_fields["count"] = len(items)
    await _take(ingest, principal, len(items))
    valid, errors = await _check_items(items, principal, ingest)
    appended = await _append(ingest, [e for _, e in valid], principal) if valid else []
    ingest.metrics.count_appended(appended)
    ingest.metrics.count("rejected", len(errors))
    out: dict[int, dict[str, Any]] = {i: {"index": i, "error": e} for i, e in errors.items()}
    out.update(
        {
            i: {"index": i, "error": _REFUSED[a.status]} if a.status in _REFUSED else _result(a)
            for (i, _), a in zip(valid, appended, strict=True)
        }
    )
    log_fields.update(_tally(appended), rejected=len(errors))
    return _json({"results": [out[i] for i in range(len(items))]}, 202)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Redis answers PING",
    responses={503: {"description": "Redis unreachable"}},
)
async def readyz(ingest: IngestDep) -> Response:
    ready = True
    if ingest.redis is not None:
        from shared.redis_store import ping  # noqa: PLC0415 - Redis only when used

        ready = await ping(ingest.redis)
    if ready:
        return _json({"status": "ready"})
    return _json({"status": "unavailable", "detail": "redis does not answer PING"}, 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(ingest: IngestDep) -> Response:
    return Response(ingest.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def create_app(
    settings: Settings,
    store: EventStore | None = None,
    redis: Any = None,
    limits: IngestLimits | None = None,
    rates: RateLimits | None = None,
) -> FastAPI:
    """The ingest app. With no ``store``, the lifespan builds a ``RedisStore``.

    It uses ``redis`` if given, else connects to ``settings.redis_url`` (and
    closes that client on shutdown). A given ``store`` is used as is; a given
    ``redis`` client also backs ``/readyz``. Connecting is lazy: the app
    starts while Redis is down and answers 503 until it is back. ``limits``
    (default: from the environment) bounds how far ``occurred_at`` may stray
    from the server clock; ``rates`` (default: from the environment) are the
    events per token, counted in Redis whenever there is a Redis client.
    Raises ValueError if a role's burst is smaller than ``max_batch``.
    """
    rates = rates or RateLimits()
    small = [role for role, rate in rates.ingest().items() if rate.burst < settings.max_batch]
    if small:
        raise ValueError(f"the ingest burst of {', '.join(small)} is below max_batch")
    ingest = Ingest(settings, Metrics(), store, redis, limits or IngestLimits(), rates)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if ingest.store is None:
            from services.logging_svc.redis_wire import connection_options  # noqa: PLC0415
            from shared.data_keys import DataKeys  # noqa: PLC0415 - lazy by design
            from shared.redis_store import RedisStore, connect  # noqa: PLC0415 - lazy by design

            if ingest.redis is None:
                if not settings.redis_url:
                    raise RuntimeError("no event store: set BACKTRACK_REDIS_URL")
                url = settings.redis_url
                ingest.redis = owned = connect(url, **connection_options(url))
            ingest.store = RedisStore(
                ingest.redis,
                settings.partitions,
                settings.dedupe_ttl_seconds,
                DataKeys.from_settings(ingest.redis, settings),
            )
        if ingest.redis is not None:
            ingest.buckets = ingest.rates.buckets(ingest.redis, "ingest")
        _log.info("ingest_started", partitions=settings.partitions, max_batch=settings.max_batch)
        try:
            async with contextlib.AsyncExitStack() as watching:
                if ingest.redis is not None:  # an in-memory store has no revocations to watch
                    await watching.enter_async_context(revocations_watched(app, ingest.redis))
                yield
        finally:
            if owned is not None:
                await owned.aclose()
            ingest.store, ingest.redis, ingest.buckets = store, redis, None

    app = FastAPI(title="backtrack ingest", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.ingest = ingest
    app.router.add_api_route(
        "/v1/events",
        post_event,
        route_class_override=DirectRoute,
        methods=["POST"],
        status_code=202,
        response_model=None,
        responses=openapi.EVENT_RESPONSES,
        openapi_extra=openapi.EVENT_BODY,
        summary="Append one input event",
    )
    # Declared per app: the documented batch size is the settings' max_batch.
    app.router.add_api_route(
        "/v1/events/batch",
        post_batch,
        route_class_override=DirectRoute,
        methods=["POST"],
        status_code=202,
        response_model=None,
        responses=openapi.BATCH_RESPONSES,
        openapi_extra=openapi.batch_body(settings.max_batch),
        summary="Append up to max_batch input events; one result per item, in order",
    )
    app.include_router(router)
    openapi.install(app)
    app.add_middleware(DirectRoutes, routes=app.routes)  # inside the log: added first
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # before any route
    app.add_middleware(CanonicalLog, metrics=ingest.metrics, logger="backtrack.ingest")
    return app

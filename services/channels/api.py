"""Clinic API routes of the channels: webhook subscriptions and the SSE stream.

Served by the channels process and, with one ``include_router`` line, by the
prescriber's clinic API. Uses ``app.state.store``, ``.redis`` and ``.settings``.

Scopes: a clinic token manages its own clinic's subscriptions and may name
only users enrolled with it; an operator names the clinic in ``clinic_id``;
device tokens cannot subscribe. Another clinic's subscription answers 404, as
an unknown id does. The SSE stream has the scopes of the reads, checked when
it opens and again before every event and every ``sse_recheck`` seconds: the
token (expiry) and the user's clinic as it is now (a transfer ends the old
clinic's stream). Opening a stream of a user (but the patient's own) is one
entry in the audit log, and so is a refused one (``shared.audit``); the
re-checks of an open stream are not.

The delivery log (``GET /v1/subscriptions/{id}/deliveries``) is not audited:
it is the clinic's own record of what was pushed to its endpoint (user ids,
versions, statuses and times, no prescription content), every push having
passed the same read check first.

Open streams are capped twice: per owner across every process (a clinic, a
device's user, the operators; ``slots``), 429 with ``Retry-After`` past it;
and per process (``sse_max_streams``: each holds a Redis connection), 503.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis

from services.channels.dispatcher import log_key
from services.channels.options import ChannelSettings, channel_settings
from services.channels.slots import StreamSlots, owner_of
from services.channels.sse import LAST_ID, Access, SseStreams, events
from services.channels.subscriptions import (
    Subscription,
    SubscriptionCreated,
    SubscriptionDeleted,
    SubscriptionLog,
)
from services.channels.url_safety import UnsafeUrl, check_url
from services.channels.webhooks import new_secret
from shared.auth import Principal
from shared.events import ClinicId, UserId
from shared.http_auth import (
    PrincipalDep,
    audit_log,
    authenticate,
    authorize_audited_read,
    authorize_read,
    erasures_of,
    route,
    verifier,
)
from shared.store import EventStore, StoreUnavailable
from shared.streams import START

#: Seconds a client is asked to wait when no stream can be opened now.
STREAM_RETRY_AFTER = 5
router = APIRouter(
    prefix="/v1",
    responses={
        413: {"description": "Body larger than the configured limit (api_max_body_bytes)."},
        429: {"description": "Over the token's rate limit, or its owner's open streams cap."},
    },
)
log = structlog.get_logger("backtrack.channel.sse")


class SubscriptionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, Field(max_length=2048)]
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=10_000)] | None = None
    clinic_id: ClinicId | None = None


def _options(request: Request) -> ChannelSettings:
    state = request.app.state
    if getattr(state, "channel_settings", None) is None:
        state.channel_settings = channel_settings(state.settings)
    options: ChannelSettings = state.channel_settings
    return options


async def _store(request: Request) -> EventStore:
    store: EventStore = request.app.state.store
    return store


StoreDep = Annotated[EventStore, Depends(_store)]


def _subs(request: Request) -> SubscriptionLog:
    redis: Redis = request.app.state.redis
    return SubscriptionLog(redis, request.app.state.settings.master_keys())


def _clinic_for(principal: Principal, asked: str | None) -> str:
    if principal.role == "clinic" and principal.subject is not None:
        if asked is not None and asked != principal.subject:
            raise HTTPException(403, "a clinic token subscribes for its own clinic only")
        return principal.subject
    if principal.role == "operator":
        if asked is None:
            raise HTTPException(422, "an operator must name the clinic_id")
        return asked
    raise HTTPException(403, "this token may not manage subscriptions")


async def _owned(request: Request, principal: Principal, sub_id: str) -> Subscription:
    if principal.role not in ("clinic", "operator"):
        raise HTTPException(403, "this token may not manage subscriptions")
    sub = await _subs(request).get(sub_id)
    visible = sub is not None and (
        principal.role == "operator" or sub.clinic_id == principal.subject
    )
    if sub is None or not visible or sub.status == "deleted":
        raise HTTPException(404, "no such subscription")
    return sub


@router.post(
    "/subscriptions",
    status_code=201,
    responses={400: {"description": "the body is not JSON"}, 401: {}, 403: {}, 422: {}},
)
async def subscribe(
    body: SubscriptionRequest, request: Request, principal: PrincipalDep, store: StoreDep
) -> dict[str, str]:
    """Create a webhook subscription; the secret is shown only in this answer."""
    clinic = _clinic_for(principal, body.clinic_id)
    for user in body.user_ids or ():
        if await store.clinic_of(user) != clinic:
            raise HTTPException(403, f"user {user!r} is not enrolled with clinic {clinic!r}")
    settings = _options(request)
    try:
        await check_url(
            body.url,
            allow_private=settings.webhook_allow_private,
            https_only=not settings.is_local,
        )
    except UnsafeUrl as exc:
        raise HTTPException(422, f"webhook url refused: {exc}") from None
    secret = new_secret()
    event = SubscriptionCreated(
        sub_id=f"sub_{uuid.uuid4().hex}",
        clinic_id=clinic,
        url=body.url,
        user_ids=None if body.user_ids is None else tuple(dict.fromkeys(body.user_ids)),
        secret=secret,
        occurred_at=datetime.now(UTC),
    )
    await _subs(request).append(event)
    return {"id": event.sub_id, "secret": secret}


@router.get("/subscriptions", responses={401: {}, 403: {}})
async def list_subscriptions(request: Request, principal: PrincipalDep) -> list[dict[str, Any]]:
    """The caller's clinic's subscriptions (operators: all), without secrets."""
    if principal.role not in ("clinic", "operator"):
        raise HTTPException(403, "this token may not manage subscriptions")
    subs = (await _subs(request).refresh()).values()
    return [
        s.public()
        for s in subs
        if s.status != "deleted"
        and (principal.role == "operator" or s.clinic_id == principal.subject)
    ]


@router.delete("/subscriptions/{sub_id}", status_code=204, responses={401: {}, 403: {}, 404: {}})
async def unsubscribe(sub_id: str, request: Request, principal: PrincipalDep) -> Response:
    """Delete a subscription; queued deliveries are dropped by the dispatcher."""
    await _owned(request, principal, sub_id)
    await _subs(request).append(SubscriptionDeleted(sub_id=sub_id, occurred_at=datetime.now(UTC)))
    return Response(status_code=204)


@router.get("/subscriptions/{sub_id}/deliveries", responses={401: {}, 403: {}, 404: {}})
async def deliveries(
    sub_id: str,
    request: Request,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Delivery attempts of a subscription, newest first."""
    await _owned(request, principal, sub_id)
    redis: Redis = request.app.state.redis
    entries: Any = await redis.xrevrange(log_key(sub_id), "+", "-", limit)
    return [_attempt(fields) for _, fields in entries]


def _attempt(fields: dict[Any, Any]) -> dict[str, Any]:
    got = {(k.decode() if isinstance(k, bytes) else k): v.decode() for k, v in fields.items()}
    ints = ("attempt", "status", "latency_ms", "version")
    return {k: int(v) if k in ints and v.lstrip("-").isdigit() else v for k, v in got.items()}


@router.get(
    "/users/{user_id}/prescriptions/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}},
        401: {},
        403: {},
        400: {},
        404: {"description": "The user was erased."},
    },
)
async def stream(
    user_id: UserId,
    request: Request,
    principal: PrincipalDep,
    store: StoreDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """Server-Sent Events of the user's PrescriptionChanged, resumable with Last-Event-ID."""
    await authorize_audited_read(request, user_id, principal, store)
    after = last_event_id.strip() if last_event_id else START
    if not LAST_ID.fullmatch(after):
        raise HTTPException(400, "Last-Event-ID must be a stream id like 1700000000000-0")
    settings = _options(request)
    retry = {"Retry-After": str(STREAM_RETRY_AFTER)}
    owner, cap = owner_of(principal, settings)
    try:
        slot = await _slots(request, settings).take(owner, cap)
    except StoreUnavailable:
        raise HTTPException(503, "stream slots unavailable; retry", retry) from None
    if slot is None:
        raise HTTPException(429, f"this token's owner has {cap} streams open", retry)
    streams: SseStreams = _streams(request, settings)
    if not streams.admit():
        await slot.release()
        raise HTTPException(503, "too many open streams", retry)
    try:
        await audit_log(request).allowed(principal, route(request), user_id)
    except StoreUnavailable:
        streams.leave()
        await slot.release()
        raise HTTPException(503, "audit log unavailable; retry", retry) from None
    key = request.app.state.store.keys.rx(user_id)
    access = _access(request, user_id, store)

    async def body() -> AsyncIterator[bytes]:
        redis, heartbeat, recheck = (
            request.app.state.redis,
            settings.sse_heartbeat,
            settings.sse_recheck,
        )
        try:
            async with slot.held():
                async for chunk in events(
                    request,
                    redis,
                    key,
                    after,
                    heartbeat,
                    access=access,
                    recheck=recheck,
                    data_keys=request.app.state.store.data_keys,
                ):
                    yield chunk
        finally:
            streams.leave()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)


def _access(request: Request, user_id: str, store: EventStore) -> Access:
    """Whether the stream's token may still read ``user_id``: checked afresh each time."""
    authorization = request.headers.get("authorization")

    async def refusal() -> str | None:
        try:
            principal = authenticate(verifier(request), authorization)
            await authorize_read(user_id, principal, store, erasures_of(request))
        except HTTPException as exc:
            reason = str(exc.detail)
        except StoreUnavailable:
            reason = "event store unavailable; reconnect"
        else:
            return None
        log.info("sse_closed", user_id=user_id, reason=reason)
        return reason

    return refusal


def _streams(request: Request, settings: ChannelSettings) -> SseStreams:
    state = request.app.state
    if getattr(state, "sse_streams", None) is None:
        state.sse_streams = SseStreams(settings.sse_max_streams)
    streams: SseStreams = state.sse_streams
    return streams


def _slots(request: Request, settings: ChannelSettings) -> StreamSlots:
    state = request.app.state
    if getattr(state, "stream_slots", None) is None:
        state.stream_slots = StreamSlots(state.redis, settings.sse_lease_seconds)
    slots: StreamSlots = state.stream_slots
    return slots


__all__ = ["SubscriptionRequest", "router"]

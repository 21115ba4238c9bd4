"""Composition root of the channels process: webhook dispatcher + subscription/SSE API.

``create_app(settings)`` wires everything; nothing connects at import time.
The lifespan runs a FastStream broker with one batch subscriber per rx feed
(group ``channel-webhook``), the dispatcher's retry loop, a sweeper for rx
feed entries a dead consumer left pending and the revocation watcher.
Request bodies are capped (``api_max_body_bytes``) before anything reads
them, and each token's requests are counted (``RateLimits.api_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.channels.api import router
from services.channels.dispatcher import Dispatcher
from services.channels.feed import ensure_groups, subscribe_webhook_channel, sweep_pending
from services.channels.metrics import WebhookMetrics
from services.channels.options import ChannelSettings
from shared import tasks
from shared.audit import AuditLog
from shared.body_limit import BodyLimit
from shared.broker import broker_for
from shared.data_keys import DataKeys
from shared.erasure import ErasureRecords
from shared.http_auth import revocations_watched
from shared.keys import Keys
from shared.rate_limit import RateLimits
from shared.redis_store import RedisStore, connect, ping
from shared.runtime import instance_name

log = structlog.get_logger(__name__)


def mount(
    app: FastAPI, settings: ChannelSettings, redis: Redis, rates: RateLimits | None = None
) -> None:
    """Wire the router's state onto ``app`` (tests compose apps with this too).

    ``rates`` (default: from the environment) limit each token's requests.
    """
    app.state.settings = settings
    app.state.channel_settings = settings
    app.state.redis = redis
    data_keys = DataKeys.from_settings(redis, settings)
    app.state.store = RedisStore(redis, settings.partitions, settings.dedupe_ttl_seconds, data_keys)
    app.state.audit = AuditLog(redis, app.state.store.keys, settings.audit_retention_days)
    app.state.erasures = ErasureRecords(redis, app.state.store.keys)
    app.state.request_limits = (rates or RateLimits()).buckets(redis, "api")


async def _sweep_forever(
    redis: Redis, keys: Keys, name: str, dispatcher: Dispatcher, idle: int
) -> None:
    while True:
        try:
            await sweep_pending(redis, keys, name, dispatcher, idle)
        except RedisError as exc:
            log.warning("webhook_sweep_failed", error=type(exc).__name__)
        await asyncio.sleep(max(0.5, idle / 2000))


def create_app(settings: ChannelSettings) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("the channels need BACKTRACK_REDIS_URL")
    url = settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(url)
        mount(app, settings, redis)
        keys, name = Keys(settings.partitions), instance_name()
        dispatcher = Dispatcher(redis, app.state.store, settings, metrics=app.state.metrics)
        await ensure_groups(redis, keys)
        broker = broker_for(url, logger=structlog.get_logger("faststream"), log_level=10)
        subscribe_webhook_channel(broker, redis, keys, name, dispatcher)
        async with broker, dispatcher.running(), revocations_watched(app, redis):
            await broker.start()
            sweeper = asyncio.create_task(
                _sweep_forever(redis, keys, name, dispatcher, settings.claim_idle_ms)
            )
            log.info("channels_started", partitions=settings.partitions, consumer=name)
            try:
                yield
            finally:
                await tasks.stop(sweeper)
                await broker.stop()
        await redis.aclose()
        log.info("channels_stopped")

    app = FastAPI(title="backtrack channels", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = WebhookMetrics()
    app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        ok = await ping(app.state.redis)
        return PlainTextResponse("ready" if ok else "redis unreachable", 200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        registry = app.state.metrics.registry
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_app", "mount"]

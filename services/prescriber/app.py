"""Composition root of the prescriber: feed consumers, reclaimer, log channel, clinic API.

``create_app(settings)`` wires everything; nothing connects at import time.
The FastAPI lifespan runs the FastStream broker (log channel) and the
partition ownership (leases plus one feed reader per owned partition), so one
process serves the clinic API and consumes its share of the partition feeds.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from services.channels.api import router as channels_router
from services.prescriber import engine
from services.prescriber.channels import LOG_GROUP, subscribe_log_channel
from services.prescriber.clinic_api import router as clinic_router
from services.prescriber.consumer import GROUP, FeedConsumer, ensure_groups
from services.prescriber.leases import Leases
from services.prescriber.metrics import StreamMetrics
from services.prescriber.ownership import Ownership
from services.prescriber.processor import Processor
from services.prescriber.reclaimer import Reclaimer
from shared.access_log import CanonicalLog
from shared.broker import broker_for
from shared.keys import Keys
from shared.redis_store import RedisStore, connect, ping
from shared.settings import Settings

log = structlog.get_logger(__name__)


def instance_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def create_app(settings: Settings, rules: engine.RuleSet = engine.DEFAULT_RULES) -> FastAPI:
    if not settings.redis_url:
        raise ValueError("the prescriber needs BACKTRACK_REDIS_URL")
    url = settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(url)
        keys = Keys(settings.partitions)
        store = RedisStore(
            redis, partitions=settings.partitions, dedupe_ttl=settings.dedupe_ttl_seconds
        )
        processor = Processor(store, rules, snapshot_every=settings.snapshot_every)
        consumer = FeedConsumer(redis, processor, keys, settings.max_deliveries)
        name = instance_name()
        registry = app.state.registry
        broker = broker_for(
            url,
            logger=structlog.get_logger("faststream"),
            log_level=10,
            middlewares=[RedisPrometheusMiddleware(registry=registry)],
        )
        subscribe_log_channel(broker, keys, name)
        reclaimer = Reclaimer(redis, consumer, name, settings.claim_idle_ms)
        # the feeds are read by one loop per leased partition, not by broker subscribers
        leases = Leases(redis, keys, name, settings.lease_ms)
        ownership = Ownership(
            leases, consumer, reclaimer, renew_interval=settings.lease_renew_ms / 1000
        )
        reclaimer.owned = ownership.owned
        Gauge(
            "backtrack_partitions_owned",
            "Partitions this instance holds a lease on",
            registry=registry,
        ).set_function(lambda: len(ownership.owned()))
        gauges = StreamMetrics(redis, keys, registry)
        app.state.store, app.state.redis = store, redis
        await ensure_groups(redis, keys.feeds(), GROUP)
        await ensure_groups(redis, keys.rxfeeds(), LOG_GROUP)
        async with broker:
            await broker.start()
            log.info("prescriber_started", partitions=settings.partitions, consumer=name)
            async with ownership.running(), reclaimer.running(), gauges.running():
                yield
            await broker.stop()
        await processor.flush()
        await redis.aclose()
        log.info("prescriber_stopped")

    app = FastAPI(title="backtrack clinic API", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    app.add_middleware(CanonicalLog, logger="backtrack.clinic")
    app.include_router(clinic_router)
    app.include_router(channels_router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_class=PlainTextResponse,
        responses={503: {"description": "redis unreachable", "content": {"text/plain": {}}}},
    )
    async def readyz() -> PlainTextResponse:
        ok = await ping(app.state.redis)
        return PlainTextResponse("ready" if ok else "redis unreachable", 200 if ok else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(app.state.registry), media_type=CONTENT_TYPE_LATEST
        )

    return app

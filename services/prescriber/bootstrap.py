"""Composition root of the prescriber: feed readers, reclaimer, log channel, clinic API
(reads, enrolments, erasures, and the channels' subscriptions and SSE).

``create_app(settings)`` wires everything once; nothing connects at import
time. The FastAPI lifespan runs the partition ownership (leases plus one
feed reader per owned partition, plain XREADGROUP loops), the reclaimer, the
stream gauges, the revocation watcher and the FastStream broker of the log
channel, so one process serves the clinic API and consumes its share of the
partition feeds. The
clinic API caps request bodies (``api_max_body_bytes``) before anything
reads them and counts each token's requests (``RateLimits.api_*``). At
start, a task finishes every erasure a previous process left ``started``
(``services.prescriber.erasure``); erasures still running at shutdown are
cancelled and finished by the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis

from services.channels.api import router as channels_router
from services.prescriber import engine
from services.prescriber.entrypoints import probes
from services.prescriber.entrypoints.clinic_api import router as clinic_router
from services.prescriber.entrypoints.enrolments import router as enrolment_router
from services.prescriber.entrypoints.log_channel import LOG_GROUP, subscribe_log_channel
from services.prescriber.entrypoints.users import router as users_router
from services.prescriber.erasure import Eraser, ErasureTasks
from services.prescriber.feeds.consumer import GROUP, FeedConsumer
from services.prescriber.feeds.leases import Leases
from services.prescriber.feeds.metrics import StreamMetrics
from services.prescriber.feeds.ownership import Ownership
from services.prescriber.feeds.reader import FeedReader, block_ms_for
from services.prescriber.feeds.reclaimer import Reclaimer
from services.prescriber.processing.processor import Processor
from shared.access_log import CanonicalLog
from shared.audit import AuditLog
from shared.body_limit import BodyLimit
from shared.broker import broker_for
from shared.data_keys import DataKeys
from shared.erasure import ErasureRecords
from shared.http_auth import revocations_watched
from shared.keys import Keys
from shared.rate_limit import RateLimits
from shared.redis_store import RedisStore, connect
from shared.runtime import instance_name
from shared.settings import Settings
from shared.streams import ensure_groups
from shared.tasks import stop

log = structlog.get_logger(__name__)


def _erasures(
    app: FastAPI, redis: Redis, keys: Keys, settings: Settings, data_keys: DataKeys
) -> ErasureTasks:
    """Wire the erasure records (reads of erased users: 404) and the erasures' tasks; the
    eraser shares the store's data keys, so this process forgets an erased key at once."""
    app.state.erasures = ErasureRecords(redis, keys)
    tasks = ErasureTasks(Eraser(redis, keys, data_keys, settings.token_lifetimes()))
    app.state.erasure_tasks = tasks
    return tasks


def _serve_reads(app: FastAPI, store: RedisStore, settings: Settings, rates: RateLimits) -> None:
    """What the clinic API's routes read from ``app.state``: the store, audit log, limits."""
    app.state.store, app.state.redis = store, store.redis
    app.state.audit = AuditLog(store.redis, store.keys, settings.audit_retention_days)
    app.state.request_limits = rates.buckets(store.redis, "api")


def _count_owned(registry: CollectorRegistry, ownership: Ownership) -> None:
    Gauge(
        "backtrack_partitions_owned",
        "Partitions this instance holds a lease on",
        registry=registry,
    ).set_function(lambda: len(ownership.owned()))


def create_app(
    settings: Settings,
    rules: engine.RuleSet = engine.DEFAULT_RULES,
    rates: RateLimits | None = None,
) -> FastAPI:
    """The prescriber; ``rates`` (default: from the environment) limit the clinic API's tokens."""
    rates = rates or RateLimits()
    if not settings.redis_url:
        raise ValueError("the prescriber needs BACKTRACK_REDIS_URL")
    url = settings.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = connect(url)
        keys = Keys(settings.partitions)
        name = instance_name()
        registry = app.state.registry
        data_keys = DataKeys.from_settings(redis, settings)
        store = RedisStore(redis, settings.partitions, settings.dedupe_ttl_seconds, data_keys)
        processor = Processor(store, rules, snapshot_every=settings.snapshot_every)
        consumer = FeedConsumer(redis, processor, keys, settings.max_deliveries, data_keys)
        reader = FeedReader(redis, keys, consumer, name, block_ms=block_ms_for(settings.lease_ms))
        ownership = Ownership(
            Leases(redis, keys, name, settings.lease_ms),
            reader,
            keys,
            processor.evict,
            renew_interval=settings.lease_renew_ms / 1000,
        )
        reclaimer = Reclaimer(redis, consumer, name, settings.claim_idle_ms, owned=ownership.owned)
        _count_owned(registry, ownership)
        gauges = StreamMetrics(redis, keys, registry)
        broker = broker_for(
            url,
            logger=structlog.get_logger("faststream"),
            log_level=10,
            middlewares=[RedisPrometheusMiddleware(registry=registry)],
        )
        subscribe_log_channel(broker, keys, name, data_keys)
        _serve_reads(app, store, settings, rates)
        erasures = _erasures(app, redis, keys, settings, data_keys)
        await ensure_groups(redis, keys.feeds(), GROUP)
        await ensure_groups(redis, keys.rxfeeds(), LOG_GROUP)
        async with broker:
            await broker.start()
            log.info("prescriber_started", partitions=settings.partitions, consumer=name)
            async with (
                ownership.running(),
                reclaimer.running(),
                gauges.running(),
                revocations_watched(app, redis),
            ):
                resuming = asyncio.create_task(erasures.resume(), name="erasure-resume")
                try:
                    yield
                finally:
                    await stop(resuming, *erasures.running())
            await broker.stop()
        await processor.flush()
        await redis.aclose()
        log.info("prescriber_stopped")

    app = FastAPI(title="backtrack clinic API", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = CollectorRegistry()
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(CanonicalLog, logger="backtrack.clinic")
    app.include_router(clinic_router)
    app.include_router(enrolment_router)
    app.include_router(users_router)
    app.include_router(channels_router)
    app.include_router(probes.router)
    return app

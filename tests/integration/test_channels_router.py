"""The channels router mounted on another app with plain Settings, as the prescriber will."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from services.channels.api import router
from shared.auth import issue
from shared.redis_store import RedisStore
from shared.settings import Settings
from tests.integration.events_factory import make_started

pytestmark = pytest.mark.anyio


async def test_router_works_on_an_app_with_plain_settings(
    redis: Redis, redis_store: RedisStore
) -> None:
    """With the prescriber's state (store, redis, Settings) the subscription routes answer."""
    app = FastAPI()
    app.include_router(router)
    app.state.settings = Settings(secret="s", webhook_allow_private=True)
    app.state.store, app.state.redis = redis_store, redis
    await redis_store.append(make_started(user_id="r-1", clinic_id="c-1"))
    auth = {"Authorization": f"Bearer {issue('clinic', 'c-1', 's')}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        body = {"url": "http://127.0.0.1:9/h", "user_ids": ["r-1"]}
        created = await http.post("/v1/subscriptions", json=body, headers=auth)
        assert created.status_code == 201
        listed = (await http.get("/v1/subscriptions", headers=auth)).json()
        assert listed[0]["user_ids"] == ["r-1"]
        assert listed[0]["status"] == "active"
    app.state.settings = Settings(secret="s")
    app.state.channel_settings = None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://t") as http:
        refused = await http.post("/v1/subscriptions", json=body, headers=auth)
        assert refused.status_code == 422

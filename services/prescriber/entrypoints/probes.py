"""Liveness, readiness (Redis reachable) and Prometheus metrics for the clinic port."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.redis_store import ping

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_class=PlainTextResponse,
    responses={503: {"description": "redis unreachable", "content": {"text/plain": {}}}},
)
async def readyz(request: Request) -> PlainTextResponse:
    ok = await ping(request.app.state.redis)
    return PlainTextResponse("ready" if ok else "redis unreachable", 200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(
        generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST
    )


__all__ = ["router"]

"""A DirectRoute serves what its declaration says, answering as FastAPI's own route would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import orjson
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.routing import APIRoute

from services.logging_svc.app import create_app
from services.logging_svc.direct_route import DirectRoute, DirectRoutes
from shared.access_log import CanonicalLog
from shared.auth import issue
from shared.body_limit import BodyLimit
from shared.http_auth import PrincipalDep
from shared.settings import Settings
from shared.store import MemoryStore

SECRET = "direct-route-secret"


async def echo(request: Request, principal: PrincipalDep) -> Response:
    body = await request.body()
    if body == b"refuse":
        raise HTTPException(409, "refused", {"X-Why": "asked"})
    answer = {"role": principal.role, "subject": principal.subject, "bytes": len(body)}
    return Response(orjson.dumps(answer), 202, media_type="application/json")


def _app(
    route_class: type[APIRoute], endpoint: Callable[..., Any] = echo, **declared: Any
) -> FastAPI:
    app = FastAPI()
    app.state.settings = Settings(secret=SECRET)
    app.router.add_api_route(
        "/echo",
        endpoint,
        methods=["POST"],
        response_model=None,
        route_class_override=route_class,
        **declared,
    )
    return app


def _post(app: FastAPI, headers: dict[str, str], body: bytes = b"{}") -> httpx.Response:
    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post("/echo", headers=headers, content=body)

    return asyncio.run(post())


def _token(role: str = "device", subject: str | None = "p-1", secret: str = SECRET) -> str:
    return issue(role, subject, secret)  # type: ignore[arg-type]


REQUESTS = [
    ({"Authorization": f"Bearer {_token()}"}, b"{}"),
    ({"Authorization": f"Bearer {_token('operator', None)}"}, b"refuse"),
    ({}, b"{}"),
    ({"Authorization": "Bearer not-a-token"}, b"{}"),
    ({"Authorization": f"Bearer {_token(secret='another')}"}, b"{}"),
    ({"Authorization": "Basic dXNlcjpwdw=="}, b"{}"),
]


@pytest.mark.parametrize(("headers", "body"), REQUESTS)
def test_a_direct_route_answers_as_the_solved_route(headers: dict[str, str], body: bytes) -> None:
    """Through the router or DirectRoutes, status, body and headers match FastAPI's own route."""
    shortcut = _app(DirectRoute)
    shortcut.add_middleware(DirectRoutes, routes=shortcut.routes)
    theirs = _post(_app(APIRoute), headers, body)
    for app in (_app(DirectRoute), shortcut):
        ours = _post(app, headers, body)
        assert (ours.status_code, ours.json()) == (theirs.status_code, theirs.json())
        for name in ("www-authenticate", "x-why", "content-type"):
            assert ours.headers.get(name) == theirs.headers.get(name)


async def forbid(request: Request) -> None:
    raise HTTPException(403, f"no {request.method} today")


def test_dependencies_declared_on_the_route_run() -> None:
    """Editing the declaration changes what runs: a route-level dependency answers 403."""
    app = _app(DirectRoute, dependencies=[Depends(forbid)])
    reply = _post(app, {"Authorization": f"Bearer {_token()}"})
    assert (reply.status_code, reply.json()) == (403, {"detail": "no POST today"})
    document = app.openapi()
    assert document["paths"]["/echo"]["post"]["security"] == [{"HTTPBearer": []}]


def _sync(request: Request) -> str:
    return request.method


async def _with_query(q: int) -> int:
    return q


async def with_query(request: Request, n: int) -> Response:
    return Response(str(n))


async def with_sync_dependency(request: Request, m: Annotated[str, Depends(_sync)]) -> Response:
    return Response(m)


async def with_query_dependency(
    request: Request, q: Annotated[int, Depends(_with_query)]
) -> Response:
    return Response(str(q))


def sync_endpoint(request: Request) -> Response:
    return Response()


@pytest.mark.parametrize(
    "endpoint", [with_query, with_sync_dependency, with_query_dependency, sync_endpoint]
)
def test_declarations_it_would_not_serve_are_refused(endpoint: Callable[..., Any]) -> None:
    """Parameters, sync code or dependencies needing more than the request fail at declaration."""
    with pytest.raises(TypeError, match="/echo: a DirectRoute"):
        _app(DirectRoute, endpoint)


def test_each_ingest_post_is_served_by_the_route_it_documents() -> None:
    """One route per POST path, a DirectRoute; DirectRoutes hands requests to those very routes."""
    app = create_app(Settings(secret=SECRET), store=MemoryStore())
    document = app.openapi()
    served = {}
    for path in ("/v1/events", "/v1/events/batch"):
        (route,) = [r for r in app.routes if getattr(r, "path", None) == path]
        assert isinstance(route, DirectRoute)
        assert route.methods == {"POST"}
        assert document["paths"][path]["post"]["summary"] == route.summary
        served[("POST", path)] = route
    assert [m.cls for m in app.user_middleware] == [CanonicalLog, BodyLimit, DirectRoutes]
    shortcut = app.user_middleware[2]
    assert DirectRoutes(app.router, *shortcut.args, **shortcut.kwargs).routes == served

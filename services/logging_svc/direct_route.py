"""Routes that both serve and document, without FastAPI's per-request machinery.

Per request, FastAPI's dependency solving, its router (each route tried in
turn) and its exit-stack wrappers cost more CPU than validating and appending
an event. A ``DirectRoute`` is an ordinary ``APIRoute``, so ``/openapi.json``
describes it from its declaration, but its app calls the endpoint itself: the
request for the endpoint's ``Request`` parameter and each dependency awaited
with the request alone. When declared it refuses an endpoint that asks for
more (query, path, header, cookie or body parameters; dependencies that are
sync or take anything but the request), so the document and what runs cannot
drift apart. ``DirectRoutes``, in front of the router, hands a request for a
DirectRoute straight to that route's own app; it holds no handler of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

Resolver = Callable[[Request], Awaitable[Any]]


async def read_body(receive: Receive) -> bytes:
    """The whole body; ``shared.body_limit.BodyLimit`` in front of the app caps its size."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        if message["type"] != "http.request":
            continue
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _is_async(call: Any) -> bool:
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 - instances with an async __call__
    )


def _asks_for_more(dependant: Dependant) -> bool:
    """Whether it takes anything besides the request and its dependencies."""
    params = (
        dependant.path_params,
        dependant.query_params,
        dependant.header_params,
        dependant.cookie_params,
        dependant.body_params,
    )
    names = (
        dependant.websocket_param_name,
        dependant.http_connection_param_name,
        dependant.response_param_name,
        dependant.background_tasks_param_name,
        dependant.security_scopes_param_name,
    )
    return any(params) or any(name is not None for name in names)


def _resolvers(route: APIRoute) -> list[tuple[str | None, Resolver]]:
    """What the endpoint's dependencies are, in order: (parameter name or None, call)."""
    resolvers: list[tuple[str | None, Resolver]] = []
    for dependency in route.dependant.dependencies:
        call = dependency.call
        alone = dependency.request_param_name is not None and not dependency.dependencies
        if call is None or not _is_async(call) or not alone or _asks_for_more(dependency):
            raise TypeError(
                f"{route.path}: a DirectRoute's dependencies are async and take the request"
                f" alone; {call!r} does not"
            )
        resolvers.append((dependency.name, call))
    return resolvers


class DirectRoute(APIRoute):
    """An APIRoute whose app awaits ``endpoint(request?, **dependencies(request))``.

    The endpoint is async, reads its own body and returns the Response itself
    (``response_model=None``); an HTTPException it raises is answered by the
    app's handler, as for any route. Declare it on the app's own router
    (``route_class_override``): dependencies an including router would add
    are not applied.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **declared: Any) -> None:
        super().__init__(path, endpoint, **declared)
        if self.max_body_size is not None:
            raise TypeError(f"{path}: a DirectRoute's endpoint limits its own body")
        # Not request_response: its exit stacks serve dependencies with yield,
        # which a DirectRoute refuses.
        handle = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if _asks_for_more(self.dependant):
            raise TypeError(f"{self.path}: a DirectRoute's endpoint takes no parameters")
        if self.response_field is not None or not inspect.iscoroutinefunction(self.endpoint):
            raise TypeError(f"{self.path}: a DirectRoute's endpoint is async, answering a Response")
        resolvers = _resolvers(self)
        endpoint: Callable[..., Awaitable[Response]] = self.endpoint
        request_name = self.dependant.request_param_name

        async def handle(request: Request) -> Response:
            values = {}
            for name, resolve in resolvers:
                value = await resolve(request)
                if name is not None:
                    values[name] = value
            if request_name is not None:
                values[request_name] = request
            return await endpoint(**values)

        return handle


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class DirectRoutes:
    """Hands each request for one of ``routes``' DirectRoutes to that route's app.

    Sits inside the request log, in front of the router; anything else (other
    paths and methods: 405s, redirects) goes on unchanged. Sets
    ``scope["route"]`` as the router would, and answers an HTTPException with
    the app's handler for it, as the exception middleware behind it would.
    """

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.routes = {
            (method, route.path): route
            for route in routes
            if isinstance(route, DirectRoute)
            for method in route.methods or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], _route_path(scope)))
        if route is None:
            await self.app(scope, receive, send)
            return
        scope["route"] = route
        try:
            await route.app(scope, receive, send)
        except StarletteHTTPException as exc:
            answer = scope["app"].exception_handlers[StarletteHTTPException]
            response = answer(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)


__all__ = ["DirectRoute", "DirectRoutes", "read_body"]

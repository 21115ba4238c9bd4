"""Real Redis servers for tests: an env URL, a testcontainer, or a local binary.

``session_endpoint()`` picks, in order: ``REDIS_URL`` from the environment,
a testcontainers Redis when a Docker engine answers, else a ``RedisServer``
process (``shared.redis_server``). Only ``RedisServer`` can be killed and
restarted, so fault tests use ``RedisServer.start()`` directly (always a
private process). No binary found is an error, never a skip.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from shared.redis_server import RedisServer

__all__ = ["ContainerRedis", "ExternalRedis", "RedisEndpoint", "RedisServer", "session_endpoint"]


class RedisEndpoint(Protocol):
    """Something tests can connect to; ``close()`` releases it."""

    url: str

    def close(self) -> None: ...


class ExternalRedis:
    """A server someone else runs (``REDIS_URL``); it cannot be killed from here."""

    def __init__(self, url: str) -> None:
        self.url = url

    def close(self) -> None:
        pass


class ContainerRedis:
    """A testcontainers Redis, stopped on ``close()``."""

    def __init__(self, container: Any) -> None:
        self._container = container
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        self.url = f"redis://{host}:{port}/0"

    def close(self) -> None:
        self._container.stop()


def _container() -> ContainerRedis | None:
    """A testcontainers Redis if a Docker engine answers; None quickly otherwise."""
    try:
        from testcontainers.community.redis import RedisContainer  # noqa: PLC0415
    except ImportError:
        try:
            from testcontainers.redis import RedisContainer  # noqa: PLC0415
        except ImportError:
            return None
    try:
        import docker  # noqa: PLC0415

        docker.from_env(timeout=2).ping()
        container = RedisContainer("redis:7").start()
    except Exception:  # no engine, no image, no permission: fall through to a binary
        return None
    return ContainerRedis(container)


def session_endpoint() -> RedisEndpoint:
    """The session's Redis: REDIS_URL, else a container, else a local process."""
    url = os.environ.get("REDIS_URL")
    if url:
        return ExternalRedis(url)
    if os.environ.get("BT_TESTS_NO_DOCKER") != "1":
        container = _container()
        if container is not None:
            return container
    return RedisServer.start()

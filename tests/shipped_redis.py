"""The shipped Redis (deploy/redis) run for real: a profile through ``redis-start.sh``.

``shipped(profile, directory, password)`` starts a local redis-server the way
compose and Kubernetes do (``sh redis-start.sh redis.conf``, the services'
password in ``REDIS_PASSWORD``), with the data directory, port and bind
address overridden for the test, and yields its port once the services' user
gets PONG.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from shared.redis_server import find_binary, free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SCRIPT = DEPLOY / "redis" / "redis-start.sh"
USER = "backtrack"


def start_env(password: str | None, **extra: str) -> dict[str, str]:
    """The environment ``redis-start.sh`` runs with: the password and the binary to exec."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS")}
    env |= {"REDIS_SERVER": find_binary(), **extra}
    if password is not None:
        env["REDIS_PASSWORD"] = password
    return env


def local_conf(profile: str, directory: Path) -> Path:
    """The profile with its data directory moved to ``directory``."""
    text = (DEPLOY / "redis" / f"redis-{profile}.conf").read_text()
    conf = directory / "redis.conf"
    conf.write_text(re.sub(r"(?m)^dir /data$", f"dir {directory}", text))
    return conf


@contextlib.contextmanager
def shipped(
    profile: str, directory: Path, password: str, extra: tuple[str, ...] = ()
) -> Iterator[int]:
    """A running server of the shipped ``profile`` (``extra``: more redis-server arguments);
    yields its port."""
    port = free_port()
    process = subprocess.Popen(
        [
            *("sh", str(SCRIPT), str(local_conf(profile, directory))),
            *("--port", str(port), "--bind", "127.0.0.1", "--logfile", str(directory / "log")),
            *extra,
        ],
        env=start_env(password),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, username=USER, password=password, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                log = directory / "log"
                tail = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server exited: {tail}")
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the shipped redis-server did not answer within 10 s")
            time.sleep(0.05)
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(10)

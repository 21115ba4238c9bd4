"""The whole stack in the foreground: Redis (embedded if no URL), ingest, prescriber.

Each service runs as its own process, as in production. ``Stack`` starts them,
waits until each answers ``/readyz``, and stops them cleanly: SIGTERM to the
services (they drain in-flight work), then Redis, which fsyncs its AOF.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx
import structlog

from shared.redis_server import RedisServer
from shared.settings import Settings

log = structlog.get_logger(__name__)

SERVICES = {
    "ingest": "services.logging_svc",
    "prescriber": "services.prescriber",
    "channels": "services.channels",
}


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    """Return once ``base_url/readyz`` answers 200; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{base_url}: the process exited ({process.returncode}) on start")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} did not get ready within {timeout:.0f} s")
        time.sleep(0.05)


class Stack:
    def __init__(
        self, settings: Settings, quiet: bool = False, services: Sequence[str] = tuple(SERVICES)
    ) -> None:
        self.settings = settings
        self.quiet = quiet
        self.services = [name for name in SERVICES if name in services]  # start order
        self.redis: RedisServer | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.redis_url = settings.redis_url or ""

    @property
    def ingest_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.ingest_port}"

    @property
    def clinic_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.clinic_port}"

    @property
    def channels_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.channels_port}"

    def start(self) -> Stack:
        if not self.redis_url:
            data = Path(self.settings.data_dir).resolve() / "redis"
            data.mkdir(parents=True, exist_ok=True)
            self.redis = RedisServer(directory=data).launch()
            self.redis_url = self.redis.url
            log.info("embedded_redis_started", url=self.redis_url, dir=str(data))
        env = {**os.environ, "BACKTRACK_REDIS_URL": self.redis_url}
        env.update(_settings_env(self.settings))
        out = subprocess.DEVNULL if self.quiet else None
        for name in self.services:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", SERVICES[name]], env=env, stdout=out, stderr=out
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        urls = {
            "ingest": self.ingest_url,
            "prescriber": self.clinic_url,
            "channels": self.channels_url,
        }
        for name in self.services:
            wait_ready(urls[name], self.processes[name], max(deadline - time.monotonic(), 0.0))

    def wait(self) -> int:
        """Block until a service exits (or Ctrl-C); return its exit code."""
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log.error("service_exited", service=name, code=process.returncode)
                    return process.returncode or 1
            time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _settings_env(settings: Settings) -> dict[str, str]:
    fields = (
        "secret",
        "partitions",
        "ingest_port",
        "clinic_port",
        "channels_port",
        "host",
        "environment",
        "webhook_allow_private",
        "claim_idle_ms",
        "webhook_backoff",
        "webhook_timeout",
        "webhook_lease",
        "sse_heartbeat",
        "sse_recheck",
        "encrypt_at_rest",
        "master_key",
        "master_key_file",
        "previous_master_keys",
    )
    values = {name: getattr(settings, name) for name in fields}
    return {f"BACKTRACK_{k.upper()}": _env_value(v) for k, v in values.items() if v is not None}


def _env_value(value: object) -> str:
    """A setting as its environment variable spells it (lists as JSON)."""
    return json.dumps(list(value)) if isinstance(value, tuple) else str(value)

"""Run the ingest API under uvicorn (uvloop + httptools): ``python -m services.logging_svc``.

``BACKTRACK_INGEST_WORKERS`` > 1 runs that many worker processes on one
listening socket; each builds its app from the environment (``worker_app``).
"""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from services.logging_svc.app import create_app
from shared.log import configure_logging
from shared.runtime import tune_gc
from shared.settings import Settings, get_settings


def worker_app() -> FastAPI:
    """The app of one worker process, from the environment (uvicorn ``factory``)."""
    configure_logging()
    app = create_app(get_settings())
    tune_gc()
    return app


def run(settings: Settings) -> None:
    """Serve the ingest API on ``settings.host:settings.ingest_port`` until SIGINT/SIGTERM.

    With ``settings.ingest_workers`` > 1 the workers read their settings from
    the environment, as ``main`` does.
    """
    configure_logging()
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.ingest_port,
        "loop": "uvloop",
        "http": "httptools",
        "log_config": None,  # keep shared.log's configuration
        "access_log": False,  # the app logs one canonical line per request
        "server_header": False,
        "timeout_graceful_shutdown": 10,
    }
    if settings.ingest_workers > 1:
        target = "services.logging_svc.server:worker_app"
        uvicorn.run(target, factory=True, workers=settings.ingest_workers, **options)
    else:
        app = create_app(settings)
        tune_gc()
        uvicorn.run(app, **options)


def main() -> None:
    """Entry point: settings from the environment (BACKTRACK_*)."""
    run(get_settings())

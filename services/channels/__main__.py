"""``python -m services.channels``: webhooks, SSE and subscriptions on BACKTRACK_CHANNELS_PORT."""

from __future__ import annotations

import uvicorn

from services.channels.app import create_app
from services.channels.options import ChannelSettings
from shared.log import configure_logging
from shared.runtime import tune_gc
from shared.settings import load


def main() -> None:
    settings = load(ChannelSettings)
    configure_logging()
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.channels_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()

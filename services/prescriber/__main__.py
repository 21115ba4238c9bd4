"""``python -m services.prescriber``: the prescriber and clinic API on BACKTRACK_CLINIC_PORT."""

from __future__ import annotations

import uvicorn

from services.prescriber.bootstrap import create_app
from shared.log import configure_logging
from shared.runtime import tune_gc
from shared.settings import Settings, load


def main() -> None:
    settings = load(Settings)
    configure_logging()
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.clinic_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,  # one canonical line per unit of work, never query strings
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()

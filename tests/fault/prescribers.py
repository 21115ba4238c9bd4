"""Prescriber processes for the fault tests, started the way production starts them."""

from __future__ import annotations

import os
import subprocess
import sys

from services.cli.stack import wait_ready
from shared.redis_server import free_port


def start_prescriber(
    url: str, partitions: int, *, ready: bool = True, **settings: str
) -> subprocess.Popen[bytes]:
    """``python -m services.prescriber`` on ``url`` with ``BACKTRACK_<NAME>`` settings;
    with ``ready`` returned once it serves, so a kill lands mid-work, not mid-import."""
    port = free_port()
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": url,
        "BACKTRACK_PARTITIONS": str(partitions),
        "BACKTRACK_CLINIC_PORT": str(port),
        **{f"BACKTRACK_{name.upper()}": value for name, value in settings.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services.prescriber"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if ready:
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=60)
    return process

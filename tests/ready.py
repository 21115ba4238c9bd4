"""Waiting for a service process to answer ``/readyz``."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 30
) -> None:
    """Return once ``base_url/readyz`` answers 200; fail if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{base_url}: the process exited ({process.returncode}) on start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{base_url} did not get ready within {timeout:.0f} s")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)

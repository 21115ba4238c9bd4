"""Each service refuses an unsafe configuration at start-up, with a clear message.

The real entry points (``python -m services.<name>``) run as subprocesses with
nothing from the suite's environment but the bad settings: the process must
exit with status 1 and a message naming the variable to change, and never
serve (a service that answers /healthz started, and the test fails at once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from shared.redis_server import free_port

STRONG = "k" * 48
MODULES = {
    "services.logging_svc": "BACKTRACK_INGEST_PORT",
    "services.prescriber": "BACKTRACK_CLINIC_PORT",
    "services.channels": "BACKTRACK_CHANNELS_PORT",
}
UNSAFE = {
    "no environment, development secret": ({}, "BACKTRACK_SECRET is the development secret"),
    "Production, development secret": (
        {"BACKTRACK_ENVIRONMENT": "Production"},
        "BACKTRACK_SECRET is the development secret",
    ),
    "prod, development secret": (
        {"BACKTRACK_ENVIRONMENT": " prod "},
        "BACKTRACK_SECRET is the development secret",
    ),
    "production, 1-character secret": (
        {"BACKTRACK_ENVIRONMENT": "production", "BACKTRACK_SECRET": "x"},
        "BACKTRACK_SECRET is 1 bytes",
    ),
    "production, no master key": (
        {"BACKTRACK_ENVIRONMENT": "production", "BACKTRACK_SECRET": STRONG},
        "BACKTRACK_MASTER_KEY is not set",
    ),
    "production, private webhooks": (
        {
            "BACKTRACK_ENVIRONMENT": "production",
            "BACKTRACK_SECRET": STRONG,
            "BACKTRACK_WEBHOOK_ALLOW_PRIVATE": "1",
        },
        "BACKTRACK_WEBHOOK_ALLOW_PRIVATE",
    ),
}


def _clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKTRACK_")}
    return env | settings


def _outcome(module: str, env: dict[str, str], within: float = 60.0) -> tuple[int, str]:
    """Exit status and stderr of ``python -m module``; fails if it serves /healthz instead."""
    port = free_port()
    env = env | {MODULES[module]: str(port), "BACKTRACK_REDIS_URL": "redis://127.0.0.1:1/0"}
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + within
    try:
        while process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    pytest.fail(f"{module} started and served /healthz")
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{module} neither exited nor served within {within:.0f} s")
            time.sleep(0.1)
        assert process.stderr is not None
        return process.returncode, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.mark.parametrize("case", sorted(UNSAFE))
@pytest.mark.parametrize("module", sorted(MODULES))
def test_unsafe_configuration_is_refused_at_start_up(module: str, case: str) -> None:
    """Exit status 1 and one clear line naming the variable; no traceback, nothing served."""
    settings, message = UNSAFE[case]
    code, stderr = _outcome(module, _clean_env(**settings))
    assert code == 1, stderr
    assert "configuration refused" in stderr
    assert message in stderr
    assert "Traceback" not in stderr

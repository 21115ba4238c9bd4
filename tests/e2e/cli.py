"""The real ``backtrack`` CLI in a process of its own, against a test stack's Redis, secret and
partition count."""

from __future__ import annotations

import os
import subprocess
import sys

from services.cli.stack import Stack
from tests.e2e.conftest import SECRET


def backtrack(stack: Stack, *args: str, stdin: str | None = None) -> str:
    """Run ``backtrack ARGS``; its stdout (the run must succeed)."""
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": stack.redis_url,
        "BACKTRACK_SECRET": SECRET,
        "BACKTRACK_PARTITIONS": str(stack.settings.partitions),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout

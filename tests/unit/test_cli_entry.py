"""The ``backtrack`` command's entry point tunes its process; ``main`` leaves callers' alone."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import pytest

from services.cli.main import main
from shared.runtime import THRESHOLDS

PROBE = """
import gc, json, sys
from services.cli.main import run
sys.argv = ["backtrack", "token", "operator"]
code = run()
print(json.dumps({"code": code, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_the_command_runs_with_the_services_collector_settings() -> None:
    """Replays allocate as the services do, so the command tunes the collector as they do."""
    env = {**os.environ, "BACKTRACK_SECRET": "s"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert tuple(result["threshold"]) == THRESHOLDS
    assert result["frozen"] > 0


def test_main_leaves_the_callers_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKTRACK_SECRET", "s")
    before = gc.get_threshold()
    assert main(["token", "operator"]) == 0
    assert gc.get_threshold() == before

"""The log channel: one structured line per PrescriptionChanged, and no pain scores in it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

from shared import cohort
from shared.redis_server import free_port
from shared.redis_store import connect
from tests.sealed import service_store


def test_one_line_per_change_without_scores(own_redis_server: Any, tmp_path: Any) -> None:
    """Every stored change is logged once at INFO with its ids and version, never a score nor
    the prescription itself (health data)."""
    server = own_redis_server()
    events = [a.event for a in cohort.simulate(2, seed=8)][:80]
    out = tmp_path / "prescriber.log"
    env = {
        **os.environ,
        "BACKTRACK_REDIS_URL": server.url,
        "BACKTRACK_PARTITIONS": "2",
        "BACKTRACK_CLINIC_PORT": str(free_port()),
    }
    with out.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.prescriber"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:

            async def fill() -> int:
                client = connect(server.url)
                store = service_store(client, 2)
                await store.append_many(events)
                deadline = time.monotonic() + 30
                while True:
                    stored = sum(
                        [len(await store.prescriptions(u)) for u in {e.user_id for e in events}]
                    )
                    logged = out.read_text().count('"prescription_changed"')
                    if (stored and logged >= stored) or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                await client.aclose()
                return stored

            stored = asyncio.run(fill())
            # FastStream may log a fetch error while its own shutdown closes a
            # blocked read; what must hold is no error while running
            running = out.read_text()
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    changes = [line for line in lines if line.get("event") == "prescription_changed"]
    assert stored > 0
    assert len(changes) == stored
    assert len({c["event_id"] for c in changes}) == stored
    assert all({"user_id", "version", "caused_by"} <= set(c) for c in changes)
    assert not any({"phase", "change", "exercises"} & set(c) for c in changes)
    before_stop = [json.loads(line) for line in running.splitlines() if line.startswith("{")]
    assert not any(line.get("level") == "error" for line in before_stop)
    text = out.read_text()
    assert '"score"' not in text
    assert '"pain_during"' not in text

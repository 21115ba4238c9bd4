"""What the audit log costs: bytes per entry, entries per clinic-day, a read's latency.

``python -m tests.bench.audit`` starts its own Redis (and a stack on it) and
prints; nothing is asserted.

- Bytes per entry: 100,000 entries (four in five a clinic's, one in five an
  operator's with its token's jti) over 16 partitions, MEMORY USAGE of every
  audit stream (SAMPLES 0: every node counted) over the count.
- Entries per clinic-day: the demo's patients read their prescription
  before each session with their own device token, which is not audited:
  0. Were a clinic to read once for each of its patients' sessions instead:
  the sessions per clinic-day of a ``shared.cohort.simulate`` cohort (200
  patients, seed 2026, 12 weeks), median and busiest.
- Latency: ``GET /v1/users/{user_id}/prescription`` over real HTTP, the
  patient's own device token (not audited) against an operator's (audited;
  neither looks up the user's clinic), interleaved; medians and p90.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import anyio
import httpx

from services.cli.stack import Stack
from shared.audit import AuditLog
from shared.auth import issue
from shared.cohort import simulate
from shared.events import RehabStarted, SessionCompleted
from shared.keys import Keys
from shared.redis_server import free_port
from shared.redis_store import connect
from shared.settings import Settings
from tests.bench.report import NOTES
from tests.redis_server import RedisServer

ENTRIES = 100_000
READS = 400
SECRET = "bench-secret"
LATEST = "GET /v1/users/{user_id}/prescription"


async def _bytes_per_entry(url: str) -> float:
    redis = connect(url)
    keys = Keys(16)
    log = AuditLog(redis, keys, 400)
    for start in range(0, ENTRIES, 1000):
        async with anyio.create_task_group() as group:
            for n in range(start, start + 1000):
                user = f"v2026-{n % 5000:05d}"
                if n % 5:
                    group.start_soon(log.record, "clinic", f"clinic-{n % 7}", LATEST, user)
                else:
                    group.start_soon(log.record, "operator", uuid.uuid4().hex, "export", user)
    used = 0
    for key in keys.audits():
        used += await redis.memory_usage(key, samples=0) or 0
    await redis.aclose()
    return used / ENTRIES


def _sessions_per_clinic_day() -> list[int]:
    clinic_of: dict[str, str] = {}
    days: Counter[tuple[str, str]] = Counter()
    for arrival in simulate(200, seed=2026, weeks=12):
        event = arrival.event
        if isinstance(event, RehabStarted) and event.clinic_id:
            clinic_of[event.user_id] = event.clinic_id
        elif isinstance(event, SessionCompleted) and event.user_id in clinic_of:
            days[(clinic_of[event.user_id], event.occurred_at.date().isoformat())] += 1
    return sorted(days.values())


def _latency(url: str) -> dict[str, list[float]]:
    os.environ["BACKTRACK_RATE_API_DEVICE"] = '{"per_second": 100000, "burst": 100000}'
    os.environ["BACKTRACK_RATE_API_OPERATOR"] = '{"per_second": 100000, "burst": 100000}'
    settings = Settings(
        redis_url=url,
        secret=SECRET,
        environment="test",
        ingest_port=free_port(),
        clinic_port=free_port(),
        channels_port=free_port(),
    )
    timings: dict[str, list[float]] = {"device (not audited)": [], "operator (audited)": []}
    with Stack(settings, quiet=True, services=("ingest", "prescriber")) as stack:
        clinic = {"Authorization": f"Bearer {issue('clinic', 'clinic-b', SECRET)}"}
        reply = httpx.post(
            f"{stack.clinic_url}/v1/enrolments", json={"user_id": "b-1"}, headers=clinic
        )
        device = {"Authorization": f"Bearer {reply.json()['device_token']}"}
        started = {
            "event_id": str(uuid.uuid4()),
            "type": "RehabStarted",
            "user_id": "b-1",
            "occurred_at": datetime.now(UTC).isoformat(),
            "cause": "gradual",
        }
        httpx.post(f"{stack.ingest_url}/v1/events", json=started, headers=device)
        operator = {"Authorization": f"Bearer {issue('operator', None, SECRET)}"}
        with httpx.Client(base_url=stack.clinic_url) as http:
            while http.get("/v1/users/b-1/prescription", headers=device).status_code != 200:
                time.sleep(0.05)
            for _ in range(READS):
                for name, headers in zip(timings, (device, operator), strict=True):
                    began = time.perf_counter()
                    assert (
                        http.get("/v1/users/b-1/prescription", headers=headers).status_code == 200
                    )
                    timings[name].append((time.perf_counter() - began) * 1000)
    return timings


def main() -> None:
    server = RedisServer.start()
    try:
        per_entry = anyio.run(_bytes_per_entry, server.url)
        print(f"bytes per audit entry: {per_entry:.0f} (MEMORY USAGE of {ENTRIES:,} entries)")
        NOTES.append(f"audit log: {per_entry:.0f} B per entry (MEMORY USAGE of {ENTRIES:,})")
        days = _sessions_per_clinic_day()
        print(
            "entries per clinic-day, demo's pattern (device reads): 0; "
            f"a clinic reading for each session: median {statistics.median(days):.0f}, "
            f"busiest {days[-1]} ({len(days)} clinic-days)"
        )
        for name, ms in _latency(server.url).items():
            q = statistics.quantiles(ms, n=10)
            median = statistics.median(ms)
            print(f"prescription read, {name}: median {median:.2f} ms, p90 {q[-1]:.2f} ms")
            NOTES.append(f"prescription read over HTTP, {name}: median {median:.2f} ms")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

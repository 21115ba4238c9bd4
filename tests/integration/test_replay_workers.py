"""Replays split between worker processes answer as one process does, on real Redis."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.cli import replay as cli_replay
from services.cli.main import main
from services.replay import asof, scan
from services.replay.workers import Job, in_workers, shares
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from tests.integration.replay_fixtures import arrivals, run_live

AT = datetime(2030, 1, 1, tzinfo=UTC)


def _seed(url: str) -> list[str]:
    """A cohort processed live; its users in the tools' order."""

    async def go() -> list[str]:
        client = connect(url)
        try:
            await run_live(RedisStore(client, partitions=16), arrivals(patients=40, weeks=4))
            return await scan.user_ids(client, Keys(16))
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_shares_deal_every_user_once() -> None:
    users = [f"u{i}" for i in range(10)]
    assert shares(users, 3) == [users[0::3], users[1::3], users[2::3]]
    assert shares(users[:2], 4) == [["u0"], ["u1"]]
    assert shares([], 2) == [[]]


def test_what_if_in_two_workers_reports_what_one_process_reports(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--workers 2`` runs two processes and finds the same differences, in the same order."""
    _seed(redis_url)
    runs: list[int] = []

    def spy(job: Job, users: Any, workers: int, on_progress: Any = None) -> list[Any]:
        runs.append(workers)
        return in_workers(job, users, workers, on_progress)

    monkeypatch.setattr(cli_replay, "in_workers", spy)
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"whatif-{workers}.json"
        argv = ["replay", "what-if", "--set", "progress_greens=4", "--redis-url", redis_url]
        assert main([*argv, "--workers", workers, "--out", str(out)]) == 0
        outputs.append(json.loads(out.read_text()))
    assert outputs[0]  # the changed rule does move some prescriptions
    assert outputs[1] == outputs[0]
    assert runs == [2]


def test_as_of_in_workers_counts_what_one_process_counts(redis_url: str) -> None:
    users = _seed(redis_url)
    progress: list[tuple[int, int]] = []

    async def alone() -> tuple[dict[str, int], int]:
        client = connect(redis_url)
        try:
            counts = await asof.phases_as_of(client, Keys(16), AT, users)
            return counts, await scan.total_events(client, Keys(16), users)
        finally:
            await client.aclose()

    expected, events = asyncio.run(alone())
    job = Job(asof.phases_as_of, redis_url, 16, AT)
    answers = in_workers(job, users, 3, lambda u, e: progress.append((u, e)))
    assert len(answers) == 3
    merged: dict[str, int] = {}
    for answer in answers:
        for phase, n in answer.items():
            merged[phase] = merged.get(phase, 0) + n
    assert merged == expected
    assert sum(u for u, _ in progress) == len(users)
    assert sum(e for _, e in progress) == events


async def _fails(
    redis: Redis, keys: Keys, argument: Any, users: Any, report: Any, **_: Any
) -> None:
    raise ValueError(f"no replay today ({argument})")


def test_a_failing_worker_fails_the_run(redis_url: str) -> None:
    with pytest.raises(RuntimeError, match="ValueError: no replay today"):
        in_workers(Job(_fails, redis_url, 16, "x"), ["a", "b"], 2)


def test_workers_must_be_a_small_positive_number(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "65", "two"):
        with pytest.raises(SystemExit):
            main(["replay", "what-if", "--workers", bad])
    assert "--workers" in capsys.readouterr().err

"""Replay progress on /metrics: the CLI's --metrics-port, scraped over HTTP, on real Redis."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis as SyncRedis

from services.cli.main import main
from services.replay import metrics, scan
from shared.redis_server import free_port
from shared.redis_store import RedisStore, connect
from tests.integration.replay_fixtures import arrivals, run_live

#: More patients than one group of 64 users: a run reports progress more than once.
PATIENTS = 70
WEEKS = 3

Scrape = dict[str, float]


def _seed(url: str) -> tuple[int, int]:
    """Process a cohort live; (users, events) stored, counted from the cohort itself."""
    events = arrivals(patients=PATIENTS, weeks=WEEKS)

    async def go() -> None:
        client = connect(url)
        try:
            await run_live(RedisStore(client, partitions=16), events)
        finally:
            await client.aclose()

    asyncio.run(go())
    return len({e.user_id for e in events}), len(events)


def _scrape(port: int, command: str) -> Scrape:
    """The backtrack_replay_* samples served on ``port``, by name; all labelled ``command``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = [
        sample
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("backtrack_replay_") and not sample.name.endswith("_created")
    ]
    assert all(sample.labels == {"command": command} for sample in samples)
    return {sample.name: sample.value for sample in samples}


def _scrape_between_groups(
    monkeypatch: pytest.MonkeyPatch, port: int, command: str
) -> list[Scrape]:
    """Scrape before each group of histories reaches the run, and once after the last."""
    scrapes: list[Scrape] = []
    real = scan.stream_histories

    async def watched(*args: Any, **kwargs: Any) -> AsyncIterator[list[scan.UserLog]]:
        async for logs in real(*args, **kwargs):
            scrapes.append(_scrape(port, command))
            yield logs
        scrapes.append(_scrape(port, command))

    monkeypatch.setattr(scan, "stream_histories", watched)
    return scrapes


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _check_progress(scrapes: Sequence[Scrape], users: int, events: int) -> None:
    """Expected totals from the start, counters rising group by group to exactly them."""
    assert len(scrapes) >= 3  # two groups or more, then the end
    first, last = scrapes[0], scrapes[-1]
    assert first["backtrack_replay_users_expected"] == users
    assert first["backtrack_replay_events_expected"] == events
    assert first["backtrack_replay_users_total"] == first["backtrack_replay_events_total"] == 0
    assert first["backtrack_replay_started_timestamp_seconds"] > 0
    done = [s["backtrack_replay_events_total"] for s in scrapes]
    assert done == sorted(done)
    assert 0 < done[1] < events
    assert last["backtrack_replay_users_total"] == users
    assert last["backtrack_replay_events_total"] == events
    assert last["backtrack_replay_events_expected"] == events


def test_rebuild_serves_its_progress_while_it_runs(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay rebuild --all --metrics-port P` serves counters that reach the users and events."""
    users, events = _seed(redis_url)
    port = free_port()
    scrapes = _scrape_between_groups(monkeypatch, port, "rebuild")
    argv = ["replay", "rebuild", "--all", "--redis-url", redis_url, "--metrics-port", str(port)]
    assert main(argv) == 0
    _check_progress(scrapes, users, events)
    assert not _listening(port)  # the endpoint ends with the command


def test_what_if_serves_progress_on_the_port_from_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BACKTRACK_REPLAY_METRICS_PORT does what --metrics-port does, here for what-if."""
    users, events = _seed(redis_url)
    port = free_port()
    monkeypatch.setenv("BACKTRACK_REPLAY_METRICS_PORT", str(port))
    scrapes = _scrape_between_groups(monkeypatch, port, "what-if")
    assert main(["replay", "what-if", "--set", "progress_greens=4", "--redis-url", redis_url]) == 0
    _check_progress(scrapes, users, events)
    assert not _listening(port)


def test_as_of_over_every_user_serves_its_progress(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`replay as-of TIME --metrics-port P` (every user) counts every history it folds."""
    users, events = _seed(redis_url)
    port = free_port()
    scrapes = _scrape_between_groups(monkeypatch, port, "as-of")
    argv = ["replay", "as-of", "2030-01-01", "--redis-url", redis_url, "--metrics-port", str(port)]
    assert main(argv) == 0
    _check_progress(scrapes, users, events)


def test_without_a_port_nothing_is_served(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither the flag nor the setting, a replay starts no HTTP server."""
    monkeypatch.delenv("BACKTRACK_REPLAY_METRICS_PORT", raising=False)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("a metrics server was started")

    monkeypatch.setattr(metrics, "start_http_server", refuse)
    assert main(["replay", "rebuild", "--all", "--redis-url", redis_url]) == 0
    assert main(["replay", "what-if", "--redis-url", redis_url]) == 0


def test_a_taken_port_stops_the_rebuild_before_it_starts(redis_url: str) -> None:
    """A port already in use ends the command with a message naming it; nothing is written."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["replay", "rebuild", "--all", "--redis-url", redis_url, "--metrics-port", str(port)]
        with pytest.raises(SystemExit, match=f"port {port}"):
            main(argv)
    with SyncRedis.from_url(redis_url) as client:
        assert client.dbsize() == 0  # a rebuild that started would have recorded itself


def test_metrics_port_is_refused_for_one_user_as_of() -> None:
    """as-of --user reads one history: --metrics-port with it is a usage error."""
    with pytest.raises(SystemExit) as exit_:
        main(["replay", "as-of", "2030-01-01", "--user", "u1", "--metrics-port", "9100"])
    assert exit_.value.code == 2

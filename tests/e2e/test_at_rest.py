"""Health data at rest: nothing of a patient's events is readable in Redis or its AOF,
and after ``backtrack erase`` nothing of them can be read at all.

A whole stack (ingest, prescriber, channels) on a Redis of its own with AOF on.
A clinic enrols a patient whose device posts a distinctive run of pain scores
and whose clinician writes a note carrying a marker, and a second patient; a
webhook subscription to an endpoint that refuses every connection keeps the
patients' changes queued. Once the prescriber has caught up, every key's DUMP
and every AOF file hold the patient's id (the readable envelope: proof the
data got there) and none of the marker, the note, or any score.

Then the real CLI erases the patient and Redis rewrites its AOF: no key names
the patient but the erasure record and the queued ``PatientErased`` notice,
the old AOF's entries of theirs no longer open (their key is gone from Redis
and from the rewritten AOF), and the other patient's prescriptions, a rebuild
and a what-if are as they were.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hiredis
import httpx
import pytest
import redis

from services.cli.stack import Stack
from shared import sealing
from shared.auth import issue
from shared.data_keys import DataKeys
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.redis_server import free_port
from shared.redis_store import connect
from shared.settings import Settings
from tests.e2e.cli import backtrack
from tests.e2e.conftest import SECRET, stack_settings
from tests.redis_server import RedisServer

CLINIC, USER, OTHER = "clinic-rest", "rest-patient-5c1e", "rest-other-77d0"
MARKER = "zebra-marker-8e41"
NOTE = f"flare after moving house; {MARKER}; sleeps on the sofa"
#: a run no two events share: 9, 1, 8, 2, 7, 3, 6, 4, 5, 0
SCORES = [9, 1, 8, 2, 7, 3, 6, 4, 5, 0]
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=15)
Headers = dict[str, str]


def _auth(token: str) -> Headers:
    return {"Authorization": f"Bearer {token}"}


def _event(kind: str, day: float, user: str = USER, **fields: Any) -> dict[str, Any]:
    at = (T0 + timedelta(days=day)).isoformat()
    return {"event_id": str(uuid.uuid4()), "type": kind, "user_id": user, "occurred_at": at} | (
        fields
    )


@pytest.fixture
def sealed_stack(own_redis_server: Callable[..., RedisServer]) -> Iterator[tuple[Stack, Path]]:
    """The three services on a Redis of their own (AOF on); yields it and the AOF directory."""
    server = own_redis_server()
    settings = stack_settings(server.url, webhook_allow_private=True)
    with Stack(settings, quiet=True) as running:
        yield running, server.directory


def _caught_up(stack: Stack, within: float = 30) -> None:
    keys = Keys(stack.settings.partitions)
    deadline = time.monotonic() + within
    with redis.Redis.from_url(stack.redis_url) as client:
        while any(
            group["lag"] or group["pending"]
            for feed in keys.feeds()
            for group in client.xinfo_groups(feed)
            if group["name"] == PRESCRIBER_GROUP.encode()
        ):
            assert time.monotonic() < deadline, "the prescriber did not catch up"
            time.sleep(0.05)


def _post(stack: Stack, events: list[dict[str, Any]], headers: Headers) -> None:
    url = f"{stack.ingest_url}/v1/events/batch"
    reply = httpx.post(url, json={"events": events}, headers=headers, timeout=10)
    assert reply.status_code == 202, reply.text


def _wait_queued(stack: Stack, within: float = 20) -> None:
    """Until a webhook queue holds one of the patient's changes."""
    deadline = time.monotonic() + within
    with redis.Redis.from_url(stack.redis_url) as client:
        while not list(client.scan_iter(match=f"bt:{{wh}}:q:*:{USER}")):
            assert time.monotonic() < deadline, "no change was queued for the webhook"
            time.sleep(0.05)


def _enrol(stack: Stack, user: str, clinic: Headers) -> Headers:
    reply = httpx.post(f"{stack.clinic_url}/v1/enrolments", json={"user_id": user}, headers=clinic)
    assert reply.status_code == 201, reply.text
    return _auth(reply.json()["device_token"])


def _plant(stack: Stack) -> None:
    """A subscription that never answers, the marked patient and another one, processed."""
    clinic = _auth(issue("clinic", CLINIC, SECRET))
    hook = {"url": f"http://127.0.0.1:{free_port()}/hook"}  # nothing listens: stays queued
    reply = httpx.post(f"{stack.channels_url}/v1/subscriptions", json=hook, headers=clinic)
    assert reply.status_code == 201, reply.text
    for user in (USER, OTHER):
        events = [_event("RehabStarted", 0, user, cause="gradual", clinic_id=CLINIC)]
        events += [
            _event("PainLogged", 1 + i, user, score=score, context="baseline")
            for i, score in enumerate(SCORES if user == USER else [2] * len(SCORES))
        ]
        _post(stack, events, _enrol(stack, user, clinic))
    _post(stack, [_event("ClinicianReviewed", 12, action="hold", note=NOTE)], clinic)
    _caught_up(stack)
    _wait_queued(stack)
    time.sleep(1.5)  # appendfsync everysec: what is written reaches the file within a second


def _aof(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*.aof")))


def _commands(aof: bytes) -> list[list[bytes]]:
    """Every command an AOF holds (RESP arrays)."""
    reader = hiredis.Reader()
    reader.feed(aof)
    out: list[list[bytes]] = []
    while (command := reader.gets()) is not False:
        out.append(command)
    return out


def _prescriptions(stack: Stack, user: str) -> Any:
    url = f"{stack.clinic_url}/v1/users/{user}/prescriptions"
    return httpx.get(url, headers=_auth(issue("operator", None, SECRET)), timeout=10)


def _what_if(stack: Stack, out: Path) -> tuple[str, list[str]]:
    """What a what-if over everyone says (its summary line) and the rows it writes."""
    shown = backtrack(stack, "replay", "what-if", "--set", "flare_jump=9", "--out", str(out))
    summary = next(line.strip() for line in shown.splitlines() if "would differ" in line)
    return summary, sorted(out.read_text().splitlines()[1:])


def test_no_plaintext_at_rest_and_nothing_readable_after_erasure(
    sealed_stack: tuple[Stack, Path], tmp_path: Path
) -> None:
    stack, directory = sealed_stack
    _plant(stack)
    with redis.Redis.from_url(stack.redis_url) as client:
        dumps = {key: client.dump(key) or b"" for key in client.scan_iter(count=1000)}
    named = [key for key, value in dumps.items() if USER.encode() in key + value]
    assert any(b":user:" in key for key in named), "the patient's history is in Redis"
    assert any(b":q:" in key for key in named), "a webhook queue holds the patient's change"
    for key, value in dumps.items():
        assert MARKER.encode() not in value, key
        assert b"sofa" not in value, key
        assert b'"score"' not in value, key
        assert b'"note"' not in value, key
    old_aof = _aof(directory)
    assert USER.encode() in old_aof, "the patient's entries reached the AOF"
    assert MARKER.encode() not in old_aof
    assert b'"score"' not in old_aof
    assert b'"note"' not in old_aof

    other_before = _prescriptions(stack, OTHER).json()
    what_if_before = _what_if(stack, tmp_path / "before.csv")
    assert what_if_before[0].endswith("of 2 users would differ")
    history = [
        c for c in _commands(old_aof) if c[0].upper() == b"XADD" and c[1].endswith(USER.encode())
    ]
    # the patient's history (intake, scores, review) and their prescription changes
    assert len(history) > len(SCORES) + 2, "the old AOF holds the patient's streams"
    assert asyncio.run(_still_open(stack, [_fields(c) for c in history])) == len(history)
    backtrack(stack, "erase", "--user", USER, "--yes")
    with redis.Redis.from_url(stack.redis_url) as client:
        client.bgrewriteaof()
        while (
            client.info("persistence")["aof_rewrite_in_progress"]
            or client.info("persistence")["aof_rewrite_scheduled"]
        ):
            time.sleep(0.05)
        time.sleep(1.5)
        left = {key: client.type(key) for key in client.scan_iter(match=f"*{USER}*")}
        notices = [client.lrange(key, 0, -1) for key, kind in left.items() if b":q:" in key]
    assert {key for key in left if b":q:" not in key} == {
        f"bt:{{p{Keys(stack.settings.partitions).partition(USER):02d}}}:erased:{USER}".encode()
    }
    assert all(b'"type":"PatientErased"' in item for items in notices for item in items)
    new_aof = _aof(directory)
    assert f"dek:{USER}".encode() not in new_aof, "the rewritten AOF holds no key of theirs"
    assert asyncio.run(_still_open(stack, [_fields(c) for c in history])) == 0

    assert _prescriptions(stack, USER).status_code == 404
    for command in ("export", "history"):
        refused = _cli(stack, command, "--user" if command == "export" else "", USER)
        assert refused.returncode == 1
        assert f"{USER} was erased" in refused.stdout + refused.stderr
    assert _prescriptions(stack, OTHER).json() == other_before
    backtrack(stack, "replay", "rebuild", "--all")
    assert _prescriptions(stack, OTHER).json() == other_before
    what_if_after = _what_if(stack, tmp_path / "after.csv")
    assert what_if_after[0].endswith("of 1 users would differ")  # the erased one is skipped
    assert what_if_after[1] == [r for r in what_if_before[1] if not r.startswith(f"{USER},")]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``backtrack ARGS`` (empty ones left out), whatever its exit status."""
    env = {**os.environ, "BACKTRACK_REDIS_URL": stack.redis_url, "BACKTRACK_SECRET": SECRET}
    env["BACKTRACK_PARTITIONS"] = str(stack.settings.partitions)
    command = [sys.executable, "-m", "services.cli.main", *(a for a in args if a)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)


def _fields(command: list[bytes]) -> dict[bytes, bytes]:
    """The fields of an ``XADD key [options] id field value ...`` as the AOF holds it."""
    args = command[2:]
    at = next(i for i, arg in enumerate(args) if b"-" in arg and arg[:1].isdigit())
    flat = args[at + 1 :]
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def _still_open(stack: Stack, entries: list[dict[bytes, bytes]]) -> int:
    """How many of ``entries`` open with what Redis holds now (the master key included)."""
    client = connect(stack.redis_url)
    try:
        keys = DataKeys(client, Keys(stack.settings.partitions), Settings().master_keys())
        opened = await keys.open_many(entries)
    finally:
        await client.aclose()
    assert all(sealing.is_sealed(entry) for entry in entries)
    return sum(not isinstance(item, Exception) for item in opened)

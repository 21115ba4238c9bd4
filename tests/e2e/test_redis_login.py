"""The whole stack runs on the Redis as shipped: logged in, no dangerous command, bt:* keys.

Ingest, prescriber and channels (real processes) get the services' user and
password in BACKTRACK_REDIS_URL, against the deploy/redis profile started by
its ``redis-start.sh``; an event posted over HTTP comes out as a
prescription and as a signed webhook.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.stack import Stack
from shared.auth import issue
from tests.e2e.conftest import SECRET, stack_settings
from tests.shipped_redis import USER, shipped
from tests.webhook_receiver import Receiver, receiver_factory

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiver_factory() as start:
        yield start()


def _auth(role: str, subject: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(role, subject, SECRET)}"}  # type: ignore[arg-type]


def _started(user: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "RehabStarted",
        "user_id": user,
        "occurred_at": T0.isoformat(),
        "onset_date": (T0.date() - timedelta(days=10)).isoformat(),
        "cause": "gradual",
        "clinic_id": "clinic-a",
    }


def test_the_stack_runs_logged_in_to_the_shipped_redis(tmp_path: Path, receiver: Receiver) -> None:
    """Event in, prescription and webhook out, with the services' user and nothing more."""
    password = secrets.token_hex(32)
    with shipped("everysec", tmp_path, password) as port:
        settings = stack_settings(
            f"redis://{USER}:{password}@127.0.0.1:{port}/0", webhook_allow_private=True
        )
        with Stack(settings, quiet=True) as stack:
            clinic, operator = _auth("clinic", "clinic-a"), _auth("operator", None)
            made = httpx.post(
                f"{stack.channels_url}/v1/subscriptions", json={"url": receiver.url}, headers=clinic
            )
            assert made.status_code == 201, made.text
            receiver.secret = made.json()["secret"]
            event = _started("acl-1")
            sent = httpx.post(f"{stack.ingest_url}/v1/events", json=event, headers=operator)
            assert sent.status_code == 202, sent.text
            receiver.wait(lambda r: len(r.delivered()) == 1, timeout=30)
            reply = httpx.get(f"{stack.clinic_url}/v1/users/acl-1/prescription", headers=operator)
    assert reply.status_code == 200
    assert reply.json()["version"] == 1
    (delivered,) = receiver.delivered()
    assert delivered.verified
    assert delivered.body["user_id"] == "acl-1"

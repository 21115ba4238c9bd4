"""Revocation over real HTTP: `backtrack token revoke` reaches ingest, clinic and channels in 5 s.

The stack runs as real processes on a real Redis; tokens are minted,
inspected and revoked by the real CLI in a process of its own. Each wait
polls for the 401 and fails if it has not come 5 s after the CLI returned
(the contract); the time it took is printed.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import redis

from services.cli.stack import Stack
from shared.auth import issue, key_id, payload_of
from shared.keys import REVOCATIONS
from tests.e2e.cli import backtrack as cli
from tests.e2e.conftest import SECRET
from tests.unit.test_token_rotation import sign

PORTS = ("ingest", "clinic", "channels")
CONTRACT_SECONDS = 5.0


def jti_of(stack: Stack, token: str) -> str:
    shown = json.loads(cli(stack, "token", "inspect", stdin=token))
    assert shown["verifies"] is True
    jti: str = shown["jti"]
    return jti


def status(stack: Stack, port: str, token: str, user: str) -> int:
    """What ``port`` answers ``token`` on a request about ``user`` (401: the token is refused)."""
    headers = {"Authorization": f"Bearer {token}"}
    if port == "ingest":
        event = {
            "event_id": str(uuid.uuid4()),
            "type": "PainLogged",
            "user_id": user,
            "occurred_at": datetime.now(UTC).isoformat(),
            "score": 3,
            "context": "morning",
        }
        return httpx.post(f"{stack.ingest_url}/v1/events", json=event, headers=headers).status_code
    if port == "clinic":
        url = f"{stack.clinic_url}/v1/users/{user}/prescriptions"
        return httpx.get(url, headers=headers).status_code
    url = f"{stack.channels_url}/v1/users/{user}/prescriptions/stream"
    with httpx.stream("GET", url, headers=headers, timeout=10) as reply:
        return reply.status_code


def accepted(stack: Stack, token: str, user: str) -> dict[str, int]:
    """The answers of every port, each asserted not to be 401."""
    answers = {port: status(stack, port, token, user) for port in PORTS}
    assert 401 not in answers.values(), answers
    return answers


def wait_refused(stack: Stack, tokens: dict[str, str], since: float) -> float:
    """Poll every port with every token (name -> token, for user ``name``) until all answer 401.

    Fails if that has not happened ``CONTRACT_SECONDS`` after ``since``; the seconds it took.
    """
    pending = {(port, user) for port in PORTS for user in tokens}
    while pending:
        pending = {(p, u) for p, u in pending if status(stack, p, tokens[u], u) != 401}
        elapsed = time.monotonic() - since
        assert elapsed <= CONTRACT_SECONDS or not pending, f"still accepted: {sorted(pending)}"
        if pending:
            time.sleep(0.05)
    return time.monotonic() - since


def test_a_token_revoked_by_jti_gets_401_on_every_port_within_5_s(stack: Stack) -> None:
    """`token revoke --jti` refuses that token on ingest, clinic and channels; its twin works."""
    token = cli(stack, "token", "device", "--user", "rv-jti").strip()
    twin = cli(stack, "token", "device", "--user", "rv-jti").strip()
    accepted(stack, token, "rv-jti")
    accepted(stack, twin, "rv-jti")
    said = cli(stack, "token", "revoke", "--jti", jti_of(stack, token))
    took = wait_refused(stack, {"rv-jti": token}, time.monotonic())
    print(f"jti revocation in force on all three ports {took:.2f} s after the CLI returned")
    assert said.startswith(f"revoked token jti {jti_of(stack, token)}")
    assert accepted(stack, twin, "rv-jti") == {"ingest": 202, "clinic": 200, "channels": 200}


def test_revoking_a_subject_revokes_its_older_tokens_and_not_a_later_one(stack: Stack) -> None:
    """Every token of the user issued before the revocation is refused; one minted after works."""
    first = cli(stack, "token", "device", "--user", "rv-subj").strip()
    second = issue("device", "rv-subj", SECRET, now=time.time() - 3600)
    bystander = cli(stack, "token", "device", "--user", "rv-other").strip()
    clinic = cli(stack, "token", "clinic", "--clinic", "rv-subj").strip()
    for token in (first, second):
        accepted(stack, token, "rv-subj")
    said = cli(stack, "token", "revoke", "--subject", "rv-subj", "--role", "device")
    since = time.monotonic()
    assert said.startswith("revoked device tokens of rv-subj issued at or before")
    took = wait_refused(stack, {"rv-subj": first}, since)
    wait_refused(stack, {"rv-subj": second}, since)
    print(f"subject revocation in force on all three ports {took:.2f} s after the CLI returned")
    with redis.Redis.from_url(stack.redis_url) as client:
        ((_, record),) = client.xrevrange(REVOCATIONS, count=1)
    later = cli(stack, "token", "device", "--user", "rv-subj").strip()  # the same second, maybe
    assert payload_of(later)["iat"] > float(record[b"at"])
    assert accepted(stack, later, "rv-subj") == {"ingest": 202, "clinic": 200, "channels": 200}
    assert accepted(stack, bystander, "rv-other")["ingest"] == 202
    assert set(accepted(stack, clinic, "rv-subj").values()) == {403}  # known, not its patient


def test_a_token_living_longer_than_its_role_allows_is_refused_everywhere(stack: Stack) -> None:
    """A 10-year operator token signed with the secret (as an older CLI minted it) is 401."""
    now = int(time.time())
    claims = {"role": "operator", "sub": None, "iat": now, "exp": now + 315_360_000, "jti": "ten"}
    for token in (sign(claims, SECRET, kid=None), sign(claims, SECRET, key_id(SECRET))):
        assert {port: status(stack, port, token, "rv-long") for port in PORTS} == dict.fromkeys(
            PORTS, 401
        )
    accepted(stack, issue("operator", None, SECRET), "rv-long")

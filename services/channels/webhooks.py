"""Standard Webhooks 1.0: secrets, signatures and one delivery attempt.

Signature: ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` where
``key`` is the base64-decoded part of the secret after ``whsec_``. The
``webhook-id`` is the change's event_id, stable across retries, so receivers
dedupe on it; the timestamp is the attempt's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import httpx

from services.channels.egress import send
from services.channels.url_safety import UnsafeUrl, check_url

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh ``whsec_`` secret with 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one message."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of a delivery: the three Standard Webhooks ones and the content type."""
    return {
        "content-type": "application/json",
        "user-agent": "backtrack-webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
    }


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST did: ``status`` is the HTTP code, or 0 if none came back."""

    status: int
    latency_ms: int
    error: str

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410


async def post(
    client: httpx.AsyncClient,
    url: str,
    secret: str,
    msg_id: str,
    body: bytes,
    *,
    allow_private: bool,
    https_only: bool = False,
) -> Attempt:
    """POST one signed delivery; never raises for network or endpoint failures.

    The URL is checked again (one lookup) and the request goes to an address
    that check accepted; a refused URL is an attempt with status 0 and an
    ``unsafe url`` error, and nothing is sent.
    """
    started = time.perf_counter()

    def done(status: int, error: str) -> Attempt:
        return Attempt(status, round((time.perf_counter() - started) * 1000), error[:500])

    try:
        target = await check_url(url, allow_private=allow_private, https_only=https_only)
        reply = await send(client, target, body, headers(secret, msg_id, int(time.time()), body))
    except UnsafeUrl as exc:
        return done(0, f"unsafe url: {exc}")
    except httpx.TimeoutException as exc:
        return done(0, f"timeout: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return done(0, f"{type(exc).__name__}: {exc}")
    return done(reply.status_code, "" if reply.is_success else f"HTTP {reply.status_code}")


__all__ = ["SECRET_PREFIX", "Attempt", "headers", "new_secret", "post", "sign"]

"""Pure parts of the channels: signing, URL safety, backoff, the subscription fold."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.channels.dispatcher import backoff
from services.channels.options import DEFAULT_BACKOFF
from services.channels.subscriptions import (
    SubscriptionCreated,
    SubscriptionDeleted,
    SubscriptionDisabled,
    replay,
)
from services.channels.url_safety import UnsafeUrl, check_address, check_shape
from services.channels.webhooks import headers, new_secret

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_signatures_verify_with_the_standardwebhooks_package() -> None:
    """Our headers pass the reference implementation; a tampered body does not."""
    secret, body = new_secret(), b'{"type":"PrescriptionChanged","version":1}'
    sent = headers(secret, "0b6d6c1e-0000-4000-8000-000000000001", int(time.time()), body)
    assert Webhook(secret).verify(body, sent) == {"type": "PrescriptionChanged", "version": 1}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"1", b"2"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, sent)


def test_secrets_carry_32_random_bytes() -> None:
    """A secret is whsec_ plus base64 of 32 bytes, and never repeats."""
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.8",
        "172.16.3.4",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fd00:ec2::254",
        "fe80::1",
        "0.0.0.0",
        "224.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    """Loopback, private, link-local, metadata, multicast and unspecified addresses are refused."""
    with pytest.raises(UnsafeUrl):
        check_address(address)


def test_public_addresses_pass() -> None:
    """Ordinary public unicast addresses are accepted."""
    check_address("93.184.216.34")
    check_address("2606:2800:220:1:248:1893:25c8:1946")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "https://user:pw@example.com/h",
        "http:///nohost",
        "file:///etc/passwd",
        "http://example.com:99999/h",
    ],
)
def test_malformed_or_foreign_urls_are_refused(url: str) -> None:
    """Only http(s) URLs with a host and no credentials are accepted."""
    with pytest.raises(UnsafeUrl):
        check_shape(url)


def test_https_only_refuses_plain_http() -> None:
    """In production plain http is refused."""
    assert check_shape("https://hooks.example.com/bt", https_only=True) == "hooks.example.com"
    with pytest.raises(UnsafeUrl):
        check_shape("http://hooks.example.com/bt", https_only=True)


def test_backoff_follows_the_schedule_then_gives_up() -> None:
    """Failure n waits schedule[n-1] (+-jitter); after the last step it gives up."""
    assert [backoff(DEFAULT_BACKOFF, n, 0.1, 0.5) for n in range(1, 7)] == list(DEFAULT_BACKOFF)
    assert backoff(DEFAULT_BACKOFF, 7, 0.1, 0.5) is None
    low, high = backoff((100.0,), 1, 0.1, 0.0), backoff((100.0,), 1, 0.1, 0.999999)
    assert low == pytest.approx(90.0)
    assert high == pytest.approx(110.0, abs=1e-3)
    assert 17 * 3600 < sum(DEFAULT_BACKOFF) < 24 * 3600


def _created(sub_id: str = "s1", users: tuple[str, ...] | None = None) -> SubscriptionCreated:
    return SubscriptionCreated(
        sub_id=sub_id,
        clinic_id="c1",
        url="https://h.example/x",
        user_ids=users,
        secret="whsec_AAAA",
        occurred_at=NOW,
    )


def test_fold_tracks_status_and_ignores_later_changes_to_ended_subscriptions() -> None:
    """Deleted stays deleted (a later 410 does not revive or relabel it); others stay active."""
    subs = replay(
        [
            ("1000-0", _created("s1")),
            ("1001-0", _created("s2", ("u1",))),
            ("1002-0", SubscriptionDeleted(sub_id="s1", occurred_at=NOW)),
            ("1003-0", SubscriptionDisabled(sub_id="s1", reason="410", occurred_at=NOW)),
            ("1004-0", SubscriptionDisabled(sub_id="unknown", reason="410", occurred_at=NOW)),
        ]
    )
    assert subs["s1"].status == "deleted"
    assert subs["s2"].status == "active"
    assert subs["s2"].created_ms == 1001
    assert "unknown" not in subs


def test_matching_uses_clinic_users_and_creation_time() -> None:
    """A change matches when the user is enrolled with the clinic, listed (or all) and fed later."""
    everyone = replay([("1000-0", _created("a"))])["a"]
    listed = replay([("1000-0", _created("b", ("u1",)))])["b"]
    assert everyone.matches("anyone", "c1", 1000)
    assert not everyone.matches("anyone", "c2", 1000)
    assert not everyone.matches("anyone", None, 1000)
    assert not everyone.matches("anyone", "c1", 999)
    assert listed.matches("u1", "c1", 2000)
    assert not listed.matches("u2", "c1", 2000)

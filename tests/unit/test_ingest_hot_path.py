"""The ingest hot path's shortcuts answer exactly as the slow paths they replace."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from services.logging_svc.redis_wire import HiredisPackingConnection, connection_options
from shared.auth import InvalidToken, Principal, Verifier, issue, verify

SECRET = "test-secret"
NOW = 1_800_000_000.0


def test_verifier_answers_as_verify_and_remembers_accepted_tokens() -> None:
    """A remembered token gives the same principal as a fresh check; bad tokens are not kept."""
    token = issue("device", "p-0001", SECRET, ttl_seconds=60, now=NOW)
    check = Verifier(SECRET)
    assert check(token, now=NOW + 1) == verify(token, SECRET, now=NOW + 1)
    assert check(token, now=NOW + 2) == Principal("device", "p-0001")
    with pytest.raises(InvalidToken, match="unknown key id"):
        check(issue("operator", None, "other-secret", now=NOW), now=NOW + 1)
    assert list(check._known) == [token]


def test_verifier_refuses_a_remembered_token_once_expired() -> None:
    """Remembering a token never extends its life: at exp it is refused as by verify."""
    token = issue("operator", None, SECRET, ttl_seconds=60, now=NOW)
    check = Verifier(SECRET)
    check(token, now=NOW)
    with pytest.raises(InvalidToken, match="expired"):
        check(token, now=NOW + 60)


def test_verifier_forgets_the_least_recently_used_token_past_its_size() -> None:
    """The cache is bounded: the least recently used token goes first."""
    first, second, third = (issue("device", f"u{i}", SECRET, now=NOW) for i in range(3))
    check = Verifier(SECRET, size=2)
    for token in (first, second, first, third):
        check(token, now=NOW)
    assert list(check._known) == [first, third]


@pytest.mark.parametrize(
    "args",
    [
        ("EVALSHA", "abc", 4, "k1", "k2", "k3", "k4", 604800, "data", b'{"x": "\xc3\xa9"}', ""),
        ("CONFIG GET", "maxmemory"),
        (b"SCRIPT LOAD", "return 1"),
        ("SET", "k", 1.5),
        ("SET", "é", memoryview(b"v")),
    ],
)
def test_hiredis_packing_puts_the_same_bytes_on_the_wire(args: tuple[object, ...]) -> None:
    """hiredis packs every command exactly as redis-py's Python packer does."""
    ours = b"".join(HiredisPackingConnection().pack_command(*args))
    theirs = b"".join(bytes(part) for part in Connection().pack_command(*args))
    assert ours == theirs


def test_hiredis_packing_only_on_plain_tcp_urls() -> None:
    """TLS, unix sockets and cluster URLs keep redis-py's own connection classes."""
    assert connection_options("redis://localhost:6379/0")
    for url in ("rediss://h:6380", "unix:///tmp/r.sock", "redis+cluster://h:7000"):
        assert connection_options(url) == {}

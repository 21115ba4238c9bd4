"""The pure parts of erasure: which keys are a user's, the record, the PatientErased notice."""

from __future__ import annotations

import orjson
import pytest

from services.channels import notices
from services.channels.webhooks import Attempt
from shared import codec
from shared.erasure import names_user, record_of
from tests.integration.events_factory import make_change


@pytest.mark.parametrize(
    ("key", "theirs"),
    [
        ("bt:{p03}:user:u-1", True),
        ("bt:{p03}:rx:u-1", True),
        ("bt:{p03}:snap:u-1", True),
        ("bt:{p03}:clinic:u-1", True),
        ("bt:{p03}:rx:staged:r1:u-1", True),
        ("bt:{p03}:snap:retired:r1:u-1", True),
        ("bt:{p03}:seen:u-1:6f1c2a4e-9b7d-5e3f-8a21-0c4d5b6e7f80", True),
        ("bt:{p03}:migrating:user:u-1", True),
        ("bt:{p03}:migrating:rx:staged:r1:u-1", True),
        ("bt:{p03}:migrating:user:u-10", False),
        ("bt:{p03}:erased:u-1", False),
        ("bt:{p03}:dek:u-1", False),
        ("bt:{p03}:user:u-10", False),
        ("bt:{p03}:user:xu-1", False),
        ("bt:{p03}:rx:staged:u-1:u-2", False),
        ("bt:{p03}:seen:u-2:u-1", False),
        ("bt:{p03}:seen:6f1c2a4e-9b7d-5e3f-8a21-0c4d5b6e7f80", False),
        ("bt:{p03}:rxfeed", False),
        ("bt:{p03}:audit", False),
        ("other:{p03}:user:u-1", False),
    ],
)
def test_a_key_is_the_users_only_when_its_user_part_is_exactly_theirs(
    key: str, *, theirs: bool
) -> None:
    """Read models, dedupe keys and the direct keys of u-1 are found; the tombstone, the data
    key and every key of another user (u-10, a rebuild id that looks like u-1) are not."""
    assert names_user(key, "u-1") is theirs


def test_the_record_reads_its_fields_and_tells_no_notify_from_an_empty_one() -> None:
    """``notify`` absent means not collected yet; present and empty means nobody to tell."""
    raw = {b"at": b"1767225600123", b"by": b"cli:alice", b"state": b"started"}
    record = record_of("u-1", raw)
    assert (record.notify, record.occurred_at) == (None, "2026-01-01T00:00:00.123+00:00")
    assert record_of("u-1", raw | {b"notify": b""}).notify == ()
    assert record_of("u-1", raw | {b"notify": b"sub_a,sub_b"}).notify == ("sub_a", "sub_b")


def test_the_notice_holds_only_its_type_the_user_and_the_time() -> None:
    """The body is three fields; parsing it back gives the same webhook id as was queued."""
    item = notices.body("u-1", "2026-01-01T00:00:00.123+00:00")
    assert orjson.loads(item) == {
        "type": "PatientErased",
        "user_id": "u-1",
        "occurred_at": "2026-01-01T00:00:00.123+00:00",
    }
    notice = notices.parse(item)
    assert notice is not None
    assert notice.webhook_id == notices.notice_id("u-1", "2026-01-01T00:00:00.123+00:00")
    assert notice.webhook_id != notices.notice_id("u-1", "2026-01-01T00:00:00.124+00:00")
    entry = notices.log_entry(notice, 2, "now", Attempt(200, 5, ""))
    assert "version" not in entry
    assert (entry["type"], entry["event_id"], entry["status"]) == (
        "PatientErased",
        notice.webhook_id,
        200,
    )


def test_a_change_or_anything_else_is_not_a_notice() -> None:
    """Queued changes, and bytes that only start like a notice, parse as None."""
    assert notices.parse(codec.dumps(make_change(1))) is None
    assert notices.parse(b'{"type":"PatientErased","user_id":"u-1"}') is None
    assert notices.parse(b'{"type":"PatientErased","user_id":"u-1","occurred_at":"x"}') is None

"""The encryption migration's pure parts: what counts as plaintext, what is sealed, key names."""

from __future__ import annotations

import hashlib
from fnmatch import fnmatchcase
from typing import Any

import orjson
from redis.crc import key_slot

from services.channels.queues import queue_item
from services.replay import plaintext
from services.replay.migrate import snapshot_kind, stream_kind
from services.replay.stream_copies import TEMP_PATTERNS, temp_key
from shared import codec, sealing
from shared.dead_letters import dead_letter
from shared.keys import Keys
from shared.sealing import DataKey
from tests.integration.events_factory import make_change, make_pain

KEY = DataKey.of(hashlib.sha256(b"a data key").digest())


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _bytes(fields: dict[Any, Any]) -> dict[bytes, bytes]:
    """Fields as Redis gives them back: bytes names and values."""
    return {_raw(k): _raw(v) for k, v in fields.items()}


def test_a_plaintext_queue_item_becomes_the_rx_entry_the_codec_writes() -> None:
    """The fields rebuilt from a queued change's JSON are ``to_fields`` of that change, with
    the JSON kept byte for byte, so the sealed item posts the very body it held."""
    change = make_change(3, user_id="q-1")
    item = codec.dumps(change)
    assert plaintext.change_fields(item) == codec.to_fields(change)
    assert plaintext.change_fields(item)["data"] is item  # type: ignore[index]
    assert plaintext.change_fields(codec.dumps(make_pain(user_id="q-1"))) is None
    assert plaintext.change_fields(b"not json") is None


def test_an_old_change_without_its_version_field_gets_it_from_its_json() -> None:
    """The append script reads a stream's last version from the ``version`` field once the data
    is sealed, so an entry written before that field existed gains it before sealing."""
    change = make_change(7, user_id="q-2")
    old = _bytes(codec.to_fields(change))
    del old[b"version"]
    ready = plaintext.sealable(old)
    assert ready is not None
    assert ready[b"version"] == b"7"
    assert plaintext.sealable({b"data": b"{}", b"user_id": b"q-2"}) is None  # no envelope
    event = _bytes(codec.to_fields(make_pain(user_id="q-2")))
    assert plaintext.sealable(event) == event


def test_dead_letters_plaintext_or_not_and_sealed_with_their_metadata_in_place() -> None:
    """A feed's letter is plaintext without ``f:enc``, a webhook's with a JSON ``f:data``; each
    is sealed into the shape its writers use today, metadata first and unchanged."""
    fields = _bytes(codec.to_fields(make_pain(user_id="q-3"))) | {b"pos": b"1-0", b"prev": b"0-0"}
    feed = _bytes(dead_letter("bt:{p01}:feed", "1-0", "prescriber", "boom", fields))
    assert plaintext.is_plain_letter(feed)
    entry = plaintext.letter_entry(feed)
    assert entry == fields
    sealed = sealing.seal(KEY, entry)
    letter = plaintext.sealed_letter(feed, sealed, None)
    assert not plaintext.is_plain_letter(letter)
    assert list(letter)[:4] == [b"stream", b"entry_id", b"group", b"error"]
    assert sealing.open_sealed(KEY, {k[2:]: v for k, v in letter.items() if k[:2] == b"f:"}) == {
        **fields
    }

    change = make_change(1, user_id="q-3")
    original = {"type": change.type, "event_id": str(change.event_id), "user_id": "q-3"}
    hook = _bytes(dead_letter("q", "1-0", "channel-webhook", "gave up", original, subscription="s"))
    hook[b"f:data"] = codec.dumps(change)
    assert plaintext.is_plain_letter(hook)
    rx = plaintext.letter_entry(hook)
    assert rx is not None
    item = queue_item(sealing.seal(KEY, rx))
    packed = plaintext.sealed_letter(hook, {}, item)
    assert not plaintext.is_plain_letter(packed)
    assert sealing.open_sealed(KEY, sealing.unpack(packed[b"f:data"]))["data"] == codec.dumps(
        change
    )
    assert plaintext.letter_entry({b"error": b"junk", b"f:x": b"y"}) is None


def test_a_snapshot_is_plaintext_with_its_marker_missing_or_empty() -> None:
    """An empty ``enc`` is how a plaintext snapshot replaced a sealed one: plaintext too."""
    plain = {b"data": b"s", b"position": b"1-0", b"rules_version": b"2", b"state_version": b"3"}
    assert plaintext.is_plain_snapshot(plain)
    assert plaintext.is_plain_snapshot(plain | {b"enc": b"", b"dek": b""})
    assert not plaintext.is_plain_snapshot(plain | {b"enc": b"1", b"dek": b"k"})
    assert plaintext.snapshot_fields(plain) == {k.decode(): v for k, v in plain.items()}
    assert plaintext.snapshot_fields({b"data": b"s"}) is None
    assert plaintext.is_plain_item(orjson.dumps({"type": "PrescriptionChanged"}))
    assert not plaintext.is_plain_item(sealing.PACKED + b"{}")


def test_a_temporary_copy_lives_in_its_originals_cluster_slot() -> None:
    """RENAME needs both keys in one slot: the copy keeps the hash tag, or takes the whole name
    of a key that has none as its tag; no scan for users' streams ever finds a copy."""
    keys = Keys(16)
    for name in (keys.history("u-1"), keys.rx("u-1"), keys.read_model("rx", "u-1", "staged:r1")):
        copy = temp_key(name)
        assert key_slot(copy.encode()) == key_slot(name.encode())
        assert any(fnmatchcase(copy, pattern) for pattern in TEMP_PATTERNS)
        assert not any(fnmatchcase(copy, p) for p in ("bt:{p*}:user:*", "bt:{p*}:rx:*"))
    for name in ("bt:dlq", "bt:dlq:resolved"):
        assert key_slot(temp_key(name).encode()) == key_slot(name.encode())
        assert any(fnmatchcase(temp_key(name), pattern) for pattern in TEMP_PATTERNS)


def test_kinds_are_told_apart_by_the_key_name() -> None:
    """History, a prescription stream and a rebuild's read model; a snapshot and a rebuilt one."""
    keys = Keys(16)
    assert stream_kind(keys.history("u-1")) == "history"
    assert stream_kind(keys.rx("u-1")) == "prescriptions"
    assert stream_kind(keys.read_model("rx", "u-1", "retired:r9")) == "read models"
    assert snapshot_kind(keys.snapshot("u-1")) == "snapshots"
    assert snapshot_kind(keys.read_model("snap", "u-1", "staged:r9")) == "read models"

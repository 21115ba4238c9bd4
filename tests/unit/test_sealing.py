"""Sealed stream fields and wrapped data keys (shared.sealing): pure, no Redis."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from shared import codec, sealing
from shared.sealing import (
    DataKey,
    MasterKey,
    MasterKeys,
    OtherDataKey,
    UnknownMasterKey,
    Unreadable,
)

GOLDEN = sorted((Path(__file__).parent.parent / "golden").glob("*.json"))
#: Field names and values of the golden payloads that must never show through a seal.
PLAINTEXT_MARKERS = [b'"score"', b'"note"', b"Examined today", b'"red_flags"', b'"exercises"']
DATA_KEY = bytes(range(32))
MASTER = MasterKey(b"m" * 32)


def _fields(path: Path) -> dict[str, Any]:
    return codec.to_fields(codec.loads(path.read_bytes()))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_every_golden_event_seals_with_its_envelope_readable_and_opens_to_itself(
    path: Path,
) -> None:
    """The envelope stays as it was, ``data`` hides the payload, and opening gives it all back."""
    fields = _fields(path)
    sealed = sealing.seal(DataKey.of(DATA_KEY), fields)
    assert {k: v for k, v in sealed.items() if k not in ("data", "enc", "dek")} == {
        k: v for k, v in fields.items() if k != "data"
    }
    assert sealed["enc"] == "1"
    assert sealed["dek"] == DataKey.of(DATA_KEY).id
    everything = b"".join(sealing._bytes(v) for v in sealed.values())
    assert fields["data"] not in everything
    for marker in PLAINTEXT_MARKERS:
        assert marker not in everything
    assert sealing.open_sealed(DataKey.of(DATA_KEY), sealed) == fields


def test_entries_read_back_from_redis_open_with_bytes_keys() -> None:
    """An entry as redis-py returns it (bytes keys and values) opens to the plain bytes entry."""
    fields = _fields(GOLDEN[0])
    sealed = sealing.seal(DataKey.of(DATA_KEY), fields)
    as_read = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in sealed.items()}
    as_read[b"pos"] = b"1700000000000-0"  # a feed's routing fields ride along untouched
    opened = sealing.open_sealed(DataKey.of(DATA_KEY), as_read)
    plain = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in fields.items()}
    assert opened == plain | {b"pos": b"1700000000000-0"}


def test_a_plaintext_entry_opens_unchanged() -> None:
    """Entries written before encryption was on have no marker and pass through as they are."""
    fields = _fields(GOLDEN[0])
    assert not sealing.is_sealed(fields)
    assert sealing.open_sealed(DataKey.of(DATA_KEY), fields) == fields


def _tampered(name: str, sealed: dict[str, Any]) -> dict[str, Any]:
    changed = dict(sealed)
    if name == "data":
        blob = bytearray(changed["data"])
        blob[-1] ^= 1
        changed["data"] = bytes(blob)
    elif name == "version":
        changed["version"] = str(int(changed["version"]) + 1)
    else:
        changed[name] = {"user_id": "p-0002", "event_id": "00000000-0000-4000-8000-000000000000"}[
            name
        ]
    return changed


@pytest.mark.parametrize("name", ["data", "user_id", "event_id", "version"])
def test_a_changed_ciphertext_or_envelope_does_not_open(name: str) -> None:
    """The tag covers the ciphertext and the entry's type, event id, user and version."""
    fields = _fields(next(p for p in GOLDEN if p.stem.startswith("PrescriptionChanged")))
    sealed = sealing.seal(DataKey.of(DATA_KEY), fields)
    with pytest.raises(Unreadable):
        sealing.open_sealed(DataKey.of(DATA_KEY), _tampered(name, sealed))


def test_data_moved_to_another_entry_does_not_open() -> None:
    """One entry's sealed data pasted into another entry of the same user fails."""
    first, second = (sealing.seal(DataKey.of(DATA_KEY), _fields(p)) for p in GOLDEN[:2])
    with pytest.raises(Unreadable):
        sealing.open_sealed(DataKey.of(DATA_KEY), second | {"data": first["data"]})


def test_another_users_key_does_not_open_and_an_unknown_format_is_refused() -> None:
    """A wrong data key fails authentication; a marker naming another format is refused."""
    sealed = sealing.seal(DataKey.of(DATA_KEY), _fields(GOLDEN[0]))
    with pytest.raises(OtherDataKey):
        sealing.open_sealed(DataKey.of(b"\x01" * 32), sealed)
    other = DataKey.of(b"\x01" * 32)
    with pytest.raises(Unreadable):  # claiming the other key's id does not help
        sealing.open_sealed(other, sealed | {"dek": other.id})
    with pytest.raises(Unreadable, match="unknown sealed format"):
        sealing.open_sealed(DataKey.of(DATA_KEY), sealed | {"enc": "2"})


def test_sealing_twice_is_refused() -> None:
    """A sealed entry is not sealed again (it would hide the marker's meaning)."""
    sealed = sealing.seal(DataKey.of(DATA_KEY), _fields(GOLDEN[0]))
    with pytest.raises(ValueError, match="sealed already"):
        sealing.seal(DataKey.of(DATA_KEY), sealed)


def test_two_seals_of_one_entry_differ() -> None:
    """A random nonce per seal: the same event never gives the same ciphertext twice."""
    fields = _fields(GOLDEN[0])
    aead = DataKey.of(DATA_KEY)
    assert sealing.seal(aead, fields)["data"] != sealing.seal(aead, fields)["data"]


def test_a_wrapped_data_key_names_its_master_key_and_hides_the_key() -> None:
    """The wrapped form names the master key id, holds no key bytes and unwraps to the key."""
    wrapped = sealing.wrap(MASTER, DATA_KEY, "p-0001")
    assert wrapped.startswith(f"1.{MASTER.id}.".encode())
    assert sealing.wrapped_by(wrapped) == MASTER.id
    assert DATA_KEY not in wrapped
    assert sealing.unwrap(MasterKeys(MASTER), wrapped, "p-0001") == DATA_KEY


def test_a_wrapped_key_opens_only_as_its_users_and_under_a_held_master_key() -> None:
    """Another user's name, another master key, or a changed byte: refused."""
    wrapped = sealing.wrap(MASTER, DATA_KEY, "p-0001")
    with pytest.raises(Unreadable):
        sealing.unwrap(MasterKeys(MASTER), wrapped, "p-0002")
    with pytest.raises(UnknownMasterKey):
        sealing.unwrap(MasterKeys(MasterKey(b"n" * 32)), wrapped, "p-0001")
    forged = wrapped[:-4] + (b"AAAA" if wrapped[-4:] != b"AAAA" else b"BBBB")
    with pytest.raises(Unreadable):
        sealing.unwrap(MasterKeys(MASTER), forged, "p-0001")


def test_previous_master_keys_still_unwrap() -> None:
    """A key wrapped by a previous master key unwraps while that key is held as previous."""
    new = MasterKey(b"n" * 32)
    wrapped = sealing.wrap(MASTER, DATA_KEY, "p-0001")
    assert sealing.unwrap(MasterKeys(new, (MASTER,)), wrapped, "p-0001") == DATA_KEY
    with pytest.raises(ValueError, match="differ"):
        MasterKeys(MASTER, (MasterKey(b"m" * 32),))


def test_master_keys_are_base64_of_32_bytes_and_never_shown() -> None:
    """Standard or url-safe base64, padded or not; other lengths refused; repr hides the key."""
    key = b"\xfb\xff" * 16
    assert sealing.decode_key(base64.b64encode(key).decode()) == key
    assert sealing.decode_key(base64.urlsafe_b64encode(key).decode().rstrip("=") + "\n") == key
    with pytest.raises(ValueError, match="not 18"):
        sealing.decode_key("a" * 24)
    with pytest.raises(ValueError, match="not base64"):
        sealing.decode_key("*" * 44)
    assert "m" * 8 not in repr(MASTER)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_a_packed_entry_keeps_its_routing_readable_and_opens_to_itself(path: Path) -> None:
    """A webhook queue item: the sealed entry in one value, the payload still hidden."""
    fields = _fields(path)
    sealed = sealing.seal(DataKey.of(DATA_KEY), fields)
    as_read = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in sealed.items()}
    packed = sealing.pack(as_read)
    assert sealing.is_packed(packed)
    assert fields["event_id"].encode() in packed
    for marker in PLAINTEXT_MARKERS:
        assert marker not in packed
    unpacked = sealing.unpack(packed)
    assert unpacked["user_id"] == fields["user_id"]
    opened = sealing.open_sealed(DataKey.of(DATA_KEY), unpacked)
    assert opened["data"] == fields["data"]


def test_only_sealed_entries_pack_and_damaged_packs_are_unreadable() -> None:
    fields = _fields(GOLDEN[0])
    with pytest.raises(ValueError, match="only a sealed entry"):
        sealing.pack(fields)
    assert not sealing.is_packed(fields["data"])
    packed = sealing.pack(sealing.seal(DataKey.of(DATA_KEY), fields))
    for damaged in (packed[:-5], sealing.PACKED + b"[1]", fields["data"]):
        with pytest.raises(Unreadable):
            sealing.unpack(damaged)

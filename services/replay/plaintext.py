"""What the encryption migration finds in plaintext, and each kind made ready to seal. Pure.

Every kind of copy keeps the format its writers use today (docs/PRIVACY.md, "Keys"):

- a stream entry (history, prescription stream, read model, feed) is plaintext when it has
  no ``enc`` field; it is sealed as it is, except that a ``PrescriptionChanged`` written
  before entries named their version gets its ``version`` field from its JSON first (the
  append script reads the version of a stream's last entry from that field once ``data``
  is ciphertext);
- a snapshot hash is plaintext when its ``enc`` is missing or empty;
- a webhook queue item is plaintext when it is the change's JSON rather than a packed
  sealed entry (``sealing.is_packed``); sealed, it becomes what the dispatcher queues
  today: the rx entry's fields (``to_fields``'s order), sealed and packed;
- a dead letter keeps its original fields as ``f:<field>``: a feed's letter is plaintext
  without ``f:enc``, a webhook's (``subscription`` set) when its ``f:data`` is a plaintext
  queue item.

An entry without the envelope a seal binds (``type``, ``event_id``, ``user_id``,
``data``) cannot be sealed: it names no patient whose key would seal it (``None`` here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from shared import sealing
from shared.dead_letters import ORIGINAL, originals

#: the fields a seal binds or encrypts (``shared.sealing``)
ENVELOPE = (b"type", b"event_id", b"user_id", b"data")
CHANGE = b"PrescriptionChanged"
SUBSCRIPTION = b"subscription"
LETTER_DATA = ORIGINAL + b"data"
LETTER_MARKER = ORIGINAL + sealing.MARKER.encode()


def _name(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def _raw(fields: Mapping[Any, Any]) -> dict[bytes, Any]:
    return {_name(k): v for k, v in fields.items()}


def sealable(fields: Mapping[Any, Any]) -> dict[bytes, Any] | None:
    """A plaintext stream entry as ``seal_many`` takes it (bytes keys); None without an
    envelope. A change lacking its ``version`` field gets it from its JSON."""
    raw = _raw(fields)
    if any(name not in raw for name in ENVELOPE):
        return None
    if _name(raw[b"type"]) == CHANGE and b"version" not in raw:
        version = _version(raw[b"data"])
        if version is None:
            return None
        raw[b"version"] = version
    return raw


def _version(data: Any) -> bytes | None:
    try:
        version = orjson.loads(data).get("version")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return None
    return str(version).encode() if isinstance(version, int) else None


def change_fields(item: bytes) -> dict[str, Any] | None:
    """The rx entry fields of a plaintext webhook queue item (the change's JSON, kept byte
    for byte as ``data``); None if the item is not a change."""
    try:
        change = orjson.loads(item)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(change, dict) or change.get("type") != CHANGE.decode():
        return None
    names = ("event_id", "user_id", "version")
    if not all(isinstance(change.get(name), str | int) for name in names):
        return None
    return {
        "type": change["type"],
        "event_id": str(change["event_id"]),
        "user_id": str(change["user_id"]),
        "data": item,
        "version": str(change["version"]),
    }


def is_plain_item(item: bytes) -> bool:
    """Whether a webhook queue item is plaintext (the change's JSON)."""
    return not sealing.is_packed(item)


def is_plain_letter(raw: Mapping[bytes, Any]) -> bool:
    """Whether a dead letter holds its health data in plaintext."""
    if SUBSCRIPTION in raw:
        return is_plain_item(_name(raw.get(LETTER_DATA, b"")))
    return LETTER_MARKER not in raw


def letter_entry(raw: Mapping[bytes, Any]) -> dict[Any, Any] | None:
    """What of a plaintext dead letter is sealed: a feed letter's original entry, a webhook
    letter's change; None if it names no patient."""
    if SUBSCRIPTION in raw:
        return change_fields(_name(raw.get(LETTER_DATA, b"")))
    entry = {k[len(ORIGINAL) :]: v for k, v in raw.items() if k.startswith(ORIGINAL)}
    return sealable(entry)


def sealed_letter(
    raw: Mapping[bytes, Any], sealed: Mapping[Any, Any], item: bytes | None
) -> dict[bytes, Any]:
    """The dead letter with its originals replaced by ``sealed`` (a feed letter) or its
    ``f:data`` by the packed ``item`` (a webhook letter); metadata unchanged, in order."""
    if item is not None:
        return {**raw, LETTER_DATA: item}
    meta = {k: v for k, v in raw.items() if not k.startswith(ORIGINAL)}
    return meta | originals(sealed)


def is_plain_snapshot(raw: Mapping[Any, Any]) -> bool:
    """Whether a snapshot hash holds its state in plaintext (``enc`` missing or empty)."""
    return not _raw(raw).get(sealing.MARKER.encode())


def snapshot_fields(raw: Mapping[Any, Any]) -> dict[str, Any] | None:
    """A plaintext snapshot's four fields, as ``snapshot_envelope`` takes them; None if the
    hash lacks one."""
    got = {_name(k).decode(): v for k, v in raw.items()}
    names = ("data", "position", "rules_version", "state_version")
    if any(name not in got for name in names):
        return None
    return {name: got[name] for name in names}


__all__ = [
    "change_fields",
    "is_plain_item",
    "is_plain_letter",
    "is_plain_snapshot",
    "letter_entry",
    "sealable",
    "sealed_letter",
    "snapshot_fields",
]

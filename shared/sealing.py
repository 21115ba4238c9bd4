"""Encryption at rest, the pure part: master keys, wrapped data keys, sealed stream fields.

Each patient has a data key (32 random bytes) that seals the ``data`` field
of their stream entries; the data key is stored only wrapped (encrypted) by
a master key (DESIGN.md invariant 10; ``shared.data_keys`` keeps them in
Redis). Both use AES-256-GCM with a random 96-bit nonce.

- A master key has an id, ``master_key_id``: 8 base64url characters of
  SHA-256 over a label and the key (names the key; reveals nothing usable).
- A wrapped data key is ``1.<master key id>.<base64url(nonce || ciphertext)>``,
  authenticated with the user id and the master key id, so it unwraps only
  as that user's key and a copy moved to another user's Redis key fails.
- A sealed entry keeps the routing envelope readable (``type``, ``event_id``,
  ``user_id``, ``version``, and any ``pos``/``prev`` a feed adds); ``data``
  becomes ``nonce || ciphertext``, the marker ``enc`` = ``1`` names the
  format and ``dek`` the data key's id (``DataKey``: a hash of the key, like a
  master key's), so an entry sealed under a destroyed key is told apart from a
  damaged one even after the user id got a new key. The associated data
  binds the ciphertext to the entry's type, event id, user id and version: an
  entry whose envelope was changed, or whose data was moved to another entry,
  fails to open. An entry without ``enc`` is plaintext (written before
  encryption was on) and opens unchanged.

Fields may have str keys (``shared.codec.to_fields``) or bytes keys (read
back from Redis); the result keeps the style of its input, and an opened
``data`` is bytes. No I/O, no clock: every function here is deterministic
given its nonce, and cheap enough to run per event (tests/bench/crypto.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
#: The field that marks a sealed entry, and the one format there is.
MARKER: Final = "enc"
FORMAT: Final = b"1"
#: The field naming the data key that sealed the entry.
KEY_FIELD: Final = "dek"
_WRAP_FORMAT: Final = b"1"
_KID_LABEL: Final = b"backtrack master key id\x00"
_DEK_ID_LABEL: Final = b"backtrack data key id\x00"
_WRAP_LABEL: Final = b"backtrack data key v1\x00"
_SEAL_LABEL: Final = b"backtrack sealed entry v1"


class SealingError(ValueError):
    """Base of what sealing, opening, wrapping and unwrapping refuse."""


class Unreadable(SealingError):  # noqa: N818 - names what the caller learns
    """The ciphertext does not open: tampered with, under another key, or moved to another entry."""


class OtherDataKey(Unreadable):
    """The entry was sealed under another data key than the one given (one destroyed since)."""


class UnknownMasterKey(SealingError):  # noqa: N818 - names what the caller learns
    """A data key is wrapped by a master key not held here (configure it as a previous one)."""


def master_key_id(key: bytes) -> str:
    """The id of master ``key``: 8 base64url characters of SHA-256 over a label and the key."""
    return _key_id(_KID_LABEL, key)


def _key_id(label: bytes, key: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(label + key).digest()).decode()[:8]


def decode_key(text: str) -> bytes:
    """The 32 bytes a master key setting holds in base64 (standard or url-safe, padded or not)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except binascii.Error:
        raise ValueError("a master key is base64 of 32 random bytes: not base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"a master key is base64 of 32 random bytes, not {len(key)}")
    return key


@dataclass(frozen=True, slots=True)
class MasterKey:
    """One master key and its id; ``repr`` never shows the key."""

    key: bytes = field(repr=False)
    id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"a master key is {KEY_BYTES} bytes")
        object.__setattr__(self, "id", master_key_id(self.key))


@dataclass(frozen=True, slots=True)
class MasterKeys:
    """The master key that wraps and the previous ones that still unwrap (a rotation), by id.

    Raises ValueError for two keys with one id (the same key twice).
    """

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()
    by_id: Mapping[str, MasterKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        every = (self.current, *self.previous)
        by_id = {master.id: master for master in every}
        if len(by_id) != len(every):
            raise ValueError("master keys must differ from each other")
        object.__setattr__(self, "by_id", by_id)


def new_data_key() -> bytes:
    """32 random bytes from the operating system's generator."""
    return os.urandom(KEY_BYTES)


def wrap(master: MasterKey, data_key: bytes, user_id: str, nonce: bytes | None = None) -> bytes:
    """``data_key`` encrypted under ``master`` for ``user_id``: ``1.<kid>.<base64url>``."""
    kid = master.id.encode()
    nonce = nonce or os.urandom(NONCE_BYTES)
    body = AESGCM(master.key).encrypt(nonce, data_key, _wrap_ad(user_id, kid))
    return b".".join((_WRAP_FORMAT, kid, base64.urlsafe_b64encode(nonce + body)))


def wrapped_by(wrapped: bytes) -> str:
    """The id of the master key that wrapped ``wrapped``. Raises Unreadable if malformed."""
    return _parse(wrapped)[0].decode()


def unwrap(masters: MasterKeys, wrapped: bytes, user_id: str) -> bytes:
    """The data key ``wrap`` sealed for ``user_id``, under whichever known master key wrapped it.

    Raises UnknownMasterKey if that master key is not held, Unreadable if the
    wrapped key was changed or belongs to another user.
    """
    kid, blob = _parse(wrapped)
    master = masters.by_id.get(kid.decode())
    if master is None:
        raise UnknownMasterKey(f"data key wrapped by master key {kid.decode()!r}, not held")
    try:
        return AESGCM(master.key).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _wrap_ad(user_id, kid)
        )
    except InvalidTag:
        raise Unreadable(f"the data key of {user_id!r} does not unwrap") from None


@dataclass(frozen=True, slots=True)
class DataKey:
    """A patient's data key ready to use: its id and its cipher (build once per key:
    setting up the cipher costs more than a seal). ``repr`` never shows the key."""

    id: str
    aead: AESGCM = field(repr=False)
    #: ``id`` as bytes, as an entry read from Redis names it
    id_bytes: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id_bytes", self.id.encode())

    @classmethod
    def of(cls, key: bytes) -> DataKey:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a data key is {KEY_BYTES} bytes")
        return cls(_key_id(_DEK_ID_LABEL, key), AESGCM(key))


def is_sealed(fields: Mapping[Any, Any]) -> bool:
    """Whether the entry carries the sealed marker."""
    return MARKER in fields or _MARKER_BYTES in fields


def seal(key: DataKey, fields: Mapping[Any, Any], nonce: bytes | None = None) -> dict[Any, Any]:
    """``fields`` with ``data`` encrypted, the marker and key id added; the envelope stays readable.

    Raises ValueError for an entry already sealed or lacking an envelope field or ``data``.
    """
    if is_sealed(fields):
        raise ValueError("the entry is sealed already")
    names = _style(fields)
    nonce = nonce or os.urandom(NONCE_BYTES)
    body = key.aead.encrypt(nonce, _bytes(fields[names.data]), _seal_ad(fields, names))
    sealed = dict(fields)
    sealed[names.data] = nonce + body
    sealed[names.marker] = names.format
    sealed[names.key] = key.id if isinstance(names.key, str) else key.id.encode()
    return sealed


def open_sealed(key: DataKey, fields: Mapping[Any, Any]) -> dict[Any, Any]:
    """The fields ``seal`` was given (``data`` as bytes); a plaintext entry comes back as is.

    Raises OtherDataKey for an entry sealed under another data key, Unreadable
    for an unknown format or a ciphertext that does not authenticate under
    ``key`` with this entry's envelope.
    """
    if _MARKER_BYTES in fields and _KEY_FIELD_BYTES in fields:  # as read from Redis
        opened = _open_read(key, fields)
        if opened is not None:
            return opened
    if not is_sealed(fields):
        return dict(fields)
    names = _style(fields)
    if _bytes(fields[names.marker]) != FORMAT:
        raise Unreadable(f"unknown sealed format {fields[names.marker]!r}")
    if sealed_with(fields) != key.id:
        raise OtherDataKey(f"sealed under data key {sealed_with(fields)!r}, not {key.id!r}")
    blob = fields[names.data]
    if not isinstance(blob, bytes) or len(blob) < NONCE_BYTES:
        raise Unreadable("a sealed data field is bytes: a nonce and a ciphertext")
    try:
        plain = key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _seal_ad(fields, names))
    except InvalidTag:
        raise Unreadable("the sealed entry does not open: tampered with or another key") from None
    opened = dict(fields)
    del opened[names.marker], opened[names.key]
    opened[names.data] = plain
    return opened


def _open_read(key: DataKey, fields: Mapping[Any, Any]) -> dict[Any, Any] | None:
    """``open_sealed`` of an entry as Redis answers it (every name and value bytes): the
    path readers take per entry, without the general path's checks of style and type.
    None when the entry is not in that form (the general path then says what is wrong)."""
    plain = open_data(key, fields)
    if plain is None:
        return None
    opened = dict(fields)
    del opened[_MARKER_BYTES], opened[_KEY_FIELD_BYTES]
    opened[b"data"] = plain
    return opened


def open_data(key: DataKey, fields: Mapping[Any, Any]) -> bytes | None:
    """The plain ``data`` of a sealed entry as Redis answers it (bytes names and values),
    and nothing else built: what a replay needs of each entry. None when the entry is not
    in that form (``open_sealed`` says what is wrong with it); raises as ``open_sealed``."""
    try:
        blob = fields[b"data"]
        ad = b"\x00".join(
            (
                _SEAL_LABEL,
                fields[b"type"],
                fields[b"event_id"],
                fields[b"user_id"],
                fields.get(b"version", b""),
            )
        )
    except (KeyError, TypeError):
        return None
    if fields.get(_MARKER_BYTES) != FORMAT or not isinstance(blob, bytes):
        return None
    if fields.get(_KEY_FIELD_BYTES) != key.id_bytes:
        raise OtherDataKey(f"sealed under data key {sealed_with(fields)!r}, not {key.id!r}")
    if len(blob) < NONCE_BYTES:
        return None
    try:
        plain: bytes = key.aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)
    except InvalidTag:
        raise Unreadable("the sealed entry does not open: tampered with or another key") from None
    return plain


def sealed_with(fields: Mapping[Any, Any]) -> str:
    """The id of the data key a sealed entry names ("" if none)."""
    value = fields.get(KEY_FIELD, fields.get(_KEY_FIELD_BYTES, b""))
    return _bytes(value).decode(errors="replace")


#: The prefix of a packed sealed entry (``pack``): never the first bytes of a JSON object.
PACKED: Final = b"sealed1:"


def pack(fields: Mapping[Any, Any]) -> bytes:
    """A sealed entry as one value (a webhook queue item): ``PACKED`` + JSON, data in base64.

    Raises ValueError for an entry that is not sealed (its plaintext would be packed).
    """
    if not is_sealed(fields):
        raise ValueError("only a sealed entry is packed")
    out: dict[str, str] = {}
    for name, value in fields.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        if key == "data":
            out[key] = base64.b64encode(_bytes(value)).decode()
        else:
            out[key] = _bytes(value).decode()
    return PACKED + orjson.dumps(out)


def is_packed(value: bytes) -> bool:
    """Whether ``value`` is a packed sealed entry (else: plaintext, written before sealing)."""
    return value.startswith(PACKED)


def unpack(value: bytes) -> dict[str, Any]:
    """The sealed entry ``pack`` made (str keys, ``data`` as bytes). Raises Unreadable."""
    if not is_packed(value):
        raise Unreadable("not a packed sealed entry")
    try:
        raw = orjson.loads(value[len(PACKED) :])
        fields: dict[str, Any] = {str(k): str(v) for k, v in raw.items()}
        fields["data"] = base64.b64decode(fields["data"], validate=True)
    except (orjson.JSONDecodeError, AttributeError, KeyError, binascii.Error, ValueError):
        raise Unreadable("a damaged packed entry") from None
    return fields


def entry_user(fields: Mapping[Any, Any]) -> str:
    """The ``user_id`` field of an entry, as text."""
    value = fields.get("user_id", fields.get(b"user_id"))
    if value is None:
        raise ValueError("a stream entry has a 'user_id' field")
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class _Names:
    """The field names of one key style (str as ``to_fields`` makes them, bytes as read)."""

    data: Any
    marker: Any
    key: Any
    format: Any
    type: Any
    event_id: Any
    user_id: Any
    version: Any


_STR = _Names("data", MARKER, KEY_FIELD, FORMAT.decode(), "type", "event_id", "user_id", "version")
_BYTES = _Names(*(name.encode() if isinstance(name, str) else name for name in astuple(_STR)))
_MARKER_BYTES: Final = MARKER.encode()
_KEY_FIELD_BYTES: Final = KEY_FIELD.encode()


def _style(fields: Mapping[Any, Any]) -> _Names:
    if b"data" in fields:
        return _BYTES
    if "data" in fields:
        return _STR
    raise ValueError("a stream entry has a 'data' field")


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _seal_ad(fields: Mapping[Any, Any], names: _Names) -> bytes:
    try:
        kind, event_id, user_id = fields[names.type], fields[names.event_id], fields[names.user_id]
    except KeyError as exc:
        raise ValueError(f"a stream entry has a {exc.args[0]!r} field") from None
    version = fields.get(names.version, b"")
    # none of these holds a NUL (event types, UUIDs, user ids, integers): the join is unambiguous
    parts = (_SEAL_LABEL, _bytes(kind), _bytes(event_id), _bytes(user_id), _bytes(version))
    return b"\x00".join(parts)


def _wrap_ad(user_id: str, kid: bytes) -> bytes:
    return _WRAP_LABEL + user_id.encode() + b"\x00" + kid


def _parse(wrapped: bytes) -> tuple[bytes, bytes]:
    parts = wrapped.split(b".")
    if len(parts) != 3 or parts[0] != _WRAP_FORMAT:
        raise Unreadable("not a wrapped data key")
    try:
        blob = base64.urlsafe_b64decode(parts[2])
    except (binascii.Error, ValueError):
        raise Unreadable("not a wrapped data key") from None
    if len(blob) < NONCE_BYTES:
        raise Unreadable("not a wrapped data key")
    return parts[1], blob


__all__ = [
    "FORMAT",
    "KEY_BYTES",
    "KEY_FIELD",
    "MARKER",
    "PACKED",
    "DataKey",
    "MasterKey",
    "MasterKeys",
    "OtherDataKey",
    "SealingError",
    "UnknownMasterKey",
    "Unreadable",
    "decode_key",
    "entry_user",
    "is_packed",
    "is_sealed",
    "master_key_id",
    "new_data_key",
    "open_data",
    "open_sealed",
    "pack",
    "seal",
    "sealed_with",
    "unpack",
    "unwrap",
    "wrap",
    "wrapped_by",
]

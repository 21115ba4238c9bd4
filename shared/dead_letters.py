"""The dead-letter record: one shape for every writer of ``bt:dlq`` and its one reader.

A dead letter holds ``stream`` (where the entry came from), ``entry_id``,
``group`` (the consumer group that gave up on it), ``error`` (at most 2,000
characters) and a copy of each original field as ``f:<field>``. A writer may
add metadata of its own (the webhook channel adds ``subscription``). The
error may quote event values, so only its first clause is ever logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.streams import text

#: the prefix that marks a copied original field
ORIGINAL = b"f:"
ERROR_LIMIT = 2000


def _name(key: bytes | str) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def originals(fields: Mapping[Any, Any]) -> dict[bytes, Any]:
    """Each field of ``fields`` under its dead-letter name, ``f:<field>``."""
    return {ORIGINAL + _name(key): value for key, value in fields.items()}


def dead_letter(
    stream: str,
    entry_id: bytes | str,
    group: str,
    error: str,
    fields: Mapping[Any, Any],
    **meta: str,
) -> dict[Any, Any]:
    """The record that parks ``fields`` (an entry of ``stream``) with its error."""
    record: dict[Any, Any] = {
        "stream": stream,
        "entry_id": entry_id,
        "group": group,
        "error": error[:ERROR_LIMIT],
        **meta,
    }
    record.update(originals(fields))
    return record


def split(raw: Mapping[Any, Any]) -> tuple[dict[str, str], dict[bytes, bytes]]:
    """A stored dead letter as (metadata, original fields), the ``f:`` prefix removed."""
    meta: dict[str, str] = {}
    fields: dict[bytes, bytes] = {}
    for key, value in raw.items():
        name = _name(key)
        if name.startswith(ORIGINAL):
            fields[name[len(ORIGINAL) :]] = _name(value)
        else:
            meta[text(name)] = text(value)
    return meta, fields


def reason(error: str) -> str:
    """What of an error may be logged: its first clause (the rest may quote event values)."""
    return error.split(":", 1)[0]


__all__ = ["ERROR_LIMIT", "ORIGINAL", "dead_letter", "originals", "reason", "split"]

"""Sealing what the encryption migration finds, many users' entries per round trip.

``seal_all`` seals a batch with ``DataKeys.seal_many`` (each entry under its user's data
key, made on first use; one pipelined round trip for the keys the batch lacks). An erased
user's entries (``KeyDestroyed``) are left out, never given a new key: their copies are
being deleted, and what is sealed for them is unreadable anyway. The transforms here turn
pages of stream entries into what ``restream`` copies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.channels.queues import queue_item
from services.replay import plaintext
from services.replay.restream import Entry, Page, Target, Transform
from shared import sealing
from shared.data_keys import DataKeys, KeyDestroyed

Sealed = Mapping[Any, Any] | KeyDestroyed


async def seal_all(data_keys: DataKeys, entries: Sequence[Mapping[Any, Any]]) -> list[Sealed]:
    """Each entry sealed under its user's key, in order; ``KeyDestroyed`` for an erased
    user's (one more round trip per erased user found, none otherwise)."""
    erased: set[str] = set()
    users = [sealing.entry_user(fields) for fields in entries]
    while True:
        todo = [i for i, user in enumerate(users) if user not in erased]
        try:
            done = await data_keys.seal_many([entries[i] for i in todo]) if todo else []
        except KeyDestroyed as exc:
            erased.add(exc.user_id)
            continue
        out: list[Sealed] = [KeyDestroyed(user) for user in users]
        for i, fields in zip(todo, done, strict=True):
            out[i] = fields
        return out


def entries(data_keys: DataKeys) -> Transform:
    """Seal users' stream entries; a page with an erased user's entry marks the stream erased."""

    async def transform(batch: Sequence[tuple[Target, list[Entry]]]) -> list[Page]:
        found: list[tuple[int, int]] = []
        todo: list[Mapping[Any, Any]] = []
        unsealable = [0] * len(batch)
        for b, (_, page) in enumerate(batch):
            for i, (_, fields) in enumerate(page):
                if sealing.is_sealed(fields):
                    continue
                ready = plaintext.sealable(fields)
                if ready is None:
                    unsealable[b] += 1
                else:
                    found.append((b, i))
                    todo.append(ready)
        pages = [list(page) for _, page in batch]
        sealed, erased = [0] * len(batch), [False] * len(batch)
        for (b, i), done in zip(found, await seal_all(data_keys, todo), strict=True):
            if isinstance(done, KeyDestroyed):
                erased[b] = True
            else:
                pages[b][i] = (pages[b][i][0], dict(done))
                sealed[b] += 1
        return [
            Page(pages[b], sealed[b], unsealable[b], erased=erased[b]) for b in range(len(batch))
        ]

    return transform


def letters(data_keys: DataKeys) -> Transform:
    """Seal dead letters (``plaintext.letter_entry``); an erased user's letter, or one that
    names no patient, is copied as it is (``Page.skipped``, ``Page.unsealable``)."""

    async def transform(batch: Sequence[tuple[Target, list[Entry]]]) -> list[Page]:
        return [await _letters(data_keys, page) for _, page in batch]

    return transform


async def _letters(data_keys: DataKeys, page: list[Entry]) -> Page:
    found: list[int] = []
    todo: list[Mapping[Any, Any]] = []
    unsealable = 0
    for i, (_, raw) in enumerate(page):
        if not plaintext.is_plain_letter(raw):
            continue
        entry = plaintext.letter_entry(raw)
        if entry is None:
            unsealable += 1
        else:
            found.append(i)
            todo.append(entry)
    out, sealed, skipped = list(page), 0, set()
    for i, fields in zip(found, await seal_all(data_keys, todo), strict=True):
        if isinstance(fields, KeyDestroyed):
            skipped.add(fields.user_id)
            continue
        raw = out[i][1]
        item = queue_item(fields) if plaintext.SUBSCRIPTION in raw else None
        out[i] = (out[i][0], plaintext.sealed_letter(raw, fields, item))
        sealed += 1
    return Page(out, sealed, unsealable, skipped=frozenset(skipped))


__all__ = ["Sealed", "entries", "letters", "seal_all"]

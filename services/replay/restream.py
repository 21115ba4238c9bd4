"""Rewrite streams under the same ids: a sealed copy beside each, swapped in by one script.

A stream entry is never edited, and a stream's ids are positions others hold (cursors,
``Last-Event-ID``, dedupe keys, feed entries' ``pos``/``prev``), so a stream without
consumer groups (a user's history or prescription stream, a rebuilt read model, the dead
letters) is rewritten whole: its entries, each under its own id, go into a temporary key
of the same hash tag (``stream_copies``: ``bt:{pNN}:migrating:<rest of the name>``, with
a TTL renewed on every page), and ``SWAP_LUA`` then renames the copy over the original
only if the original is still what was copied: the same length and the same last id (enough for a
stream changed by XADD and XDEL alone: any XADD moves the last id, an XDEL alone the
length), and for a stream that may be replaced whole (a rebuild's switch renames read
models) the same digest of every entry. The original's counters (last id, entries
added, largest deleted id) and its TTL go over to the copy first, so no id is handed out
twice. A stream with consumer groups is never renamed.

An original that changed meanwhile is caught up (a history only grows: what was appended
since is copied on) or copied again, ``attempts`` times at most before it is left for a
later run. Streams are done in groups, one pipelined round trip per page for the group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.replay.scripts import Call, run_many
from services.replay.stream_copies import (
    COPY,
    FIND,
    SWAP,
    TEMP_TTL,
    Entry,
    entry_digest,
    frame_entries,
)
from shared.sealing import PACKED
from shared.streams import text

#: outcomes whose copy is still there to delete
_ABANDONED = frozenset(("busy", "gone"))


@dataclass(frozen=True, slots=True)
class Target:
    """A stream to rewrite: its key, its copy's key, its kind (the report's), its user
    ("" for the dead letters), whether it only grows, whether to compare digests, and
    whether its entries are dead letters (``plaintext.is_plain_letter``)."""

    key: str
    temp: str
    kind: str
    user: str = ""
    grows: bool = False
    verify: bool = True
    letters: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """A page of entries as the copy gets them: how many were sealed, how many name no
    patient, the erased users whose entries were copied as they are; ``erased``: the
    stream's user was erased (the stream is left alone)."""

    entries: list[Entry]
    sealed: int = 0
    unsealable: int = 0
    skipped: frozenset[str] = frozenset()
    erased: bool = False


#: seals the plaintext entries of pages of several targets at once, one Page each
Transform = Callable[[Sequence[tuple[Target, list[Entry]]]], Awaitable[list[Page]]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one target: ``swapped``, ``sealed`` (nothing to do), ``erased``,
    ``gone`` (deleted meanwhile), ``groups`` (has consumer groups: left), ``busy``
    (changed under every attempt: left for a later run); ``retries``: swaps refused
    because the original had changed."""

    target: Target
    status: str
    sealed: int = 0
    unsealable: int = 0
    skipped: frozenset[str] = frozenset()
    retries: int = 0


@dataclass(slots=True)
class _Copy:
    target: Target
    goal: str = ""
    after: str = "-"
    length: int = 0
    sealed: int = 0
    unsealable: int = 0
    skipped: frozenset[str] = frozenset()
    attempts: int = 0
    digest: Any = field(default_factory=lambda: hashlib.sha1(usedforsecurity=False))

    def restart(self, goal: str) -> None:
        self.goal, self.after, self.length = goal, "-", 0
        self.sealed = self.unsealable = 0
        self.skipped = frozenset()
        self.digest = hashlib.sha1(usedforsecurity=False)

    @property
    def done(self) -> bool:
        return self.after == self.goal


def _lower(after: str) -> str:
    return "-" if after == "-" else f"({after}"


class Restream:
    """Rewrites groups of streams on one Redis (or Cluster: each script touches one slot)."""

    def __init__(
        self,
        redis: Redis,
        transform: Transform,
        *,
        page: int = 1000,
        attempts: int = 5,
        ttl: int = TEMP_TTL,
    ) -> None:
        self.redis = redis
        self.transform = transform
        self.page = page
        self.attempts = attempts
        self.ttl = ttl

    async def plaintext(self, targets: Sequence[Target]) -> list[Target]:
        """The targets holding a plaintext entry, read on the server (nothing comes back)."""
        found: list[Target] = []
        todo = [(target, "-") for target in targets]
        while todo:
            calls = [
                ([t.key], [start, self.page, "letter" if t.letters else "entry", PACKED])
                for t, start in todo
            ]
            replies = await run_many(self.redis, FIND, calls)
            more = []
            for (target, _), (hit, start) in zip(todo, replies, strict=True):
                if int(hit):
                    found.append(target)
                elif text(start):
                    more.append((target, text(start)))
            todo = more
        return found

    async def rewrite(self, targets: Sequence[Target]) -> list[Outcome]:
        """Rewrite every target that holds plaintext; one outcome per target, in no order."""
        needing = await self.plaintext(targets)
        chosen = set(needing)
        outcomes = [Outcome(t, "sealed") for t in targets if t not in chosen]
        copies = [_Copy(target) for target in needing]
        await self._begin(copies)
        while copies:
            live = [c for c in copies if c.goal]
            outcomes += [Outcome(c.target, "gone") for c in copies if not c.goal]
            copies = []
            erased = await self._fill(live)
            outcomes += [
                Outcome(c.target, "erased", skipped=frozenset({c.target.user})) for c in erased
            ]
            ready = [c for c in live if c not in erased]
            stale: list[_Copy] = []
            for copy, reply in zip(ready, await self._swaps(ready), strict=True):
                outcome = self._settle(copy, reply)
                if outcome is None:
                    copies.append(copy)
                else:
                    outcomes.append(outcome)
                if copy.after == "-" if outcome is None else outcome.status in _ABANDONED:
                    stale.append(copy)  # a copy to start again, or one given up
            await self._drop(stale)
        return outcomes

    def _settle(self, copy: _Copy, reply: Any) -> Outcome | None:
        """The outcome of a swap, or None to try again (the copy is set up for it)."""
        status = text(reply[0])
        if status == "swapped":
            return Outcome(
                copy.target, "swapped", copy.sealed, copy.unsealable, copy.skipped, copy.attempts
            )
        if status in ("gone", "groups"):
            return Outcome(copy.target, status)
        if status == "changed" and not text(reply[2]):
            return Outcome(copy.target, "gone")  # emptied meanwhile
        copy.attempts += 1
        if copy.attempts >= self.attempts:
            return Outcome(copy.target, "busy", retries=copy.attempts)
        if status == "changed":
            length, last = int(reply[1]), text(reply[2])
            if copy.target.grows and length > copy.length:
                copy.goal = last  # appended to: copy on from where the copy ends
                return None
            copy.restart(last)
            return None
        copy.restart(copy.goal)
        return None

    async def _begin(self, copies: Sequence[_Copy]) -> None:
        """Each copy's goal, the original's last id now ("" if gone); old copies dropped."""
        pipe = self.redis.pipeline(transaction=False)
        for copy in copies:
            pipe.delete(copy.target.temp)
            pipe.xrevrange(copy.target.key, "+", "-", count=1)
        replies = await pipe.execute()
        for copy, newest in zip(copies, replies[1::2], strict=True):
            copy.goal = text(newest[0][0]) if newest else ""

    async def _drop(self, copies: Sequence[_Copy]) -> None:
        if copies:
            await self.redis.delete(*[c.target.temp for c in copies])

    async def _fill(self, copies: Sequence[_Copy]) -> list[_Copy]:
        """Copy pages until every copy reaches its goal; returns the copies dropped
        because their user was erased."""
        erased: list[_Copy] = []
        active = [c for c in copies if not c.done]
        while active:
            pipe = self.redis.pipeline(transaction=False)
            for copy in active:
                pipe.xrange(copy.target.key, _lower(copy.after), copy.goal, count=self.page)
            pages: list[Any] = await pipe.execute()
            raw = [[(bytes(i), dict(f)) for i, f in page] for page in pages]
            done = await self.transform([(c.target, p) for c, p in zip(active, raw, strict=True)])
            calls: list[Call] = []
            for copy, read, page in zip(active, raw, done, strict=True):
                if page.erased:
                    erased.append(copy)
                else:
                    calls.append(self._copy(copy, read, page))
            await run_many(self.redis, COPY, calls)
            active = [c for c in active if not c.done and c not in erased]
        await self._drop(erased)
        return erased

    def _copy(self, copy: _Copy, read: list[Entry], page: Page) -> Call:
        """The call writing a page to the copy; the copy's place moves on."""
        if copy.target.verify:
            for entry_id, fields in read:
                entry_digest(copy.digest, entry_id, fields)
        copy.length += len(read)
        copy.sealed += page.sealed
        copy.unsealable += page.unsealable
        copy.skipped |= page.skipped
        if len(read) < self.page:
            copy.after = copy.goal  # the goal itself may be gone (an XDEL): done all the same
        else:
            copy.after = read[-1][0].decode()
        return [copy.target.temp], [self.ttl, frame_entries(page.entries)]

    async def _swaps(self, copies: Sequence[_Copy]) -> list[Any]:
        if not copies:
            return []
        calls = [
            (
                [c.target.key, c.target.temp],
                [c.length, c.after, c.digest.hexdigest() if c.target.verify else ""],
            )
            for c in copies
        ]
        return await run_many(self.redis, SWAP, calls)


__all__ = ["Entry", "Outcome", "Page", "Restream", "Target", "Transform"]

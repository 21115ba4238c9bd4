"""Redis key naming: every key the event store touches, in one place.

Users map to one of K fixed partitions (``crc32(user_id) % K``). Every key of a
partition carries the hash tag ``{pNN}``, so one user's keys (history, feed,
dedupe, clinic, prescriptions, snapshot) always share a Redis Cluster slot and
one server-side script may touch them all (DESIGN.md, invariants 3 and 4).

Layout (``NN`` is the partition, zero-padded to the width of ``K - 1``, at
least two digits)::

    bt:{pNN}:user:<user_id>    the user's event history (authoritative, never trimmed)
    bt:{pNN}:feed              partition feed the prescriber group reads
    bt:{pNN}:rx:<user_id>      the user's PrescriptionChanged history
    bt:{pNN}:rxfeed            partition feed of PrescriptionChanged for channels
    bt:{pNN}:snap:<user_id>    snapshot hash (data, position, rules_version, state_version)
    bt:{pNN}:seen:<user_id>:<event_id>  the user's dedupe key (value: the stored
                               position), with a TTL
    bt:{pNN}:seen:<event_id>   the dedupe key older versions wrote (per partition, not
                               per user): read, never written, until its TTL ends
    bt:{pNN}:clinic:<user_id>  the clinic the user is enrolled with (set by an enrolment, or
                               by an operator's RehabStarted naming a clinic when none is)
    bt:{pNN}:enrolments        every enrolment, transfer and unenrolment of the partition's
                               users (who, when); never trimmed
    bt:{pNN}:audit             who read the partition's users' data, when (shared.audit);
                               no health data; trimmed by age (audit_retention_days)
    bt:{pNN}:rx:<version>:<user_id>    a versioned copy of the rx stream (a rebuild's
    bt:{pNN}:snap:<version>:<user_id>  staged or retired read model; ``<version>`` is
                                       ``staged:<rebuild_id>`` or ``retired:<rebuild_id>``)
    bt:{pNN}:dek:<user_id>     the user's data key, wrapped by a master key (shared.data_keys)
    bt:{pNN}:erased:<user_id>  the user's erasure record (shared.erasure), a hash: ``at``,
                               ``by``, ``state`` (started, done) and, while started, the
                               subscriptions to tell; no health data. Their data key was
                               destroyed and none is created again unless an operator
                               readmits the id; every other key of the user is deleted
    bt:dlq                     dead letters (not partitioned)
    bt:rebuild:<rebuild_id>    a rebuild's progress (operator metadata, not partitioned)
    bt:revocations             revoked tokens (not partitioned; trimmed, not history)

User ids never contain ``:``, so a versioned key can never be mistaken for a
user's current one, nor a user's dedupe key for an older one (an event id is a
UUID).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import ClassVar

PREFIX = "bt"
DLQ = f"{PREFIX}:dlq"
#: revoked token ids and subjects (shared.revocation_log); every API process watches it
REVOCATIONS = f"{PREFIX}:revocations"
#: the consumer group the prescriber reads the partition feeds with (tools read its lag)
PRESCRIBER_GROUP = "prescriber"
#: SCAN pattern of every wrapped data key (a master key rotation rewraps them all)
DATA_KEYS = f"{PREFIX}:{{p*}}:dek:*"


def partition(user_id: str, partitions: int) -> int:
    """The user's partition: ``crc32(user_id) % partitions``; stable forever for a given K."""
    return zlib.crc32(user_id.encode()) % partitions


def hash_tag(part: int, partitions: int) -> str:
    """The cluster hash tag of a partition, e.g. ``{p07}`` (wider when K > 100)."""
    width = max(2, len(str(partitions - 1)))
    return f"{{p{part:0{width}d}}}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for a store with ``partitions`` partitions. Pure; no I/O."""

    partitions: int = 16
    dlq: ClassVar[str] = DLQ
    #: ``bt:{pNN}`` of each partition, built once (ingest names six keys per event)
    _bases: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        bases = tuple(f"{PREFIX}:{hash_tag(p, self.partitions)}" for p in range(self.partitions))
        object.__setattr__(self, "_bases", bases)

    def partition(self, user_id: str) -> int:
        return zlib.crc32(user_id.encode()) % self.partitions

    def tag(self, part: int) -> str:
        return hash_tag(part, self.partitions)

    def _base(self, user_id: str) -> str:
        return self._bases[zlib.crc32(user_id.encode()) % self.partitions]

    def history(self, user_id: str) -> str:
        return f"{self._base(user_id)}:user:{user_id}"

    def feed(self, part: int) -> str:
        return f"{self._bases[part]}:feed"

    def feed_of(self, user_id: str) -> str:
        return f"{self._base(user_id)}:feed"

    def rx(self, user_id: str) -> str:
        return f"{self._base(user_id)}:rx:{user_id}"

    def rxfeed(self, part: int) -> str:
        return f"{self._bases[part]}:rxfeed"

    def rxfeed_of(self, user_id: str) -> str:
        return f"{self._base(user_id)}:rxfeed"

    def snapshot(self, user_id: str) -> str:
        return f"{self._base(user_id)}:snap:{user_id}"

    def read_model(self, kind: str, user_id: str, version: str) -> str:
        """A versioned copy of the user's ``rx`` or ``snap`` key, in the user's slot."""
        return f"{self._base(user_id)}:{kind}:{version}:{user_id}"

    def seen(self, user_id: str, event_id: str) -> str:
        """Dedupe key of the user's ``event_id``: the same id from two users is two events."""
        return f"{self._base(user_id)}:seen:{user_id}:{event_id}"

    def legacy_seen(self, user_id: str, event_id: str) -> str:
        """The dedupe key older versions wrote for ``event_id``: one per partition, any user's."""
        return f"{self._base(user_id)}:seen:{event_id}"

    def clinic(self, user_id: str) -> str:
        return f"{self._base(user_id)}:clinic:{user_id}"

    def enrolments(self, user_id: str) -> str:
        """The enrolment record stream of the user's partition (in the user's slot)."""
        return f"{self._base(user_id)}:enrolments"

    def data_key(self, user_id: str) -> str:
        """The user's wrapped data key (encryption at rest), in the user's slot."""
        return f"{self._base(user_id)}:dek:{user_id}"

    def erased(self, user_id: str) -> str:
        """The user's erasure tombstone, in the user's slot."""
        return f"{self._base(user_id)}:erased:{user_id}"

    def audit(self, user_id: str) -> str:
        """The audit stream of the user's partition (in the user's slot)."""
        return f"{self._base(user_id)}:audit"

    def audits(self) -> list[str]:
        """Every partition's audit stream, partition 0 first."""
        return [f"{base}:audit" for base in self._bases]

    def feeds(self) -> list[str]:
        """Every partition feed, partition 0 first."""
        return [self.feed(p) for p in range(self.partitions)]

    def rxfeeds(self) -> list[str]:
        """Every partition's PrescriptionChanged feed, partition 0 first."""
        return [self.rxfeed(p) for p in range(self.partitions)]


__all__ = ["DATA_KEYS", "DLQ", "PREFIX", "Keys", "hash_tag", "partition"]

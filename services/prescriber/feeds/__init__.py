"""The partition feeds in Redis: leases, ownership, one reader per owned partition, reclaiming.

``leases`` (one owner per partition) -> ``ownership`` (this instance's fair
share) -> ``reader`` (XREADGROUP loop per owned partition) -> ``consumer``
(decode, hand to the processor, ack or dead-letter); ``reclaimer`` retries
what stayed pending; ``metrics`` reports lag, pending entries and dead letters.
"""

"""A Redis client that can only read: what-if and as-of are read-only by construction."""

from __future__ import annotations

from typing import Any

READS = frozenset(
    {
        "scan_iter",
        "xrange",
        "xrevrange",
        "xlen",
        "get",
        "exists",
        "hget",
        "hgetall",
        "smembers",
        "execute",
    }
)


class ReadOnly:
    """Forwards read commands (and pipelines of them); anything else is an AttributeError."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def pipeline(self, transaction: bool = False) -> ReadOnly:
        return ReadOnly(self._client.pipeline(transaction=transaction))

    def __getattr__(self, name: str) -> Any:
        if name not in READS:
            raise AttributeError(f"read-only Redis: {name} is not allowed")
        return getattr(self._client, name)


__all__ = ["READS", "ReadOnly"]

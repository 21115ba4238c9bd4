"""Prometheus metrics of one ingest app, in its own registry.

A registry per app (not the process-global default) so tests that build many
apps, or two services in one process, never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from shared.store import Appended

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request and event counters plus a latency histogram for one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "backtrack_ingest_requests",
            "HTTP requests by endpoint (route template) and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "backtrack_ingest_events",
            "Events by outcome: accepted, duplicate, conflict (event_id already used with"
            " another payload, not stored), erased (the user was erased, not stored),"
            " rejected (invalid or forbidden),"
            " unavailable (store down, not stored), rate_limited (over the token's limit,"
            " not stored).",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "backtrack_ingest_request_duration_seconds",
            "Time from request start to response end, by endpoint.",
            ["endpoint"],
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def count_appended(self, results: list[Appended]) -> None:
        """Count each result under its status: accepted, duplicate, conflict or erased."""
        tally: dict[str, int] = {}
        for result in results:
            tally[result.status] = tally.get(result.status, 0) + 1
        for status, n in tally.items():
            self.events.labels(status).inc(n)

    def count(self, outcome: str, n: int = 1) -> None:
        if n:
            self.events.labels(outcome).inc(n)

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)

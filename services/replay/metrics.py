"""Prometheus metrics of one replay run, served on a port while it runs.

A replay is an operator's command, not a service: it has no HTTP app to hang
``/metrics`` on. With a port it serves its own registry from a background
thread (``serve``) until the command ends, and the same ``(users, events)``
progress callback that moves the progress bar moves the counters. Progress is
``backtrack_replay_events_total / backtrack_replay_events_expected``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class ReplayMetrics:
    """Users and events read so far, what the run will read, and when it started.

    One run per process, so one ``command`` label value per registry
    (``rebuild``, ``what-if``, ``as-of``: the CLI's names).
    """

    def __init__(self, command: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        label = ["command"]
        users = Counter(
            "backtrack_replay_users",
            "Users whose history this replay has read and folded.",
            label,
            registry=self.registry,
        )
        events = Counter(
            "backtrack_replay_events",
            "History entries this replay has read and folded.",
            label,
            registry=self.registry,
        )
        users_expected = Gauge(
            "backtrack_replay_users_expected",
            "Users this replay will read.",
            label,
            registry=self.registry,
        )
        events_expected = Gauge(
            "backtrack_replay_events_expected",
            "History entries the users of this replay held when it started (XLEN).",
            label,
            registry=self.registry,
        )
        started = Gauge(
            "backtrack_replay_started_timestamp_seconds",
            "Unix time this replay started reading.",
            label,
            registry=self.registry,
        )
        self.users, self.events = users.labels(command), events.labels(command)
        self.users_expected = users_expected.labels(command)
        self.events_expected = events_expected.labels(command)
        self.started = started.labels(command)

    def start(self, users: int, events: int) -> None:
        """The run begins: it will read ``users`` histories holding ``events`` entries."""
        self.users_expected.set(users)
        self.events_expected.set(events)
        self.started.set_to_current_time()

    def advance(self, users: int, events: int) -> None:
        """``users`` more histories, ``events`` more entries, read and folded."""
        self.users.inc(users)
        self.events.inc(events)


@contextlib.contextmanager
def serve(registry: CollectorRegistry, port: int | None, host: str) -> Iterator[None]:
    """Serve ``registry`` on ``http://host:port/metrics`` until the block ends; None: nothing.

    Raises ``OSError`` when the port cannot be bound (taken, or not allowed).
    """
    if port is None:
        yield
        return
    server, thread = start_http_server(port, host, registry=registry)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


__all__ = ["ReplayMetrics", "serve"]

"""Prometheus metrics of the webhook dispatcher, in the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Seconds; clinic endpoints answer in milliseconds to the 10 s timeout.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: What became of an attempt: delivered (2xx), retry (failed, another attempt
#: is scheduled), gone (410: the subscription is disabled), dead (out of
#: retries: dead-lettered; an erasure notice is given up instead).
OUTCOMES = ("delivered", "retry", "gone", "dead")


class WebhookMetrics:
    """Delivery attempts by outcome, how long endpoints took to answer, and changes
    dropped unsent (the subscription's clinic no longer holds the patient)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.attempts = Counter(
            "backtrack_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered, retry, gone (410), dead.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every series exists from the start, at 0
            self.attempts.labels(outcome)
        self.dropped = Counter(
            "backtrack_webhook_dropped",
            "Queued webhooks dropped unsent: the patient left the subscription's clinic.",
            registry=self.registry,
        )
        self.latency = Histogram(
            "backtrack_webhook_latency_seconds",
            "Time from sending a webhook to its answer (or the timeout).",
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def attempt(self, outcome: str, latency_ms: float) -> None:
        self.attempts.labels(outcome).inc()
        self.latency.observe(latency_ms / 1000)


__all__ = ["OUTCOMES", "WebhookMetrics"]

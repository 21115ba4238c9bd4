"""Settings from the environment (``BACKTRACK_*``), one object per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import DAY, KeyRing, Lifetimes

DEV_SECRET = "dev-only-secret-change-me"  # noqa: S105 - refused outside development
#: Seconds before each webhook retry: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (about 17.6 h in all).
DEFAULT_BACKOFF = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKTRACK_", frozen=True)

    environment: str = "development"
    redis_url: str | None = None
    secret: str = DEV_SECRET
    # tokens (shared/auth.py): secrets that still verify but no longer sign (a rotation; JSON list)
    previous_secrets: tuple[str, ...] = ()
    # default and maximum token lifetimes in seconds, per role; verification enforces the maximum
    token_ttl_device: int = Field(default=90 * DAY, ge=1)
    token_max_ttl_device: int = Field(default=180 * DAY, ge=1)
    token_ttl_clinic: int = Field(default=30 * DAY, ge=1)
    token_max_ttl_clinic: int = Field(default=90 * DAY, ge=1)
    token_ttl_operator: int = Field(default=8 * 3600, ge=1)
    token_max_ttl_operator: int = Field(default=DAY, ge=1)
    # revocations (shared/revocation_log.py): the watcher's longest XREAD BLOCK, and how long
    # its view may go without catching up before every token is refused (503); 5 s at most
    revocation_block_ms: int = Field(default=1000, ge=10, le=1500)
    revocation_stale_after: float = Field(default=4.0, gt=0.0, le=5.0)
    partitions: int = Field(default=16, ge=1, le=1024)
    ingest_port: int = 8000
    # uvicorn worker processes of the ingest API (each with its own Redis pool)
    ingest_workers: int = Field(default=1, ge=1, le=64)
    clinic_port: int = 8001
    host: str = "127.0.0.1"
    webhook_allow_private: bool = False
    dedupe_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    max_batch: int = Field(default=500, ge=1, le=5000)
    snapshot_every: int = Field(default=50, ge=1)
    max_deliveries: int = Field(default=5, ge=1)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    # partition leases (services/prescriber/feeds/leases.py): a dead owner's partitions
    # are taken over within about lease_ms + lease_renew_ms
    lease_ms: int = Field(default=5_000, ge=200)
    lease_renew_ms: int = Field(default=1_500, ge=50)
    data_dir: str = ".backtrack"
    # replay rebuild / what-if / as-of serve progress on this port while they run (--metrics-port)
    replay_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    # what-if and as-of over every user split the users between this many processes (--workers)
    replay_workers: int = Field(default=1, ge=1, le=64)
    # notification channels (services/channels)
    channels_port: int = 8002
    webhook_backoff: tuple[float, ...] = Field(default=DEFAULT_BACKOFF, min_length=1)
    webhook_jitter: float = Field(default=0.1, ge=0.0, le=0.5)
    webhook_timeout: float = Field(default=10.0, gt=0.0)
    webhook_lease: float = Field(default=60.0, gt=0.0)
    webhook_per_endpoint: int = Field(default=4, ge=1)
    webhook_max_inflight: int = Field(default=256, ge=1)
    sse_heartbeat: float = Field(default=15.0, gt=0.0)
    sse_max_streams: int = Field(default=500, ge=1)
    # an open SSE stream re-checks its token and read scope before every event and at
    # least this often, and closes when either no longer holds
    sse_recheck: float = Field(default=2.0, gt=0.0, le=60.0)

    @model_validator(mode="after")
    def _no_default_secret_in_production(self) -> Settings:
        if self.environment == "production" and self.secret == DEV_SECRET:
            raise ValueError("BACKTRACK_SECRET must be set in production")
        if self.webhook_lease <= self.webhook_timeout:
            raise ValueError("webhook_lease must be longer than webhook_timeout")
        if self.lease_renew_ms * 2 > self.lease_ms:
            raise ValueError("lease_renew_ms must be at most half of lease_ms")
        if self.environment == "production" and DEV_SECRET in self.previous_secrets:
            raise ValueError("BACKTRACK_PREVIOUS_SECRETS must not hold the development secret")
        if self.revocation_block_ms * 2 > self.revocation_stale_after * 1000:
            raise ValueError("revocation_block_ms must be at most half of revocation_stale_after")
        self.token_keys()
        self.token_lifetimes()
        return self

    def token_keys(self) -> KeyRing:
        """``secret`` signs; ``previous_secrets`` still verify."""
        return KeyRing(self.secret, self.previous_secrets)

    def token_lifetimes(self) -> Lifetimes:
        """The ``token_ttl_*`` and ``token_max_ttl_*`` settings."""
        return Lifetimes(
            {
                "device": self.token_ttl_device,
                "clinic": self.token_ttl_clinic,
                "operator": self.token_ttl_operator,
            },
            {
                "device": self.token_max_ttl_device,
                "clinic": self.token_max_ttl_clinic,
                "operator": self.token_max_ttl_operator,
            },
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()

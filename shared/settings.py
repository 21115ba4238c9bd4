"""Settings from the environment (``BACKTRACK_*``), one object per process.

Safe by default: the environment is ``production`` unless
``BACKTRACK_ENVIRONMENT`` says ``development`` or ``test`` (any case,
surrounding spaces ignored). Every other environment refuses, at start-up,
the development secret, a secret under ``MIN_SECRET_BYTES``, a missing or
development master key (``BACKTRACK_MASTER_KEY`` or ``_FILE``) and
``BACKTRACK_WEBHOOK_ALLOW_PRIVATE``; ``load`` turns a refusal into one clear
line per problem and exit status 1.
"""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import DAY, KeyRing, Lifetimes
from shared.sealing import MasterKey, MasterKeys, decode_key

DEV_SECRET = "dev-only-secret-change-me"  # noqa: S105 - refused outside development
#: Environments that may use the development secret, short secrets and private webhooks.
LOCAL_ENVIRONMENTS = frozenset({"development", "test"})
#: The shortest token signing key accepted outside development and test (an HMAC-SHA256 digest).
MIN_SECRET_BYTES = 32
#: A command that prints a fresh random secret.
KEY_COMMAND = "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
#: The master key development and test use when none is set (refused elsewhere).
DEV_MASTER_KEY = base64.b64encode(hashlib.sha256(b"backtrack development master key").digest())
#: A command that prints a fresh master key (base64 of 32 random bytes).
MASTER_KEY_COMMAND = "openssl rand -base64 32"
#: Seconds before each webhook retry: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h (about 17.6 h in all).
DEFAULT_BACKOFF = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BACKTRACK_", frozen=True)

    environment: str = "production"
    redis_url: str | None = None
    secret: str = DEV_SECRET
    # tokens (shared/auth.py): secrets that still verify but no longer sign (a rotation; JSON list)
    previous_secrets: tuple[str, ...] = ()
    # encryption at rest (shared/data_keys.py): the master key wrapping every patient's data
    # key, base64 of 32 bytes, or a file holding it (a mounted Secret); previous master keys
    # only unwrap (a rotation in progress; JSON list)
    master_key: str | None = Field(default=None, repr=False)
    master_key_file: str | None = None
    previous_master_keys: tuple[str, ...] = Field(default=(), repr=False)
    # unwrapped data keys a process keeps, and for how long: after an erasure another
    # process may open the patient's entries from its cache for at most this many seconds
    data_key_cache_size: int = Field(default=10_000, ge=1)
    data_key_cache_ttl: float = Field(default=10.0, gt=0.0, le=300.0)
    # whether new entries are sealed; off (development and benchmarks only) writes plaintext,
    # and sealed entries are still opened
    encrypt_at_rest: bool = True
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
    # the clinic and channels APIs take small JSON bodies (413 past this, before parsing)
    api_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
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
    # open SSE streams counted in Redis across processes: per clinic (operators share
    # one such pool) and per device user; a killed process's streams age out after the lease
    sse_max_streams_per_clinic: int = Field(default=100, ge=1)
    sse_max_streams_per_user: int = Field(default=5, ge=1)
    sse_lease_seconds: float = Field(default=30.0, ge=1.0)
    # the audit log of reads (shared/audit.py) keeps entries this long, then trims them
    audit_retention_days: int = Field(default=400, ge=1, le=36500)

    @field_validator("environment", mode="before")
    @classmethod
    def _normalise_environment(cls, value: object) -> object:
        return (value.strip().lower() or "production") if isinstance(value, str) else value

    @property
    def is_local(self) -> bool:
        """Development or test: the relaxed defaults are allowed."""
        return self.environment in LOCAL_ENVIRONMENTS

    @model_validator(mode="after")
    def _safe_outside_development(self) -> Settings:
        if self.is_local:
            return self
        where = f"refused when BACKTRACK_ENVIRONMENT is {self.environment!r}"
        problems = []
        if self.secret == DEV_SECRET:
            problems.append(
                f"BACKTRACK_SECRET is the development secret, {where}: set BACKTRACK_SECRET "
                f"to a random value ({KEY_COMMAND}), or BACKTRACK_ENVIRONMENT=development "
                "for local use"
            )
        elif len(self.secret.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"BACKTRACK_SECRET is {len(self.secret.encode())} bytes, {where}: it must be "
                f"at least {MIN_SECRET_BYTES} ({KEY_COMMAND})"
            )
        if DEV_SECRET in self.previous_secrets:
            problems.append(f"BACKTRACK_PREVIOUS_SECRETS holds the development secret, {where}")
        elif any(len(old.encode()) < MIN_SECRET_BYTES for old in self.previous_secrets):
            problems.append(
                f"BACKTRACK_PREVIOUS_SECRETS holds a secret under {MIN_SECRET_BYTES} bytes, {where}"
            )
        problems.extend(self._master_key_problems(where))
        if not self.encrypt_at_rest:
            problems.append(
                "BACKTRACK_ENCRYPT_AT_REST=0 stores health data in plain text and is for "
                f"development and benchmarks only, {where}: unset it"
            )
        if self.webhook_allow_private:
            problems.append(
                "BACKTRACK_WEBHOOK_ALLOW_PRIVATE lets webhooks reach private addresses and is "
                f"for development and tests only, {where}: unset it"
            )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _master_key_problems(self, where: str) -> list[str]:
        if self.master_key is None and self.master_key_file is None:
            return [
                f"BACKTRACK_MASTER_KEY is not set, {where}: set it to base64 of 32 random "
                f"bytes ({MASTER_KEY_COMMAND}), or BACKTRACK_MASTER_KEY_FILE to a file holding "
                "it, or BACKTRACK_ENVIRONMENT=development for local use"
            ]
        try:
            masters = self.master_keys()
        except ValueError:
            return []  # _consistent names what is wrong with it, everywhere
        if MasterKey(decode_key(DEV_MASTER_KEY.decode())).id in masters.by_id:
            return [f"a master key setting holds the development master key, {where}"]
        return []

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.webhook_lease <= self.webhook_timeout:
            raise ValueError("webhook_lease must be longer than webhook_timeout")
        if self.lease_renew_ms * 2 > self.lease_ms:
            raise ValueError("lease_renew_ms must be at most half of lease_ms")
        if self.revocation_block_ms * 2 > self.revocation_stale_after * 1000:
            raise ValueError("revocation_block_ms must be at most half of revocation_stale_after")
        if self.master_key is not None and self.master_key_file is not None:
            raise ValueError("set BACKTRACK_MASTER_KEY or BACKTRACK_MASTER_KEY_FILE, not both")
        self.token_keys()
        self.token_lifetimes()
        self.master_keys()
        return self

    def master_keys(self) -> MasterKeys:
        """``master_key`` (or the file's) wraps data keys; ``previous_master_keys`` unwrap.

        With neither set (development and test only) the development master key.
        Raises ValueError for a key that is not base64 of 32 bytes or a file not read.
        """
        name, current = "BACKTRACK_MASTER_KEY", self.master_key or DEV_MASTER_KEY.decode()
        try:
            if self.master_key_file is not None:
                name = "BACKTRACK_MASTER_KEY_FILE"
                current = Path(self.master_key_file).read_text()
            key = MasterKey(decode_key(current))
            name = "BACKTRACK_PREVIOUS_MASTER_KEYS"
            previous = tuple(MasterKey(decode_key(old)) for old in self.previous_master_keys)
            return MasterKeys(key, previous)
        except OSError as exc:
            raise ValueError(f"{name}: {exc.strerror}: {self.master_key_file}") from None
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

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


S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S]) -> S:
    """``cls()`` from the environment, or SystemExit with one line per problem (status 1).

    The services' and the CLI's start-up: a refused configuration says what
    to change instead of a traceback.
    """
    try:
        return cls()
    except ValidationError as exc:
        raise SystemExit(refusal(exc)) from None


def refusal(exc: ValidationError) -> str:
    """The problems of a refused configuration, one per line, naming the variables."""
    lines = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        field = ".".join(str(part) for part in error["loc"])
        lines.append(f"BACKTRACK_{field.upper()}: {message}" if field else message)
    return "configuration refused:\n  " + "\n  ".join(lines)


@lru_cache
def get_settings() -> Settings:
    return load(Settings)

"""The one settings object per process: ``MIDWATCH_``-prefixed environment, validated at start-up."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "driver_url", "get_settings", "reset_settings"]


def driver_url(url: str) -> str:
    """``url`` with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL; others unchanged)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


class Settings(BaseSettings):
    """Process configuration. Every field maps to ``MIDWATCH_<FIELD>``; ``midwatch config`` prints it masked."""

    # env_ignore_empty: `MIDWATCH_HEALTH_PORT=` (as compose files write an unset value) means the default.
    model_config = SettingsConfigDict(env_prefix="MIDWATCH_", extra="ignore", validate_default=True,
                                      env_ignore_empty=True)

    env: Literal["embedded", "production"] = "embedded"
    data_dir: Path = Path(".midwatch")
    database_url: str = ""  # empty: sqlite file in data_dir
    broker_url: str = "stub://"  # stub:// | redis://... | amqp://...
    queue_name: str = "midwatch"
    redis_namespace: str = "midwatch"

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    api_workers: int = Field(0, ge=0, le=256)  # `midwatch api` processes; 0: one per CPU
    dashboard_port: int = Field(8501, ge=1, le=65535)
    # Worker/scheduler /healthz, /readyz, /metrics. None: the process kind's default (scheduler 9090, worker 9091,
    # and a worker whose default is taken by another worker on the host takes the next free port up to 9099);
    # a number: exactly that port (in use: the process refuses to start); 0: no health server.
    health_port: int | None = Field(None, ge=0, le=65535)

    operator_key: SecretStr | None = None
    master_key: SecretStr | None = None  # base64 of 32 bytes: wraps every tenant secret's data key
    master_key_file: Path | None = None  # a mounted file holding the same (e.g. a Kubernetes Secret)

    worker_threads: int = Field(4, ge=1, le=256)
    lease_seconds: float = Field(4.0, gt=0)  # renewed every lease/3 s; a dead worker's run resumes after it
    time_slice_seconds: float = Field(30.0, gt=0)
    max_redeliveries: int = Field(5, ge=1)
    sweep_interval_seconds: float = Field(0.5, gt=0)  # a dead worker's run resumes within lease + this
    wake_grace_seconds: float = Field(30.0, gt=0)  # a queued run nobody picked up is re-sent after this
    shutdown_grace_s: float = Field(25.0, ge=0)
    actor_time_limit_s: float = Field(600.0, gt=0)
    # relaxed: pure steps, claims and hand-backs commit without waiting for PostgreSQL's WAL flush (a server
    # crash can only make such pure work run again); strict: every commit waits for the flush.
    durability: Literal["relaxed", "strict"] = "relaxed"

    max_body_bytes: int = Field(1_048_576, ge=1024)  # every endpoint but run submission
    max_run_body_bytes: int = Field(33_554_432, ge=1024)  # run submission (batch items)
    max_batch_items: int = Field(100_000, ge=1)
    allow_loopback_egress: bool = False
    rate_limit_per_minute: int = Field(600, ge=1)
    auth_failures_per_minute: int = Field(30, ge=1)  # failed authentications per client address, then 429
    redis_url: str = ""  # rate-limit counters; empty: the broker's Redis if it is one, else batched in the database

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["console", "json"] | None = None  # None: json when env=production, else console

    # Observability (see README "Observability").
    otlp_endpoint: str = ""  # OTLP/HTTP traces endpoint; empty: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, else off
    # The API's /metrics names tenants, agents, hosts and secrets: with a token it answers only `Bearer <token>`;
    # without one it is open in embedded mode and refused in production (worker/scheduler health ports stay open).
    metrics_token: SecretStr | None = None
    metrics_db_gauges: Literal["auto", "on", "off"] = "auto"  # auto: api, scheduler and `up` export them
    metrics_refresh_seconds: float = Field(15.0, ge=0.0, le=3600.0)  # database gauges are at most this stale (0: none)
    heartbeat_seconds: float = Field(5.0, ge=0.5, le=300.0)  # worker/scheduler heartbeat row period

    @field_validator("broker_url")
    @classmethod
    def _known_broker(cls, value: str) -> str:
        if not value.startswith(("stub://", "redis://", "rediss://", "amqp://", "amqps://")):
            raise ValueError("broker_url must start with stub://, redis://, rediss://, amqp:// or amqps://")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("otlp_endpoint must be an http:// or https:// URL (OTLP over HTTP)")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("database_url must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _production_needs_services(self) -> Settings:
        if self.env == "production":
            if not self.database_url.startswith(("postgresql", "postgres://")):
                raise ValueError("MIDWATCH_ENV=production needs MIDWATCH_DATABASE_URL=postgresql://...")
            if self.broker_url.startswith("stub://"):
                raise ValueError("MIDWATCH_ENV=production needs a Redis or RabbitMQ MIDWATCH_BROKER_URL")
            if self.master_key is None and self.master_key_file is None:
                raise ValueError(
                    "MIDWATCH_ENV=production needs the secrets master key: set MIDWATCH_MASTER_KEY (base64 of "
                    "32 random bytes, e.g. `openssl rand -base64 32`) or MIDWATCH_MASTER_KEY_FILE (a file holding it)"
                )
        if self.master_key is not None and self.master_key_file is not None:
            raise ValueError("set only one of MIDWATCH_MASTER_KEY and MIDWATCH_MASTER_KEY_FILE")
        return self

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        return driver_url(self.database_url or f"sqlite:///{(self.data_dir / 'midwatch.db').resolve()}")

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        """``log_format`` if set, else JSON in production and human-readable lines elsewhere."""
        if self.log_format is not None:
            return self.log_format
        return "json" if self.env == "production" else "console"

    def masked(self) -> dict[str, Any]:
        """Every setting, secrets shown as ``****`` and URL passwords hidden."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(getattr(self, name), SecretStr):
                out[name] = "****" if getattr(self, name) is not None else None
            elif name.endswith("_url") and isinstance(value, str):
                out[name] = _mask_url_password(value)
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        return out


def _mask_url_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, has_pw, _ = creds.partition(":")
    return f"{scheme}://{user}{':****' if has_pw else ''}@{host}"


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read and validated once."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings (the CLI re-reads them after applying its flags)."""
    get_settings.cache_clear()

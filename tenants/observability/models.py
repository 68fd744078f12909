"""Table: worker_heartbeats (one row per live worker or scheduler process)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import UtcDateTime

__all__ = ["HEARTBEAT_KINDS", "WorkerHeartbeat"]

HEARTBEAT_KINDS = ("worker", "scheduler")


class WorkerHeartbeat(Base):
    """A process that executes runs (``worker``) or sweeps (``scheduler``), refreshed every ``interval_s``.

    A row whose ``last_seen_at`` is older than :data:`tenants.observability.service.ALIVE_FACTOR` intervals
    belongs to a process that died without saying goodbye; a clean stop deletes its row.
    """

    __tablename__ = "worker_heartbeats"
    __table_args__ = (Index("ix_worker_heartbeats_kind_seen", "kind", "last_seen_at"),)

    id: Mapped[str] = mapped_column(String(160), primary_key=True)  # kind:host:pid:random
    kind: Mapped[str] = mapped_column(String(16))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer, default=0)
    health_port: Mapped[int | None] = mapped_column(Integer, nullable=True)  # where /metrics is, if served
    version: Mapped[str] = mapped_column(String(32))
    interval_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime())

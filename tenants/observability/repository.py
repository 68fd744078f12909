"""All SQL for worker heartbeats: platform-level rows (no tenant), written by the processes themselves."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from tenants.kit.db import upsert
from tenants.kit.repository import PlatformRepository
from tenants.observability.models import WorkerHeartbeat

__all__ = ["PlatformHeartbeatRepository"]


class PlatformHeartbeatRepository(PlatformRepository):
    """The processes' own heartbeat rows, and the operator's view of them."""

    def beat(self, values: dict[str, Any]) -> None:
        """Insert the process's row or refresh it (one upsert statement)."""
        stmt = upsert(self.session, WorkerHeartbeat).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"last_seen_at": stmt.excluded.last_seen_at, "health_port": stmt.excluded.health_port,
                  "threads": stmt.excluded.threads, "interval_s": stmt.excluded.interval_s})
        self.session.execute(stmt)

    def remove(self, heartbeat_id: str) -> None:
        """A clean stop: the process is gone on purpose."""
        self.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == heartbeat_id))

    def prune(self, before: datetime) -> int:
        """Forget processes silent since ``before`` (long dead); returns how many rows went."""
        res = self.session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.last_seen_at < before)
                                   .returning(WorkerHeartbeat.id)).all()
        return len(res)

    def all(self) -> Sequence[WorkerHeartbeat]:
        """Every row (a handful: one per process), newest first."""
        return self.session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.kind,
                                                                     WorkerHeartbeat.last_seen_at.desc())).all()

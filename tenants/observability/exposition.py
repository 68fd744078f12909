"""What ``/metrics`` returns: the event metrics of this process (or of every process of a multiprocess API)
plus, where enabled, the database gauges, exported once per scrape.

- Single process (a worker, the scheduler, ``midwatch up``, ``midwatch api`` with one process): the
  default registry.
- Several API processes: set ``PROMETHEUS_MULTIPROC_DIR`` (``midwatch api --workers N`` does it through
  :func:`prepare_multiprocess_dir`) before prometheus-client is imported; each process writes its values to
  files there and whichever process answers a scrape sums them (:class:`MultiProcessCollector`).
- The database gauges come from :class:`DatabaseCollector`, added to the registry of the one answer, so
  they appear once per scrape whatever the number of processes. Each process refreshes its snapshot at most
  every ``MIDWATCH_METRICS_REFRESH_SECONDS`` (the slower reliability aggregates every 4th time), and only
  when scraped; a refresh in progress or a failed one serves the previous snapshot, flagged by
  ``midwatch_metrics_snapshot_ok`` and ``midwatch_metrics_snapshot_age_seconds``.

Which processes export the database gauges: ``MIDWATCH_METRICS_DB_GAUGES`` = ``auto`` (the API, the
scheduler and ``midwatch up``; not workers, of which there are many), ``on`` or ``off``. Several
replicas exporting them is harmless: the alert rules and the dashboard take ``max`` over instances.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tenants.kit import metrics
from tenants.kit.db import read_only
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger
from tenants.kit.settings import Settings
from tenants.observability.service import BREAKER_LEVEL, Snapshot, take_snapshot

__all__ = ["DatabaseCollector", "SnapshotCache", "db_gauges_enabled", "metric_names", "multiprocess_dir",
           "prepare_multiprocess_dir", "render_metrics"]

log = get_logger("metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RELIABILITY_EVERY = 4  # the rollup aggregates are refreshed every 4th snapshot


def db_gauges_enabled(settings: Settings, process: str) -> bool:
    """Whether ``process`` (api, worker, scheduler, embedded) exports the database gauges."""
    if settings.metrics_db_gauges != "auto":
        return settings.metrics_db_gauges == "on"
    return process != "worker"


def multiprocess_dir() -> str | None:
    """The multiprocess directory in effect (``PROMETHEUS_MULTIPROC_DIR``), if any."""
    return os.environ.get(MULTIPROC_ENV) or None


def prepare_multiprocess_dir(path: Path) -> Path:
    """Make ``path`` the (emptied) multiprocess directory for processes started after this call.

    Call in the parent before it starts the API processes (each imports prometheus-client afresh and picks
    the directory up); stale files of an earlier run are removed so counters start from zero.
    """
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


class SnapshotCache:
    """The latest database snapshot, refreshed at most every ``refresh_s`` and only when asked for."""

    def __init__(self, refresh_s: float, reader: Callable[[Snapshot | None, bool], Snapshot] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_s = refresh_s
        self._reader = reader or _read_snapshot
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = float("-inf")
        self._refreshes = 0
        self.ok = False
        self.duration_s = 0.0

    def get(self) -> Snapshot | None:
        """The snapshot to export: refreshed if stale, unless another thread is refreshing it (then the previous
        one; the very first caller waits for the first snapshot)."""
        if self._clock() - self._taken < self.refresh_s and self._snapshot is not None:
            return self._snapshot
        if not self._lock.acquire(blocking=self._snapshot is None):
            return self._snapshot
        try:
            if self._clock() - self._taken >= self.refresh_s or self._snapshot is None:
                self._refresh()
        finally:
            self._lock.release()
        return self._snapshot

    def _refresh(self) -> None:
        started = self._clock()
        with_reliability = self._refreshes % RELIABILITY_EVERY == 0 or self._snapshot is None
        try:
            self._snapshot = self._reader(self._snapshot, with_reliability)
            self.ok = True
            self._refreshes += 1
        except Exception as exc:  # a broken database must not break the scrape of the event metrics
            self.ok = False
            log.warning("metrics_snapshot_failed", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._taken = self._clock()
            self.duration_s = self._taken - started


def _read_snapshot(previous: Snapshot | None, with_reliability: bool) -> Snapshot:
    with read_only() as session:
        return take_snapshot(session, reliability_figures=with_reliability, previous=previous)


def _gauge(name: str) -> GaugeMetricFamily:
    help_text, labels = metrics.DB_GAUGES[name]
    return GaugeMetricFamily(name, help_text, labels=list(labels))


def _tenant_families(snap: Snapshot, fam: dict[str, GaugeMetricFamily]) -> None:
    """Per tenant, zeros included (so an alert sees the recovery): live runs, waits, webhooks."""
    for tenant, (name, status) in snap.tenants.items():
        fam["midwatch_tenant_info"].add_metric([tenant, name, status], 1.0)
        for state in ("queued", "running", "waiting_approval", "escalated"):
            fam["midwatch_runs"].add_metric([tenant, state], float(snap.runs.get((tenant, state), 0)))
        fam["midwatch_runs_stuck"].add_metric([tenant], float(snap.runs.get((tenant, "stuck"), 0)))
        for count_name, age_name, waiting in (
                ("midwatch_queue_depth", "midwatch_queue_oldest_waiting_seconds", snap.queued.get(tenant)),
                ("midwatch_escalations_waiting", "midwatch_escalation_oldest_waiting_seconds",
                 snap.escalated.get(tenant)),
                ("midwatch_approvals_waiting", "midwatch_approval_oldest_waiting_seconds", snap.approvals.get(tenant))):
            fam[count_name].add_metric([tenant], float(waiting.count) if waiting else 0.0)
            fam[age_name].add_metric([tenant], waiting.oldest_s if waiting else 0.0)
        fam["midwatch_approvals_overdue"].add_metric([tenant], float(snap.approvals_overdue.get(tenant, 0)))
        hooks = snap.webhooks.get(tenant)
        fam["midwatch_webhook_deliveries_pending"].add_metric([tenant], float(hooks.pending if hooks else 0))
        fam["midwatch_webhook_deliveries_retrying"].add_metric([tenant], float(hooks.retrying if hooks else 0))
        fam["midwatch_webhook_deliveries_failed_recent"].add_metric([tenant],
                                                                    float(hooks.failed_recent if hooks else 0))


def _resource_families(snap: Snapshot, fam: dict[str, GaugeMetricFamily]) -> None:
    """Breakers, budgets and secrets."""
    for b in snap.breakers:
        fam["midwatch_breaker_state"].add_metric([b.tenant_id, b.host], float(BREAKER_LEVEL.get(b.state, 2)))
    for u in snap.budgets:
        key = [u.tenant_id, u.agent, u.metric, u.period]
        fam["midwatch_budget_limit"].add_metric(key, float(u.limit))
        fam["midwatch_budget_used"].add_metric(key, float(u.used))
        fam["midwatch_budget_reserved"].add_metric(key, float(u.reserved))
    for s in snap.secrets:
        fam["midwatch_secret_age_seconds"].add_metric([s.tenant_id, s.name], s.age_s)
        fam["midwatch_secret_rotation_max_age_seconds"].add_metric([s.tenant_id, s.name], s.max_age_s)


def _agent_families(snap: Snapshot, fam: dict[str, GaugeMetricFamily]) -> None:
    """Measured reliability per agent and window; SLO, incident and MTTR once per agent."""
    for window, agents in snap.agents.items():
        for a in agents:
            key = [a.tenant_id, a.agent]
            for outcome, n in a.runs.items():
                fam["midwatch_agent_runs"].add_metric([*key, outcome, window], float(n))
            fam["midwatch_agent_cost_usd"].add_metric([*key, window], float(a.cost_usd))
            fam["midwatch_agent_retries"].add_metric([*key, window], float(a.retries))
            if a.measured is not None:
                fam["midwatch_agent_success_ratio"].add_metric([*key, window], a.measured)
            if a.projected is not None:
                fam["midwatch_agent_projected_success_ratio"].add_metric([*key, window], a.projected)
            for step in a.steps:
                if step.success is not None:
                    fam["midwatch_agent_step_success_ratio"].add_metric([*key, step.step_id, window], step.success)
    for a in snap.agents.get("7d", ()):
        key = [a.tenant_id, a.agent]
        fam["midwatch_agent_slo_ratio"].add_metric(key, a.slo)
        fam["midwatch_agent_open_incident"].add_metric(key, 1.0 if a.open_incident else 0.0)
        if a.mttr_s is not None:
            fam["midwatch_agent_mttr_seconds"].add_metric(key, a.mttr_s)


def snapshot_families(snap: Snapshot | None, *, ok: bool, duration_s: float) -> list[Metric]:
    """The database gauges of one snapshot (only the snapshot's own health when there is none yet)."""
    fam = {name: _gauge(name) for name in metrics.DB_GAUGES}
    fam["midwatch_metrics_snapshot_ok"].add_metric([], 1.0 if ok and snap is not None else 0.0)
    fam["midwatch_metrics_snapshot_duration_seconds"].add_metric([], duration_s)
    if snap is None:
        return [fam[n] for n in ("midwatch_metrics_snapshot_ok", "midwatch_metrics_snapshot_duration_seconds")]
    fam["midwatch_metrics_snapshot_age_seconds"].add_metric([], max(0.0, (utcnow() - snap.taken_at).total_seconds()))
    _tenant_families(snap, fam)
    _resource_families(snap, fam)
    _agent_families(snap, fam)
    fam["midwatch_workers_alive"].add_metric([], float(len(snap.alive("worker"))))
    fam["midwatch_schedulers_alive"].add_metric([], float(len(snap.alive("scheduler"))))
    for kind in ("worker", "scheduler"):
        ages = [h.age_s for h in snap.heartbeats if h.kind == kind]
        if ages:
            fam["midwatch_heartbeat_age_seconds"].add_metric([kind], min(ages))
    return list(fam.values())


class DatabaseCollector(Collector):
    """A prometheus-client collector exporting :data:`tenants.kit.metrics.DB_GAUGES` from a
    :class:`SnapshotCache`."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache

    def describe(self) -> Iterable[Metric]:
        return [_gauge(name) for name in metrics.DB_GAUGES]

    def collect(self) -> Iterable[Metric]:
        snap = self.cache.get()
        return snapshot_families(snap, ok=self.cache.ok, duration_s=self.cache.duration_s)


class _Chain(Collector):
    def __init__(self, *parts: Collector) -> None:
        self.parts = parts

    def collect(self) -> Iterator[Metric]:
        for part in self.parts:
            yield from part.collect()


_collector: DatabaseCollector | None = None
_collector_lock = threading.Lock()


def database_collector(settings: Settings) -> DatabaseCollector:
    """This process's database collector (one snapshot cache per process)."""
    global _collector
    with _collector_lock:
        if _collector is None or _collector.cache.refresh_s != settings.metrics_refresh_seconds:
            _collector = DatabaseCollector(SnapshotCache(settings.metrics_refresh_seconds))
        return _collector


def reset_collector() -> None:
    """Forget the process's snapshot cache (tests switch databases)."""
    global _collector
    with _collector_lock:
        _collector = None


def _event_registry() -> Collector:
    path = multiprocess_dir()
    if path is None:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def render_metrics(settings: Settings, *, database: bool) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer."""
    parts: list[Collector] = [_event_registry()]
    if database:
        parts.append(database_collector(settings))
    return generate_latest(_Chain(*parts)), CONTENT_TYPE_LATEST


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", ""),
             "gauge": ("",), "info": ("_info",), "stateset": ("",), "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
             "unknown": ("",)}


def metric_names(settings: Settings, *, database: bool = True) -> set[str]:
    """Every series name this process exports (``*_total``, ``*_bucket``...), used or not yet: the alert
    rules and the dashboard are checked against it."""
    names = {m.name + suffix for m in _event_registry().collect() for suffix in _SUFFIXES.get(m.type, ("",))}
    if database:
        names |= set(metrics.DB_GAUGES)
    return names

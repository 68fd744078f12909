"""The one place that builds the Dramatiq broker, with every middleware listed explicitly.

Dramatiq's defaults (20 retries over 7 days, 10-minute time limit) are wrong for agents: the
database is the source of truth and the sweeper re-sends lost wake-ups, so broker retries are a
short second line only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit

from tenants.kit.db import set_dispatcher
from tenants.kit.settings import Settings

__all__ = ["Registrar", "actor_options", "broker_ready", "init_broker", "reset_broker"]

Registrar = Callable[[dramatiq.Broker, Settings], None]  # declares the actors on a new broker

_lock = threading.Lock()
_broker: dramatiq.Broker | None = None


def actor_options(settings: Settings) -> dict[str, Any]:
    """The one set of actor options, given both to every actor and to the middleware as its defaults.

    Retries: 3 attempts with 1 s..30 s backoff for errors that escape the engine (e.g. the database is
    down). Messages older than a day are dropped: the sweeper re-enqueues anything still active."""
    return {"max_retries": 3, "min_backoff": 1_000, "max_backoff": 30_000, "max_age": 86_400_000,
            "time_limit": int(settings.actor_time_limit_s * 1000)}


def _middleware(settings: Settings) -> list[Any]:
    options = actor_options(settings)
    return [
        AgeLimit(max_age=options["max_age"]),
        TimeLimit(time_limit=options["time_limit"], interval=1000),
        ShutdownNotifications(notify_shutdown=False),
        Retries(max_retries=options["max_retries"], min_backoff=options["min_backoff"],
                max_backoff=options["max_backoff"]),
        CurrentMessage(),
    ]


def _build(settings: Settings) -> dramatiq.Broker:
    url = settings.broker_url
    middleware = _middleware(settings)
    if url.startswith("stub://"):
        return StubBroker(middleware=middleware)
    if url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(url=url, namespace=settings.redis_namespace, middleware=middleware)  # type: ignore[no-untyped-call]
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(url=url, middleware=middleware, confirm_delivery=True)


def init_broker(settings: Settings, register: Registrar) -> dramatiq.Broker:
    """Build the process's broker once, declare the actors on it with ``register`` (the composition root
    passes ``runner.actors.register_actors``), and install the after-commit dispatcher so ``tenants`` can
    enqueue by actor name."""
    global _broker
    with _lock:
        if _broker is not None:
            return _broker
        broker = _build(settings)
        dramatiq.set_broker(broker)
        register(broker, settings)
        queue = settings.queue_name

        def dispatch(actor_name: str, kwargs: dict[str, Any], delay_s: float) -> None:
            message: dramatiq.Message[Any] = dramatiq.Message(
                queue_name=queue, actor_name=actor_name, args=(), kwargs=kwargs, options={})
            broker.enqueue(message, delay=int(delay_s * 1000) if delay_s > 0 else None)

        set_dispatcher(dispatch)
        _broker = broker
        return broker


def reset_broker() -> None:
    """Close and forget the broker (tests switch brokers between sessions)."""
    global _broker
    with _lock:
        if _broker is not None:
            _broker.close()
        _broker = None
        set_dispatcher(None)


def broker_ready() -> None:
    """Raise if the broker cannot be reached (used by /readyz)."""
    broker = _broker
    if broker is None:
        raise RuntimeError("broker not initialised")
    client = getattr(broker, "client", None)
    if client is not None:  # Redis
        client.ping()
        return
    if hasattr(broker, "connection"):  # RabbitMQ: opening the thread's connection proves reachability
        _ = broker.connection

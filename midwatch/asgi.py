"""The API as an ASGI application factory, so ``midwatch api --workers N`` can start N processes: uvicorn
imports ``midwatch.asgi:create`` in each worker process, and each sets itself up (settings, broker, keyring)."""

from __future__ import annotations

from litestar import Litestar

__all__ = ["create"]


def create() -> Litestar:
    """Set this process up and build the API (uvicorn calls it once per worker process)."""
    from midwatch.services import bootstrap
    from platform_api.app import create_app
    from runner.broker import broker_ready
    from tenants.kit.settings import get_settings

    settings = get_settings()
    bootstrap(settings, migrate=False)
    return create_app(settings, readiness={"broker": broker_ready})

"""Build the provider behind a :class:`~runner.providers.remote.ModelConfig`."""

from __future__ import annotations

from typing import Any

from runner.providers.anthropic import AnthropicProvider
from runner.providers.base import Provider
from runner.providers.openai_compat import OpenAICompatProvider
from runner.providers.remote import ModelConfig, SecretResolver
from runner.providers.sandbox import SandboxModel
from runner.tools.egress import EgressClient

__all__ = ["build_provider"]


def build_provider(config: ModelConfig, client: EgressClient, secrets: SecretResolver,
                   **options: Any) -> Provider:
    """The provider for ``config``; ``options`` go to the HTTP providers (breaker, sleep, ...)."""
    if config.provider == "sandbox":
        return SandboxModel(config)
    if config.provider == "anthropic":
        return AnthropicProvider(config, client, secrets, **options)
    return OpenAICompatProvider(config, client, secrets, **options)

"""Providers by vendor name: built-in ones, entry points, and ones registered at run time.

A provider is named by an import path `"package.module:Class"` and imported only when first
used, so an optional SDK costs nothing until a route needs it. Outside packages add providers
through the entry-point group `sparklio.llm_providers`; tests and apps may `register()` a class.
Adding a provider never touches the gateway or the router.
"""

from __future__ import annotations

import asyncio
import importlib
from importlib.metadata import entry_points
from typing import Any

from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError
from sparklio.services.llm.providers.base import LLMProvider

ENTRY_POINT_GROUP = "sparklio.llm_providers"

#: The providers that ship with Sparklio.
BUILTIN_PROVIDERS: dict[str, str] = {
    "mock": "sparklio.services.llm.providers.mock:MockProvider",
    "ollama": "sparklio.services.llm.providers.ollama:OllamaProvider",
    "openai": "sparklio.services.llm.providers.openai:OpenAIProvider",
    "anthropic": "sparklio.services.llm.providers.anthropic:AnthropicProvider",
    "llamacpp": "sparklio.services.llm.providers.llamacpp:LlamaCppProvider",
}


class ProviderUnavailableError(ConfigError):
    """A provider cannot be created here (its package is missing or its import fails)."""


class ProviderRegistry:
    """Maps vendor names to provider classes and holds one instance of each in use."""

    def __init__(self, settings: Settings, *, load_entry_points: bool = True) -> None:
        self.settings = settings
        self._specs: dict[str, str | type[LLMProvider]] = dict(BUILTIN_PROVIDERS)
        if load_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._specs.setdefault(ep.name, ep.value)
        self._instances: dict[str, LLMProvider] = {}
        self._configs: dict[str, dict[str, Any]] = {}

    def configure(self, configs: dict[str, dict[str, Any]]) -> None:
        """Per-provider settings from the routing file's `providers` section."""
        self._configs = dict(configs)
        self._instances.clear()

    def register(self, name: str, provider: str | type[LLMProvider]) -> None:
        """Add or replace a provider: a class, or its import path `"module:Class"`."""
        self._specs[name] = provider
        self._instances.pop(name, None)

    def names(self) -> list[str]:
        """Every vendor name this registry knows, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> LLMProvider:
        """The shared instance of provider `name`, created on first use."""
        instance = self._instances.get(name)
        if instance is None:
            instance = self._load(name)(self.settings)
            instance.configure(self._configs.get(name, {}))
            self._instances[name] = instance
        return instance

    def _load(self, name: str) -> type[LLMProvider]:
        spec = self._specs.get(name)
        if spec is None:
            raise ProviderUnavailableError(
                f"Unknown provider {name!r}; known providers: {', '.join(self.names())}."
            )
        if not isinstance(spec, str):
            return spec
        module_name, _, class_name = spec.partition(":")
        try:
            cls: Any = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ProviderUnavailableError(
                f"Provider {name!r} cannot be loaded from {spec!r}: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, LLMProvider)):
            raise ProviderUnavailableError(f"Provider {name!r}: {spec!r} is not an LLMProvider.")
        return cls

    async def aclose(self) -> None:
        """Close every provider that was created."""
        instances, self._instances = list(self._instances.values()), {}
        await asyncio.gather(*(p.aclose() for p in instances), return_exceptions=True)

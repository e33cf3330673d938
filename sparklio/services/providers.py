"""What LLM and media providers share: the lifecycle around `generate`, and the registry
that finds them by vendor name.

A provider is named by an import path `"package.module:Class"` and imported only when first
used, so an optional dependency costs nothing until a route needs it. Outside packages add
providers through an entry-point group; tests and apps may `register()` a class. Adding a
provider never touches a gateway or a router.
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from typing import Any, ClassVar, Dict, Generic, TypeVar, cast  # noqa: UP035

from pydantic import BaseModel, Field

from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError


class ProviderHealth(BaseModel):
    """What a provider's health check found."""

    available: bool
    message: str = ""
    models: Dict[str, bool] = Field(default_factory=dict)  # noqa: UP006  # model -> present


class Provider(ABC):
    """The lifecycle every provider has; LLMProvider and MediaProvider add `generate`."""

    #: Seconds one attempt may take before the gateway gives up on it.
    timeout: float
    #: Calls the gateway lets run at once against this provider; None = no limit.
    max_concurrency: int | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.llm_timeout

    @property
    @abstractmethod
    def vendor(self) -> str:
        """The registry name: 'ollama' | 'openai' | 'comfyui' | 'mock' | ..."""

    def configure(self, config: dict[str, Any]) -> None:
        """Take this provider's section of the routing file (`providers.<vendor>`).

        Most providers have none; a provider that has settings there overrides this and
        raises ConfigError for a bad one, so the mistake shows at start.
        """
        if config:
            raise ConfigError(
                f"Provider {self.vendor!r} takes no settings in the routing file's 'providers' "
                f"section (got {', '.join(config)})."
            )

    def check_models(self, models: list[str]) -> list[str]:
        """Problems with the models the routing file names for this provider (checked at
        start); empty when every one can be served or the provider cannot tell yet."""
        return []

    async def start(self, models: list[str]) -> None:  # noqa: B027  # optional hook
        """Called once when the server starts, with the models routed to this provider in
        the current mode (e.g. to load them ahead of the first call)."""

    def unavailable_reason(self) -> str | None:
        """Why the provider cannot serve calls here (e.g. a missing API key), or None.

        Routing skips an unavailable provider and records why.
        """
        return None

    async def health(self, models: list[str]) -> ProviderHealth:
        """Whether the provider can serve calls, and which of `models` it has."""
        return ProviderHealth(available=True, models=dict.fromkeys(models, True))

    async def aclose(self) -> None:  # noqa: B027  # optional hook, empty by default
        """Release connections; called once at shutdown."""


P = TypeVar("P", bound=Provider)


class ProviderUnavailableError(ConfigError):
    """A provider cannot be created here (its package is missing or its import fails)."""


class Registry(Generic[P]):
    """Maps vendor names to provider classes and holds one instance of each in use."""

    #: The base class every provider of this registry subclasses.
    base: ClassVar[type] = Provider
    #: The providers that ship with Sparklio: name -> "module:Class".
    builtins: ClassVar[dict[str, str]] = {}
    #: The entry-point group outside packages add providers through.
    entry_point_group: ClassVar[str] = ""

    def __init__(self, settings: Settings, *, load_entry_points: bool = True) -> None:
        self.settings = settings
        self._specs: dict[str, str | type[P]] = dict(self.builtins)
        if load_entry_points and self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                self._specs.setdefault(ep.name, ep.value)
        self._instances: dict[str, P] = {}
        self._configs: dict[str, dict[str, Any]] = {}

    def configure(self, configs: dict[str, dict[str, Any]]) -> None:
        """Per-provider settings from the routing file's `providers` section."""
        self._configs = dict(configs)
        self._instances.clear()

    def register(self, name: str, provider: str | type[P]) -> None:
        """Add or replace a provider: a class, or its import path `"module:Class"`."""
        self._specs[name] = provider
        self._instances.pop(name, None)

    def names(self) -> list[str]:
        """Every vendor name this registry knows, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def get(self, name: str) -> P:
        """The shared instance of provider `name`, created on first use."""
        instance = self._instances.get(name)
        if instance is None:
            instance = self._load(name)(self.settings)
            instance.configure(self._configs.get(name, {}))
            self._instances[name] = instance
        return instance

    def _load(self, name: str) -> type[P]:
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
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ProviderUnavailableError(
                f"Provider {name!r}: {spec!r} is not a {self.base.__name__}."
            )
        return cast("type[P]", cls)  # checked against self.base just above

    async def aclose(self) -> None:
        """Close every provider that was created."""
        instances, self._instances = list(self._instances.values()), {}
        await asyncio.gather(*(p.aclose() for p in instances), return_exceptions=True)

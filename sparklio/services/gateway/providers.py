"""What LLM and media providers share: the lifecycle around `generate`, the endpoint a
provider instance serves, and the registry that finds provider classes by kind.

A provider kind is named by an import path `"package.module:Class"` and imported only when
first used, so an optional dependency costs nothing until a route needs it. Outside packages
add kinds through an entry-point group; tests and apps may `register()` a class. Adding a
provider never touches a gateway or a router.

One provider instance serves one endpoint (`EndpointConfig`: a name, a base URL, a key, a
timeout, a concurrency): the default endpoint of a kind comes from the settings of today
(`OLLAMA_BASE_URL`...), more come from the routing file's `providers` section.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Dict, Generic, TypeVar, cast  # noqa: UP035

from pydantic import BaseModel, Field, SecretStr

from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError


class ProviderHealth(BaseModel):
    """What a provider's health check found."""

    available: bool
    message: str = ""
    models: Dict[str, bool] = Field(default_factory=dict)  # noqa: UP006  # model -> present


@dataclass(frozen=True, slots=True)
class EndpointDefaults:
    """What a kind's default endpoint is, from the settings (`Provider.defaults`)."""

    timeout: float
    base_url: str | None = None
    max_concurrency: int | None = None
    api_key: SecretStr | None = None
    #: the setting the key comes from, to name it when it is missing
    api_key_env: str | None = None


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """One server a provider instance talks to: what the routing file's `providers` section
    says about it, over its kind's defaults. The key is resolved from the environment variable
    the routing file names; the file never holds a key."""

    name: str
    kind: str
    timeout: float
    base_url: str | None = None
    max_concurrency: int | None = None
    api_key: SecretStr | None = field(default=None, repr=False)
    api_key_env: str | None = None
    #: the kind's own settings (e.g. llamacpp's model catalogue), for `Provider.configure`
    extra: dict[str, Any] = field(default_factory=dict)


class Provider(ABC):
    """The lifecycle every provider has; LLMProvider and MediaProvider add `generate`."""

    #: Seconds one attempt may take before the gateway gives up on it.
    timeout: float
    #: Calls the gateway lets run at once against this provider; None = no limit.
    max_concurrency: int | None = None

    def __init__(self, settings: Settings, endpoint: EndpointConfig | None = None) -> None:
        self.settings = settings
        if endpoint is None:  # built by hand: the default endpoint of its kind
            defaults = self.defaults(settings)
            endpoint = EndpointConfig(
                name=self.vendor, kind=self.vendor, timeout=defaults.timeout,
                base_url=defaults.base_url, max_concurrency=defaults.max_concurrency,
                api_key=defaults.api_key, api_key_env=defaults.api_key_env,
            )  # fmt: skip
        self.endpoint = endpoint
        #: the endpoint's name: what responses, errors and the call log call this provider
        self.name = endpoint.name
        self.timeout = endpoint.timeout
        self.max_concurrency = endpoint.max_concurrency

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        """The default endpoint of this kind, from the settings; providers that talk to a
        server override it (OLLAMA_BASE_URL, OPENAI_API_KEY, ...)."""
        return EndpointDefaults(timeout=settings.llm_timeout)

    @property
    @abstractmethod
    def vendor(self) -> str:
        """The kind, as the registry names it: 'ollama' | 'openai' | 'comfyui' | 'mock' | ..."""

    def where(self, model: str) -> str:
        """`endpoint/model`, how messages name what was called."""
        return f"{self.name}/{model}"

    def configure(self, config: dict[str, Any]) -> None:
        """Take the kind's own settings of this endpoint's entry in the routing file's
        `providers` section (beyond kind, base_url, api_key_env, timeout, max_concurrency
        and max_queue).

        Most providers have none; a provider that has settings there overrides this and
        raises ConfigError for a bad one, so the mistake shows at start.
        """
        if config:
            raise ConfigError(
                f"Provider kind {self.vendor!r} takes no settings of its own in the routing "
                f"file's 'providers' section (got {', '.join(config)})."
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
    """Maps kind names to provider classes (imported on first use)."""

    #: The base class every provider of this registry subclasses.
    base: ClassVar[type] = Provider
    #: The providers that ship with Sparklio: name -> "module:Class".
    builtins: ClassVar[dict[str, str]] = {}
    #: The entry-point group outside packages add providers through.
    entry_point_group: ClassVar[str] = ""

    def __init__(self, *, load_entry_points: bool = True) -> None:
        self._specs: dict[str, str | type[P]] = dict(self.builtins)
        if load_entry_points and self.entry_point_group:
            for ep in entry_points(group=self.entry_point_group):
                self._specs.setdefault(ep.name, ep.value)

    def register(self, name: str, provider: str | type[P]) -> None:
        """Add or replace a kind: a class, or its import path `"module:Class"`."""
        self._specs[name] = provider

    def names(self) -> list[str]:
        """Every kind this registry knows, sorted."""
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def load(self, name: str) -> type[P]:
        """The class of kind `name`; ProviderUnavailableError when it cannot be imported."""
        spec = self._specs.get(name)
        if spec is None:
            raise ProviderUnavailableError(
                f"Unknown provider kind {name!r}; known kinds: {', '.join(self.names())}."
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

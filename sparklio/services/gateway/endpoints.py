"""The endpoints a gateway sends calls to, by name: each a provider instance of some kind, with
its own breaker, limiter and queue.

The default endpoint of each kind is named after the kind and configured by the settings of
today (`OLLAMA_BASE_URL`, `OPENAI_API_KEY`, `COMFYUI_BASE_URL`...); the routing file's
`providers` section adds endpoints (`ollama-desktop: {kind: ollama, base_url: ...}`) or changes
a default one. Providers are imported and built on first use.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import Any, Generic

from dotenv import dotenv_values
from pydantic import SecretStr

from sparklio.core.config import Settings
from sparklio.exceptions import ConfigError, SparklioError
from sparklio.services.gateway.guard import CircuitBreaker, EndpointGuard, Limiter
from sparklio.services.gateway.providers import (
    EndpointConfig,
    P,
    ProviderHealth,
    ProviderUnavailableError,
    Registry,
)
from sparklio.services.gateway.routing import EndpointSpec
from sparklio.services.gateway.shared_guard import SharedBreaker, SharedLimiter, SharedState

__all__ = ["Endpoint", "Endpoints"]


class Endpoint(Generic[P]):
    """One named server: its provider (built on first use) and its guard."""

    def __init__(self, config: EndpointConfig, guard: EndpointGuard, build: Any) -> None:
        self.name = config.name
        self.kind = config.kind
        self.config = config
        self.guard = guard
        self._build = build
        self._provider: P | None = None
        self._error: str | None = None
        #: calls sent here so far: of two endpoints equally busy, the one picked less often
        #: gets the next call, so calls spread even when each ends before the next begins
        self.picks = 0

    @property
    def provider(self) -> P:
        """The provider instance; ProviderUnavailableError when its kind cannot be loaded."""
        if self._provider is None:
            if self._error is not None:
                raise ProviderUnavailableError(self._error)
            try:
                self._provider = self._build(self.config)
            except ProviderUnavailableError as exc:
                self._error = str(exc)
                raise
        return self._provider

    def unavailable_reason(self) -> str | None:
        """Why calls cannot go here (a missing package or key...), or None."""
        try:
            return self.provider.unavailable_reason()
        except ProviderUnavailableError as exc:
            return str(exc)

    def usable(self) -> bool:
        """Available, and its breaker lets a call through now."""
        return self.guard.breaker.ready() and self.unavailable_reason() is None

    def snapshot(self) -> dict[str, Any]:
        """Name, kind, where, and the guard's state: for /health, the providers listing and
        `sparklio routes`."""
        return {"name": self.name, "kind": self.kind, "base_url": self.config.base_url,
                **self.guard.snapshot()}  # fmt: skip


class Endpoints(Generic[P]):
    """Every endpoint a gateway can use, by name, built on first use."""

    def __init__(
        self,
        registry: Registry[P],
        settings: Settings,
        specs: dict[str, EndpointSpec],
        *,
        max_queue: int,
    ) -> None:
        self.registry = registry
        self.settings = settings
        #: the routing file's entries whose kind this registry serves
        self.specs = {name: spec for name, spec in specs.items() if (spec.kind or name) in registry}
        self.max_queue = max_queue
        self._endpoints: dict[str, Endpoint[P]] = {}
        self._env: dict[str, str | None] | None = None
        #: with REDIS_URL, limits and breakers shared by every process on that Redis
        self.shared = (
            SharedState(settings.redis_url, prefix=settings.guard_prefix,
                        timeout=settings.guard_timeout)
            if settings.redis_url else None
        )  # fmt: skip

    def names(self) -> list[str]:
        """Every endpoint: the routing file's, and each kind's default one."""
        return sorted({*self.registry.names(), *self.specs})

    def __contains__(self, name: object) -> bool:
        return name in self.specs or name in self.registry

    def get(self, name: str) -> Endpoint[P]:
        """The endpoint `name` (a kind's name is its default endpoint); ConfigError for a name
        that is neither, or for settings its kind refuses."""
        endpoint = self._endpoints.get(name)
        if endpoint is None:
            endpoint = self._endpoints[name] = self._make(name)
        return endpoint

    def built(self) -> list[Endpoint[P]]:
        """The endpoints used so far."""
        return list(self._endpoints.values())

    def _make(self, name: str) -> Endpoint[P]:
        if name not in self:
            raise ConfigError(
                f"Unknown endpoint {name!r}; known endpoints and kinds: {', '.join(self.names())}."
            )
        spec = self.specs.get(name) or EndpointSpec()
        kind = spec.kind or name
        try:
            cls = self.registry.load(kind)
        except ProviderUnavailableError as exc:
            error = str(exc)
            config = EndpointConfig(name=name, kind=kind, timeout=self.settings.llm_timeout,
                                    base_url=spec.base_url,
                                    max_concurrency=spec.max_concurrency)  # fmt: skip
            endpoint: Endpoint[P] = Endpoint(config, self._guard(config, spec), _fails(error))
            return endpoint
        defaults = cls.defaults(self.settings)
        key, key_env = defaults.api_key, defaults.api_key_env
        if spec.api_key_env is not None:
            key_env = spec.api_key_env
            value = self._lookup(key_env)
            key = SecretStr(value) if value else None
        config = EndpointConfig(
            name=name,
            kind=kind,
            timeout=spec.timeout or defaults.timeout,
            base_url=(spec.base_url or defaults.base_url or "").rstrip("/") or None,
            max_concurrency=spec.max_concurrency or defaults.max_concurrency,
            api_key=key,
            api_key_env=key_env,
            extra=spec.settings,
        )

        def build(config: EndpointConfig) -> P:
            provider = cls(self.settings, config)
            provider.configure(config.extra)
            return provider

        return Endpoint(config, self._guard(config, spec), build)

    def _guard(self, config: EndpointConfig, spec: EndpointSpec) -> EndpointGuard:
        threshold, cooldown = self.settings.llm_breaker_failures, self.settings.llm_breaker_cooldown
        max_queue = spec.max_queue if spec.max_queue is not None else self.max_queue
        if self.shared is None:
            return EndpointGuard(CircuitBreaker(threshold, cooldown),
                                 Limiter(config.max_concurrency, max_queue))  # fmt: skip
        return EndpointGuard(
            SharedBreaker(threshold, cooldown, shared=self.shared,
                          key=self.shared.key(config.name, "breaker")),
            SharedLimiter(config.max_concurrency, max_queue, shared=self.shared,
                          endpoint=config.name),
        )  # fmt: skip

    def _lookup(self, variable: str) -> str | None:
        """An environment variable, else its line in `.env` (as the settings read it)."""
        value = os.environ.get(variable)
        if value is None:
            if self._env is None:
                self._env = dotenv_values(".env") if os.path.isfile(".env") else {}
            value = self._env.get(variable)
        return value

    def check(self, models: dict[str, list[str]]) -> list[str]:
        """Problems with the endpoints the routing names and the ones it declares (bad
        settings of a kind, models an endpoint cannot serve), for the start to refuse."""
        problems: list[str] = []
        for name in {*models, *self.specs}:
            try:
                provider = self.get(name).provider
            except ProviderUnavailableError:
                continue  # the providers listing says why, and routing skips it
            except ConfigError as exc:
                problems.append(f"providers.{name}: {exc}")
                continue
            problems.extend(f"{name}: {p}" for p in provider.check_models(models.get(name, [])))
        return problems

    async def start(self, models: dict[str, list[str]]) -> None:
        """Let each endpoint routed in this mode prepare (e.g. preload a local model)."""
        for name, named in models.items():
            endpoint = self.get(name)
            if endpoint.unavailable_reason() is None:
                await endpoint.provider.start(named)

    async def report(self, models: dict[str, list[str]], within: float) -> list[dict[str, Any]]:
        """Each endpoint routed to (with the models named for it) and each one the routing
        file declares: where it is, a health check within `within` seconds, and its load."""
        named: dict[str, list[str]] = {**{name: [] for name in self.specs}, **models}

        async def check(name: str, models: list[str]) -> dict[str, Any]:
            endpoint = self.get(name)
            try:
                reason = endpoint.unavailable_reason()
                if reason is not None:
                    health = ProviderHealth(available=False, message=reason)
                else:
                    async with asyncio.timeout(within):
                        health = await endpoint.provider.health(models)
            except TimeoutError:
                health = ProviderHealth(available=False, message=f"no answer in {within:g} s")
            except SparklioError as exc:
                health = ProviderHealth(available=False, message=str(exc))
            return {**endpoint.snapshot(), **health.model_dump(), "models_named": models}

        return list(await asyncio.gather(*(check(n, m) for n, m in sorted(named.items()))))

    def snapshot(self, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """State per endpoint used so far (or of `names`), for /health and listings."""
        chosen = self.built() if names is None else [self.get(n) for n in names]
        return {e.name: e.snapshot() for e in chosen}

    async def aclose(self) -> None:
        """Close every provider that was built."""
        providers = [e._provider for e in self._endpoints.values() if e._provider is not None]
        self._endpoints = {}
        await asyncio.gather(*(p.aclose() for p in providers), return_exceptions=True)
        if self.shared is not None:
            await self.shared.aclose()


def _fails(error: str) -> Any:
    def build(config: EndpointConfig) -> Any:
        raise ProviderUnavailableError(error)

    return build

"""The LLM provider registry: built-in providers, and outside ones through the entry-point
group `sparklio.llm_providers`. See `sparklio.services.gateway.providers` for how names resolve."""

from __future__ import annotations

from sparklio.services.gateway.providers import ProviderUnavailableError, Registry
from sparklio.services.llm.providers.base import LLMProvider

ENTRY_POINT_GROUP = "sparklio.llm_providers"

__all__ = ["BUILTIN_PROVIDERS", "ENTRY_POINT_GROUP", "ProviderRegistry",
           "ProviderUnavailableError"]  # fmt: skip

#: The LLM providers that ship with Sparklio.
BUILTIN_PROVIDERS: dict[str, str] = {
    "mock": "sparklio.services.llm.providers.mock:MockProvider",
    "ollama": "sparklio.services.llm.providers.ollama:OllamaProvider",
    "openai": "sparklio.services.llm.providers.openai:OpenAIProvider",
    "anthropic": "sparklio.services.llm.providers.anthropic:AnthropicProvider",
    "llamacpp": "sparklio.services.llm.providers.llamacpp:LlamaCppProvider",
}


class ProviderRegistry(Registry[LLMProvider]):
    """LLM providers by vendor name."""

    base = LLMProvider
    builtins = BUILTIN_PROVIDERS
    entry_point_group = ENTRY_POINT_GROUP

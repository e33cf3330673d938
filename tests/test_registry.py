"""The provider registry: a provider added without touching gateway or router code."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sparklio.exceptions import ConfigError
from sparklio.main import create_app
from sparklio.services.llm.providers.base import LLMProvider, LLMProviderResponse, usage
from sparklio.services.llm.providers.registry import ProviderRegistry, ProviderUnavailableError
from tests.conftest import app_with, make_settings, serving


class ShoutProvider(LLMProvider):
    """A provider that exists only in this test file."""

    @property
    def vendor(self) -> str:
        return "shout"

    @property
    def supports_json(self) -> bool:
        return True

    async def generate(
        self, prompt: str, role: str, task: str, mode: Any, options: dict[str, Any]
    ) -> LLMProviderResponse:
        product = options["payload"]["product"]
        output = {"headline": product.upper()} if mode == "json" else {"text": product.upper()}
        return LLMProviderResponse(
            provider=self.vendor,
            model=options["model"],
            usage=usage(3, 2),
            output=output,
            meta={"temperature": options.get("temperature")},
        )


ROUTES = """
version: 1
modes:
  mock:
    default:
      - {provider: mock, model: mock-v1}
    rules:
      - role: copywriter
        task: "*"
        candidates:
          - {provider: shout, model: loud-1, options: {temperature: 0.3}}
"""


async def test_a_test_only_provider_gets_routed_calls(
    write_routing: Callable[[str], Path],
) -> None:
    settings = make_settings(llm_routing_file=write_routing(ROUTES))
    app = app_with(settings, shout=ShoutProvider)
    async with serving(app) as http:
        response = await http.post(
            "/api/v1/llm/generate",
            json={
                "role": "copywriter",
                "task": "channel_copy",
                "payload": {"product": "Dawon tea"},
                "output_schema": {"type": "object", "required": ["headline"]},
            },
        )
        other = await http.post(
            "/api/v1/llm/generate",
            json={"role": "brief", "task": "analyze", "payload": {"product": "Dawon tea"}},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["provider"] == "shout" and body["model"] == "loud-1"
    assert body["output"] == {"headline": "DAWON TEA"}
    assert body["meta"]["temperature"] == 0.3  # the route's options reached the provider
    assert body["meta"]["rule"] == "copywriter/*"
    assert other.json()["provider"] == "mock"


def test_unregistered_provider_in_routing_file_fails_at_start(
    write_routing: Callable[[str], Path],
) -> None:
    settings = make_settings(llm_routing_file=write_routing(ROUTES))
    with pytest.raises(ConfigError, match="unknown provider 'shout'"):
        create_app(settings)


async def test_entry_point_provider_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_routing: Callable[[str], Path]
) -> None:
    """An installed package that declares `sparklio.llm_providers` adds a provider."""
    site = tmp_path / "site"
    (site / "sparklio_echo").mkdir(parents=True)
    (site / "sparklio_echo" / "__init__.py").write_text(
        textwrap.dedent("""
        from sparklio.services.llm.providers.base import LLMProvider, LLMProviderResponse

        class Echo(LLMProvider):
            vendor = "echo"

            async def generate(self, prompt, role, task, mode, options):
                return LLMProviderResponse(provider="echo", model=options["model"],
                                           output={"text": options["payload"]["say"]})
        """)
    )
    dist = site / "sparklio_echo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sparklio-echo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sparklio.llm_providers]\necho = sparklio_echo:Echo\n")
    monkeypatch.syspath_prepend(str(site))

    path = write_routing(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: echo, model: e1}]\n"
    )
    app = create_app(make_settings(llm_routing_file=path))
    async with serving(app) as http:
        response = await http.post(
            "/api/v1/llm/generate",
            json={"role": "brief", "task": "analyze", "mode": "text", "payload": {"say": "hello"}},
        )
    assert response.json()["output"] == {"text": "hello"}
    assert response.json()["provider"] == "echo"


def test_broken_import_path_says_what_failed() -> None:
    registry = ProviderRegistry()
    registry.register("ghost", "sparklio_no_such_module:Ghost")
    assert "ghost" in registry.names()
    with pytest.raises(ProviderUnavailableError, match="sparklio_no_such_module"):
        registry.load("ghost")


def test_contract_requires_vendor_and_generate() -> None:
    class Incomplete(LLMProvider):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(make_settings())  # type: ignore[abstract]
    shout = ShoutProvider(make_settings())
    assert shout.vendor == "shout" and shout.name == "shout"
    fields = set(LLMProviderResponse.model_fields)
    assert fields == {"provider", "model", "usage", "output", "meta"}

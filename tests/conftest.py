"""Shared fixtures: settings in a temp home, the app in-process, and a routing-file writer."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.core.config import Settings
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.llm.providers.registry import ProviderRegistry
from sparklio.services.media.providers.registry import MediaRegistry


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's environment or .env, or writes outside its temp dir."""
    for name in (
        "GENERATOR_MODE",
        "LLM_ROUTING_FILE",
        "PROMPTS_DIR",
        "GATEWAY_BASE_URL",
        "GATEWAY_API_KEY",
        "MAX_REQUEST_BYTES",
        "LLM_TIMEOUT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPARKLIO_HOME", str(tmp_path / "home"))
    # the spend guard: no test reaches a model server beyond this machine unless it opts in
    monkeypatch.setenv("ALLOW_REMOTE_CALLS", "false")
    for name in (
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "OPENAI_BASE_URL",
        "ANTHROPIC_BASE_URL",
        "OLLAMA_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def make_settings(**overrides: Any) -> Settings:
    """Settings from defaults and overrides only (no .env)."""
    return Settings(_env_file=None, **overrides)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(sparklio_home=tmp_path / "home")


@pytest.fixture
def write_routing(tmp_path: Path) -> Callable[[str], Path]:
    """Write a routing file (YAML text, dedented) and return its path."""

    def write(text: str, name: str = "routing.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app, closed after the test (ASGITransport runs no lifespan to do it)."""
    app = create_app(settings)
    yield app
    await close_app(app)


def provide(app: FastAPI, dependency: Callable[..., Any], value: Any) -> None:
    """Make `dependency` (a getter of sparklio.api.deps) hand `value` to `app`'s endpoints:
    for a small app that holds only some of what create_app builds."""

    async def provided() -> Any:
        return value

    app.dependency_overrides[dependency] = provided


async def token_for(app: FastAPI) -> str:
    """A login token for the app's local user: what an in-process CLI run uses."""
    token: str = await app.state.services.auth.local_token()
    return token


async def client_for(app: FastAPI, base_url: str = "http://gateway") -> httpx.AsyncClient:
    """A raw HTTP client on the app in-process, logged in."""
    headers = {"Authorization": f"Bearer {await token_for(app)}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url,
                             headers=headers)  # fmt: skip


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A logged-in client on the app in-process; the app is closed afterwards."""
    try:
        async with await client_for(app) as http:
            yield http
    finally:
        await close_app(app)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client on the in-process app, for status codes and bodies."""
    async with await client_for(app) as client:
        yield client


@pytest.fixture
async def llm(app: FastAPI) -> AsyncIterator[LLMGatewayClient]:
    """The gateway client, running the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with LLMGatewayClient(base_url="http://gateway", api_key=await token_for(app),
                                transport=transport) as client:  # fmt: skip
        yield client


def app_with(settings: Settings, **providers: Any) -> FastAPI:
    """An app whose registry also has the given test providers (name=class)."""
    registry = ProviderRegistry()
    for name, cls in providers.items():
        registry.register(name, cls)
    return create_app(settings, registry=registry)


def app_with_media(tmp_path: Path, name: str, provider: Any) -> FastAPI:
    """An app whose every media route goes to the test media provider `provider` (a class),
    registered as `name`; LLM calls go to the mock."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        f"media:\n  modes:\n    mock:\n      default: [{{provider: {name}, model: x}}]\n"
    )
    registry = MediaRegistry()
    registry.register(name, provider)
    return create_app(
        make_settings(llm_routing_file=routes, sparklio_home=tmp_path / "home"),
        media_registry=registry,
    )

"""The clients stand apart from the server: what importing them loads, where their settings come
from, and what the package exports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

import sparklio
import sparklio.exceptions
from sparklio.core.config import Settings, load_settings
from sparklio.exceptions import ConfigError
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.services.clients.settings import ClientSettings
from sparklio.services.gateway.routing import NAME_RE
from sparklio.wire import NAME_PATTERN as WIRE_NAME_PATTERN

ROOT = Path(__file__).resolve().parent.parent

#: What a program that only calls the gateway must not load.
SERVER_LIBRARIES = ("sqlalchemy", "PIL", "aiohttp", "fastapi")
SERVER_MODULES = (
    "sparklio.services.llm.providers",
    "sparklio.services.media.providers",
    "sparklio.db",
    "sparklio.api",
)


def loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running `code` (this tree's sparklio)."""
    run = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = orjson.loads(run.stdout.splitlines()[-1])
    return modules


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_importing_the_clients_loads_no_server_code() -> None:
    modules = loaded_by(
        "import sparklio.services.clients.llm_client, sparklio.services.clients.media_client"
    )
    ours = [m for m in modules if _under(m, ("sparklio",))]
    print(f"importing the clients loads {len(ours)} sparklio modules: {', '.join(ours)}")
    assert [m for m in modules if _under(m, SERVER_LIBRARIES)] == []
    assert [m for m in ours if _under(m, SERVER_MODULES)] == []
    # and nothing else of the server either: only the clients, the wire types, the errors
    allowed = ("sparklio.services.clients", "sparklio.wire", "sparklio.exceptions")
    assert [m for m in ours if m not in ("sparklio", "sparklio.services")] == [
        m for m in ours if _under(m, allowed)
    ]
    assert "sparklio.services.clients.llm_client" in ours  # the import did happen


def test_importing_sparklio_or_its_settings_loads_no_client_or_server_code() -> None:
    modules = loaded_by("import sparklio, sparklio.core.config")
    ours = [m for m in modules if _under(m, ("sparklio",))]
    assert ours == ["sparklio", "sparklio.core", "sparklio.core.config", "sparklio.exceptions"]
    assert [m for m in modules if _under(m, ("httpx", *SERVER_LIBRARIES))] == []


def test_the_package_exports_the_clients_and_every_exception() -> None:
    errors = [
        name
        for name in sparklio.exceptions.__all__
        if isinstance(getattr(sparklio.exceptions, name), type)
    ]
    assert len(errors) >= 17
    for name in errors:
        assert getattr(sparklio, name) is getattr(sparklio.exceptions, name), name
        assert name in sparklio.__all__
    assert sparklio.LLMGatewayClient is LLMGatewayClient
    assert sparklio.MediaGatewayClient is MediaGatewayClient
    namespace: dict[str, object] = {}
    exec("from sparklio import *", namespace)
    assert namespace["MediaGatewayClient"] is MediaGatewayClient
    with pytest.raises(AttributeError, match="no attribute 'LLMGateway'"):
        _ = sparklio.LLMGateway  # the server's gateway is not the package's to give


def _recorder() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "ok"})

    return seen, httpx.MockTransport(handler)


async def test_the_clients_read_the_gateway_from_dotenv_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the tests run in tmp_path (conftest), where .env is read from
    (tmp_path / ".env").write_text(
        "GATEWAY_BASE_URL=http://studio-gpu:9000\nGATEWAY_API_KEY=sk-from-dotenv\n"
    )
    seen, transport = _recorder()
    async with MediaGatewayClient(transport=transport) as client:
        await client.health()
    monkeypatch.setenv("GATEWAY_API_KEY", "sk-from-env")
    async with LLMGatewayClient(transport=transport) as client:
        await client.health()
    assert [str(r.url) for r in seen] == ["http://studio-gpu:9000/health"] * 2
    assert [r.headers["authorization"] for r in seen] == [
        "Bearer sk-from-dotenv",
        "Bearer sk-from-env",
    ]


async def test_a_bad_server_setting_does_not_stop_a_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program that only calls the gateway shares the gateway's .env, but not its settings."""
    monkeypatch.setenv("GENERATOR_MODE", "moc")
    with pytest.raises(ConfigError, match="GENERATOR_MODE"):
        load_settings()
    seen, transport = _recorder()
    async with LLMGatewayClient(transport=transport) as client:
        assert await client.health() == {"status": "ok"}
    assert str(seen[0].url) == "http://127.0.0.1:8000/health"


def test_client_and_server_agree_on_defaults_and_names() -> None:
    client, server = ClientSettings(_env_file=None), Settings(_env_file=None)
    assert client.gateway_base_url == server.gateway_base_url
    assert client.gateway_api_key is server.gateway_api_key is None
    assert NAME_RE.pattern == WIRE_NAME_PATTERN  # one definition, shared

"""One error tree: every exception Sparklio defines is a SparklioError, save the internal
control flow listed here; errors from the agents and the asset store are in it."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from sparklio.agents.pipeline import load_brief
from sparklio.core.config import Settings
from sparklio.exceptions import (
    AgentError,
    BriefError,
    ConfigError,
    GatewayError,
    InvalidMediaError,
    InvalidRequestError,
    ProviderError,
    SparklioError,
    error_body,
)
from sparklio.main import close_app, create_app
from sparklio.services.media.assets import AssetStore
from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse, Progress
from sparklio.services.media.providers.registry import MediaRegistry
from tests.conftest import client_for, make_settings

ROOT = Path(__file__).resolve().parent.parent
#: Exceptions Sparklio defines that never reach a user, each with the reason.
INTERNAL = {
    "sparklio.services.llm.mock.walk.OverBudget": "the mock's schema walk stops when its work "
    "budget is spent; the walk itself catches it",
    "sparklio.services.campaigns.engine.Paused": "a campaign's workflow ending at a review pause "
    "(caught in the engine; the campaign's status says awaiting_review)",
    "sparklio.services.campaigns.engine.StepFailed": "a campaign step's failure as DBOS records "
    "it; the workflow catches it and marks the campaign failed",
    "sparklio.services.gateway.shared_guard.RedisDownError": "the shared endpoint guards' "
    "Redis did not answer; the guard catches it and uses this process's in-memory one",
    "sparklio.cli.CampaignFailed": "`sparklio campaign` raises it when the campaign's events "
    "end in failed or cancelled; the command prints the failing step and exits 1",
}
#: Not imported: Alembic's env.py migrates when it is imported.
NOT_IMPORTED = ("sparklio.db.migrations",)


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every exception class defined at the top of a sparklio module, by its full name."""
    found: dict[str, type[BaseException]] = {}
    for path in sorted((ROOT / "sparklio").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name.startswith(NOT_IMPORTED):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_sparklio_defines_is_in_the_tree_or_listed_as_internal() -> None:
    found = defined_exceptions()
    assert "sparklio.exceptions.AgentError" in found  # the walk reaches what it should
    assert "sparklio.services.gateway.providers.ProviderUnavailableError" in found
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, SparklioError))
    assert outside == sorted(INTERNAL)  # a new one joins the tree, or this list with a reason


def test_agent_brief_and_asset_errors_have_their_parents() -> None:
    assert issubclass(AgentError, SparklioError) and not issubclass(AgentError, GatewayError)
    assert issubclass(BriefError, InvalidRequestError)
    assert issubclass(InvalidMediaError, ProviderError)
    assert not issubclass(BriefError, ValueError)  # callers catch it by its name or parent
    assert not issubclass(ConfigError, GatewayError)


def test_a_brief_that_cannot_be_read_is_an_invalid_request(tmp_path: Path) -> None:
    broken = tmp_path / "brief.yaml"
    broken.write_text("brief: [unclosed")
    for source in ("missing.yaml", "   ", str(broken)):
        with pytest.raises(InvalidRequestError) as info:
            load_brief(source)
        assert type(info.value) is BriefError
        assert info.value.status == 422 and info.value.message == str(info.value)


async def test_the_asset_store_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    with pytest.raises(InvalidMediaError, match="not an image") as info:
        await store.save(b"<html>502 Bad Gateway</html>")
    assert info.value.outcome == "invalid_image" and info.value.status == 502
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []  # nothing stored


class NotImages(MediaProvider):
    """Answers with an HTML page where an image should be (a proxy's error page)."""

    @property
    def vendor(self) -> str:
        return "not_images"

    async def generate(
        self, prompt: str, role: str, task: str, options: dict[str, Any], progress: Progress
    ) -> MediaProviderResponse:
        asset = await self.assets.save(b"<html>502 Bad Gateway</html>")
        raise AssertionError(f"stored {asset}")


async def test_an_output_that_is_not_an_image_falls_back_to_the_next_candidate(
    tmp_path: Path,
) -> None:
    """The provider is at fault, as for any provider error: the job goes on to the next
    candidate, and its attempts say why (before, it failed as an internal error)."""
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default:\n"
        "        - {provider: not_images, model: x}\n        - {provider: mock, model: m}\n"
    )
    registry = MediaRegistry()
    registry.register("not_images", NotImages)
    app = create_app(
        make_settings(llm_routing_file=routes, sparklio_home=tmp_path / "home"),
        media_registry=registry,
    )
    image = {"role": "vision_generator", "task": "image", "prompt": "tea", "width": 64,
             "height": 64}  # fmt: skip
    try:
        async with await client_for(app, "http://gw") as http:
            job = (await http.post("/api/v1/media/generate?wait=20", json=image)).json()
    finally:
        await close_app(app)
    assert job["status"] == "succeeded", job
    assert [(a["provider"], a["outcome"]) for a in job["attempts"]] == [
        ("not_images", "invalid_image"),
        ("mock", "ok"),
    ]


def test_error_body_is_the_shape_every_error_answer_has() -> None:
    assert error_body("not_found", "No job x.") == {
        "error": {"type": "not_found", "message": "No job x."},
        "request_id": None,
    }
    error = ProviderError("down", provider="p", model="m", request_id="r1")
    assert error.to_body() == {
        "error": {
            "type": "provider_error",
            "message": "down",
            "details": {"provider": "p", "model": "m", "outcome": "error"},
        },
        "request_id": "r1",
    }


async def test_the_early_and_the_late_413_answer_alike(app: Any, settings: Settings) -> None:
    """The middleware refuses a Content-Length over the limit before reading the body; FastAPI
    stops a chunked body as it arrives: one error body, whoever sends it."""
    limit = settings.max_request_bytes

    async def chunks() -> Any:
        for _ in range(limit // 100_000 + 2):
            yield b"x" * 100_000

    async with await client_for(app) as http:
        early = await http.post("/api/v1/llm/generate", content=b"x" * (limit + 1),
                                headers={"X-Request-ID": "early-1"})  # fmt: skip
        late = await http.post("/api/v1/llm/generate", content=chunks(),
                               headers={"X-Request-ID": "late-1"})  # fmt: skip
    assert early.status_code == late.status_code == 413
    assert early.headers["connection"] == "close"  # the rest of the body is not read
    assert early.headers["content-type"] == late.headers["content-type"] == "application/json"
    message = early.json()["error"]["message"]
    assert "MAX_REQUEST_BYTES" in message
    assert early.json() == error_body("payload_too_large", message, request_id="early-1")
    assert late.json() == error_body("payload_too_large", message, request_id="late-1")

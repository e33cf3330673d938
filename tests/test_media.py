"""The Media Gateway in mock mode: jobs, files, errors, restarts and the client."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dbos import DBOS
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import select

from sparklio.db.models import MediaJobRow
from sparklio.exceptions import ConfigError, ProviderError
from sparklio.main import close_app, create_app
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.services.media.jobs import MediaJob
from sparklio.services.media.providers.base import (
    MediaProvider,
    MediaProviderResponse,
    Progress,
)
from tests.conftest import app_with_media, client_for, make_settings, token_for

IMAGE = {
    "role": "vision_generator",
    "task": "image",
    "prompt": "A cup of Dawon green tea on an office desk, soft afternoon light",
    "width": 320,
    "height": 200,
}


def png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    return image


async def test_wait_returns_a_succeeded_job_whose_asset_is_a_png_of_the_size(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/api/v1/media/generate?wait=5", json=IMAGE)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["provider"] == "mock" and job["rule"] == "default"
    [asset] = job["assets"]
    assert (asset["width"], asset["height"], asset["mime_type"]) == (320, 200, "image/png")
    download = await http.get(asset["url"])
    assert download.status_code == 200
    assert download.headers["content-type"] == "image/png"
    assert png(download.content).size == (320, 200)
    assert len(download.content) == asset["size_bytes"]


async def test_without_wait_the_job_is_accepted_then_finishes(http: httpx.AsyncClient) -> None:
    accepted = await http.post("/api/v1/media/generate", json={**IMAGE, "count": 2})
    assert accepted.status_code == 202
    assert accepted.json()["status"] in ("queued", "running")
    job_id = accepted.json()["job_id"]
    # followed until it ends, however long a busy machine takes (the test timeout is the bound)
    while True:
        job = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.02)
    assert job["status"] == "succeeded"
    assert len(job["assets"]) == 2
    assert job["assets"][0]["id"] != job["assets"][1]["id"]


async def test_images_are_deterministic_and_follow_the_request(http: httpx.AsyncClient) -> None:
    palette = ["#2E7D32", "#F5F5DC", "#D4AF37"]
    request = {**IMAGE, "seed": 42, "options": {"palette": palette}}
    first = (await http.post("/api/v1/media/generate?wait=5", json=request)).json()
    again = (await http.post("/api/v1/media/generate?wait=5", json=request)).json()
    other = (
        await http.post(
            "/api/v1/media/generate?wait=5", json={**request, "prompt": "A bowl of rice"}
        )
    ).json()
    assert first["assets"][0]["id"] == again["assets"][0]["id"]
    assert first["assets"][0]["id"] != other["assets"][0]["id"]
    image = png((await http.get(first["assets"][0]["url"])).content).convert("RGB")
    top_row = {image.getpixel((x, 0)) for x in range(image.width)}
    assert (0x2E, 0x7D, 0x32) in top_row  # the brand's first colour starts the gradient


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"width": 321}, ["width", "multiple of 8", "320 or 328"]),
        ({"count": 9}, ["count", "less than or equal to 8"]),
        ({"prompt": ""}, ["prompt"]),
        ({"size": 512}, ["size: unknown field"]),
        ({"options": {"checkpoint": "other.safetensors"}}, ["options may not set checkpoint"]),
    ],
)
async def test_bad_image_requests_get_a_clear_422(
    http: httpx.AsyncClient, change: dict[str, Any], words: list[str]
) -> None:
    response = await http.post("/api/v1/media/generate", json={**IMAGE, **change})
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message, message


async def test_unknown_jobs_and_assets(http: httpx.AsyncClient) -> None:
    assert (await http.get(f"/api/v1/media/jobs/{'0' * 32}")).status_code == 404
    assert (await http.get("/api/v1/media/jobs/../etc")).status_code in (404, 422)
    assert (await http.get("/api/v1/media/jobs/not-a-job")).status_code == 422
    assert (await http.get(f"/api/v1/media/assets/{'a' * 64}")).status_code == 404
    bad = await http.get("/api/v1/media/assets/picture.png")
    assert bad.status_code == 422 and "sha256" in bad.json()["error"]["message"]


async def stored_as_cut_off(app: FastAPI, job_id: str) -> None:
    """A job stored as running, as it stood when the process died (no workflow had started
    it: the server starts it at recovery all the same)."""
    job = MediaJob(job_id=job_id, status="running", started_at=1.0,
                   request={**IMAGE, "seed": 7})  # fmt: skip
    await app.state.services.media.jobs.save(job)


async def followed(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once it has ended, followed as a user would (the test timeout is the bound)."""
    while True:
        body: dict[str, Any] = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.02)


async def test_a_job_cut_off_by_a_restart_is_resumed_and_finishes(tmp_path: Path) -> None:
    settings = make_settings(sparklio_home=tmp_path / "home")
    first = create_app(settings)
    await stored_as_cut_off(first, "1" * 32)
    await close_app(first)
    second = create_app(settings)
    try:
        assert await second.state.services.media.recover() == 1  # what the server does at start
        async with await client_for(second, "http://gw") as http:
            body = await followed(http, "1" * 32)
            image = await http.get(body["assets"][0]["url"]) if body["assets"] else None
    finally:
        await close_app(second)
    assert body["status"] == "succeeded", body
    assert image is not None and png(image.content).size == (320, 200)


async def test_a_job_whose_route_is_gone_after_a_restart_fails_saying_why(
    tmp_path: Path,
) -> None:
    settings = make_settings(sparklio_home=tmp_path / "home")
    first = create_app(settings)
    await stored_as_cut_off(first, "3" * 32)
    await close_app(first)
    routes = tmp_path / "routes.yaml"  # the routing file lost its media section meanwhile
    routes.write_text("version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n")
    second = create_app(make_settings(sparklio_home=tmp_path / "home", llm_routing_file=routes))
    try:
        await second.state.services.media.recover()
        async with await client_for(second, "http://gw") as http:
            body = await followed(http, "3" * 32)
    finally:
        await close_app(second)
    assert body["status"] == "failed"
    message = body["error"]["message"]
    assert message.startswith("The job cannot resume after the restart: ")
    assert "no 'media' section" in message and "Submit it again" in message


class SlowImages(MediaProvider):
    """Takes its time, reporting progress, and notices when it is cancelled."""

    cancelled = 0

    @property
    def vendor(self) -> str:
        return "slow"

    async def generate(
        self, prompt: str, role: str, task: str, options: dict[str, Any], progress: Progress
    ) -> MediaProviderResponse:
        try:
            for step in range(100):
                progress(step / 100, f"step {step}")
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            SlowImages.cancelled += 1
            raise
        raise AssertionError("never finishes in a test")


@pytest.fixture
async def slow_app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    app = app_with_media(tmp_path, "slow", SlowImages)
    yield app
    await close_app(app)


async def test_cancel_stops_a_running_job(slow_app: FastAPI) -> None:
    async with await client_for(slow_app, "http://gw") as http:
        job = (await http.post("/api/v1/media/generate?wait=0.2", json=IMAGE)).json()
        while job["status"] == "queued" or not job["progress"]:  # slow to start when busy
            await asyncio.sleep(0.02)
            job = (await http.get(f"/api/v1/media/jobs/{job['job_id']}")).json()
        assert job["status"] == "running" and 0 < job["progress"] < 1
        cancelled = await http.delete(f"/api/v1/media/jobs/{job['job_id']}")
        again = await http.get(f"/api/v1/media/jobs/{job['job_id']}")
        # its workflow too: no restart resumes it, and a worker running it elsewhere stops
        workflow = await DBOS.get_workflow_status_async(job["job_id"])
    assert cancelled.json()["status"] == "cancelled"
    assert again.json()["status"] == "cancelled"
    assert SlowImages.cancelled == 1
    assert workflow is not None and workflow.status == "CANCELLED"


async def test_client_follows_the_job_and_downloads_the_image(app: FastAPI) -> None:
    seen: list[str] = []
    transport = httpx.ASGITransport(app=app)
    token = await token_for(app)
    async with MediaGatewayClient(
        base_url="http://gw", api_key=token, transport=transport
    ) as media:
        job = await media.generate_image(**IMAGE, progress=lambda j: seen.append(j.status))
        data = await media.download(job.assets[0].id)
    assert job.status == "succeeded"
    assert seen[-1] == "succeeded"
    assert png(data).size == (320, 200)


async def test_client_raises_when_the_job_fails(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default:\n"
        "        - {provider: comfyui, workflow: txt2img, params: {checkpoint: x, "
        "steps: 1, cfg: 1, sampler: euler, scheduler: normal}}\n"
    )
    from tests.fakes import refused_url

    app = create_app(make_settings(llm_routing_file=routes, comfyui_base_url=refused_url()))
    transport = httpx.ASGITransport(app=app)
    token = await token_for(app)
    try:
        async with MediaGatewayClient(
            base_url="http://gw", api_key=token, transport=transport
        ) as media:
            with pytest.raises(ProviderError) as info:
                await media.generate_image(**IMAGE)
    finally:
        await close_app(app)
    assert "connection refused" in info.value.message
    assert info.value.provider == "comfyui"


async def test_a_workflow_placeholder_nobody_fills_is_a_422(tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "badge.json").write_text(
        json.dumps(
            {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {
                        "width": "{{width}}",
                        "height": "{{height}}",
                        "batch_size": 1,
                        "color": "{{brand_color}}",
                    },
                },
                "2": {
                    "class_type": "SaveImage",
                    "inputs": {"images": ["1", 0], "filename_prefix": "{{filename_prefix}}"},
                },
            }
        )
    )
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default:\n"
        "        - {provider: mock, workflow: badge}\n"
    )
    app = create_app(make_settings(llm_routing_file=routes, workflows_dir=workflows))
    async with await client_for(app, "http://gw") as http:
        missing = await http.post("/api/v1/media/generate", json=IMAGE)
        given = await http.post(
            "/api/v1/media/generate?wait=5", json={**IMAGE, "options": {"brand_color": 0x2E7D32}}
        )
    await close_app(app)
    assert missing.status_code == 422
    assert "{{brand_color}}" in missing.json()["error"]["message"]
    assert "badge" in missing.json()["error"]["message"]
    assert given.json()["status"] == "succeeded"


def test_a_routed_workflow_that_does_not_exist_fails_at_start(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\nmodes:\n  mock:\n    default: [{provider: mock, model: m}]\n"
        "media:\n  modes:\n    mock:\n      default:\n"
        "        - {provider: comfyui, workflow: txt2imgg}\n"
    )
    with pytest.raises(ConfigError, match=r"No workflow 'txt2imgg'.*Available: txt2img"):
        create_app(make_settings(llm_routing_file=routes))


async def test_a_second_app_in_the_process_gets_a_503_naming_why(tmp_path: Path) -> None:
    """DBOS is one per process: while one app runs image jobs on it, another app's job is
    refused with a 503 that says what to do (and stored as failed, never left queued)."""
    first = create_app(make_settings(sparklio_home=tmp_path / "one"))
    second = create_app(make_settings(sparklio_home=tmp_path / "two"))
    try:
        async with (
            await client_for(first, "http://one") as one,
            await client_for(second, "http://two") as two,
        ):
            done = await one.post("/api/v1/media/generate?wait=5", json=IMAGE)
            refused = await two.post("/api/v1/media/generate", json=IMAGE)
            async with second.state.services.db_sessions() as session:
                [row] = (await session.scalars(select(MediaJobRow))).all()
    finally:
        await close_app(second)
        await close_app(first)
    assert done.json()["status"] == "succeeded"
    assert refused.status_code == 503, refused.text
    assert "close it first" in refused.json()["error"]["message"]
    assert row.status == "failed" and "close it first" in row.data["error"]["message"]

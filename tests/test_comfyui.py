"""The ComfyUI provider against a faithful fake server: submit, follow, fetch, stop."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from sparklio.main import close_app, create_app
from tests.conftest import client_for, make_settings
from tests.fakes import Delay, DropSocket, Fail, FakeComfyUI, Stall, refused_url
from tests.live import until

SDXL = "sd_xl_base_1.0.safetensors"
ROUTES = f"""version: 1
modes:
  live:
    default: [{{provider: mock, model: m}}]
media:
  modes:
    live:
      default:
        - provider: comfyui
          workflow: txt2img
          params: {{checkpoint: {SDXL}, steps: 4, cfg: 6.5, sampler: euler,
                   scheduler: normal, width: 512, height: 512}}
"""
THUMBNAIL_RULE = """      rules:
        - role: vision_generator
          task: thumbnail
          candidates:
            - {provider: comfyui, workflow: thumbnail, params: {color: 16744448}}
"""
IMAGE = {
    "role": "vision_generator",
    "task": "image",
    "prompt": 'A cup of "Dawon" green tea,\nsoft light',
    "width": 256,
    "height": 192,
}


@asynccontextmanager
async def comfy_gateway(
    tmp_path: Path, fake: FakeComfyUI, routes: str = ROUTES, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "routes.yaml"
    path.write_text(routes)
    app = create_app(make_settings(generator_mode="live", llm_routing_file=path,
                                   comfyui_base_url=fake.url, **settings))  # fmt: skip
    try:
        async with await client_for(app, "http://gw") as http:
            yield http
    finally:
        await close_app(app)


async def run(http: httpx.AsyncClient, body: dict[str, Any], wait: float = 10) -> dict[str, Any]:
    response = await http.post(f"/api/v1/media/generate?wait={wait}", json=body)
    assert response.status_code in (200, 202), response.text
    job: dict[str, Any] = response.json()
    return job


async def test_a_job_renders_through_the_websocket_and_downloads_its_png(
    tmp_path: Path,
) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        job = await run(http, IMAGE)
        image = (await http.get(job["assets"][0]["url"])).content
    assert job["status"] == "succeeded", job
    assert job["provider"] == "comfyui" and job["model"] == SDXL
    assert job["meta"]["followed"] == "websocket"
    assert Image.open(io.BytesIO(image)).size == (256, 192)
    [prompt_id] = fake.prompts
    assert fake.client_ids[prompt_id]  # so the websocket gets this prompt's events
    graph = fake.prompts[prompt_id]
    assert graph["4"]["inputs"]["ckpt_name"] == SDXL  # from the routing file
    sampler = graph["3"]["inputs"]
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"]) == (4, 6.5, "euler")
    assert isinstance(sampler["seed"], int)
    assert graph["5"]["inputs"] == {"batch_size": 1, "height": 192, "width": 256}
    assert graph["6"]["inputs"]["text"] == 'A cup of "Dawon" green tea,\nsoft light'
    assert graph["9"]["inputs"]["filename_prefix"] == f"sparklio/{job['job_id']}"


async def test_every_job_gets_a_fresh_seed_and_file_name_so_the_cache_never_answers(
    tmp_path: Path,
) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        first = await run(http, IMAGE)
        second = await run(http, IMAGE)
    assert first["status"] == second["status"] == "succeeded"
    one, two = fake.prompts.values()
    assert one["3"]["inputs"]["seed"] != two["3"]["inputs"]["seed"]
    assert fake.executions == 2  # the second graph was not served from ComfyUI's cache
    assert first["assets"][0]["id"] != second["assets"][0]["id"]


async def test_a_missing_checkpoint_is_named_in_the_error(tmp_path: Path) -> None:
    async with (
        FakeComfyUI(checkpoints=["v1-5.safetensors"]) as fake,
        comfy_gateway(tmp_path, fake) as http,
    ):
        job = await run(http, IMAGE)
    assert job["status"] == "failed"
    message = job["error"]["message"]
    assert f"checkpoint '{SDXL}' is not installed on the ComfyUI server at {fake.url}" in message
    assert fake.executions == 0


async def test_a_stalled_comfyui_fails_at_the_timeout_and_is_interrupted(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake, comfyui_timeout=0.5) as http:
        fake.then(Stall())
        job = await run(http, IMAGE, wait=5)
    assert job["status"] == "failed"
    assert job["error"]["type"] == "timeout"
    assert "did not answer within 0.5 s" in job["error"]["message"]
    [prompt_id] = fake.prompts
    assert {"prompt_id": prompt_id} in fake.interrupts  # the GPU is not left busy


async def test_a_dropped_websocket_falls_back_to_polling_history(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        fake.then(DropSocket(after_messages=2))
        job = await run(http, IMAGE)
    assert job["status"] == "succeeded", job
    assert job["meta"]["followed"] == "polling"
    assert len(job["assets"]) == 1


async def test_an_execution_error_names_the_node_and_the_exception(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        fake.then(Fail(node_id="3", message="CUDA out of memory", exception_type="RuntimeError"))
        job = await run(http, IMAGE)
    assert job["status"] == "failed"
    assert job["error"]["type"] == "execution_error"
    assert "node 3 (KSampler) failed: RuntimeError: CUDA out of memory" in job["error"]["message"]


async def test_cancelling_a_running_job_interrupts_it_on_the_server(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        fake.then(Stall())
        job = await run(http, IMAGE, wait=0.3)
        while job["status"] == "queued":  # a busy machine may take longer than 0.3 s
            await asyncio.sleep(0.02)
            job = (await http.get(f"/api/v1/media/jobs/{job['job_id']}")).json()
        await until(lambda: len(fake.prompts) == 1)  # the stall has reached the server
        assert job["status"] == "running"
        cancelled = (await http.delete(f"/api/v1/media/jobs/{job['job_id']}")).json()
    assert cancelled["status"] == "cancelled"
    [prompt_id] = fake.prompts
    assert {"prompt_id": prompt_id} in fake.interrupts


async def test_cancelling_a_queued_job_deletes_it_from_the_comfyui_queue(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake) as http:
        fake.then(Delay(5))
        job = await run(http, IMAGE, wait=0.3)
        await until(lambda: len(fake.prompts) == 1)  # queued on the server, not just here
        await http.delete(f"/api/v1/media/jobs/{job['job_id']}")
        await until(lambda: len(fake.queue_deletes) > 0)  # the cancel's clean-up runs after
    [prompt_id] = fake.prompts
    assert [prompt_id] in fake.queue_deletes
    assert fake.executions == 0


async def test_a_new_workflow_file_is_routed_without_code(tmp_path: Path) -> None:
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "thumbnail.json").write_text(json.dumps({
        "1": {"class_type": "EmptyImage", "inputs": {
            "width": "{{width}}", "height": "{{height}}", "batch_size": "{{count}}",
            "color": "{{color}}"}},
        "2": {"class_type": "SaveImage", "inputs": {
            "images": ["1", 0], "filename_prefix": "{{filename_prefix}}"}},
    }))  # fmt: skip
    routes = ROUTES + THUMBNAIL_RULE
    async with (
        FakeComfyUI() as fake,
        comfy_gateway(tmp_path, fake, routes, workflows_dir=workflows) as http,
    ):
        job = await run(http, {**IMAGE, "task": "thumbnail", "width": 64, "height": 64})
        image = (await http.get(job["assets"][0]["url"])).content
    assert job["status"] == "succeeded", job
    [graph] = fake.prompts.values()
    assert graph["1"]["class_type"] == "EmptyImage"
    assert graph["1"]["inputs"]["color"] == 16744448
    pixels = Image.open(io.BytesIO(image)).convert("RGB")
    assert pixels.size == (64, 64)
    assert pixels.getpixel((10, 10)) == (255, 128, 0)


async def test_health_says_whether_the_routed_checkpoints_are_installed(tmp_path: Path) -> None:
    async with (
        FakeComfyUI(checkpoints=["v1-5.safetensors"]) as fake,
        comfy_gateway(tmp_path, fake) as http,
    ):
        body = (await http.get("/api/v1/media/providers")).json()
    [comfy] = body["providers"]
    assert comfy["name"] == "comfyui" and comfy["available"] is True
    assert comfy["models"] == {SDXL: False}
    assert f"checkpoints not installed: {SDXL}" in comfy["message"]


async def test_a_transient_comfyui_failure_is_retried(tmp_path: Path) -> None:
    async with FakeComfyUI() as fake, comfy_gateway(tmp_path, fake, llm_backoff_base=0.01) as http:
        fake.unavailable = 1  # a proxy answers 503 once while ComfyUI restarts
        job = await run(http, IMAGE)
    assert job["status"] == "succeeded", job
    assert [a["outcome"] for a in job["attempts"]] == ["http_503", "ok"]
    assert len(fake.prompts) == 1  # the refused prompt was never queued


async def test_a_comfyui_whose_circuit_is_open_is_skipped(tmp_path: Path) -> None:
    routes = ROUTES.replace(
        "                   scheduler: normal, width: 512, height: 512}\n",
        "                   scheduler: normal, width: 512, height: 512}\n"
        "        - {provider: mock, model: placeholder}\n",
    )
    path = tmp_path / "routes.yaml"
    path.write_text(routes)
    app = create_app(make_settings(generator_mode="live", llm_routing_file=path,
                                   comfyui_base_url=refused_url(), llm_breaker_failures=1,
                                   llm_breaker_cooldown=600))  # fmt: skip
    try:
        async with await client_for(app, "http://gw") as http:
            # nothing listens: the first job falls back to the placeholder and opens the circuit
            first = await run(http, IMAGE)
            second = await run(http, IMAGE)
            listing = (await http.get("/api/v1/media/providers")).json()["providers"]
    finally:
        await close_app(app)
    assert first["status"] == second["status"] == "succeeded"
    assert [(a["provider"], a["outcome"]) for a in first["attempts"]] == [
        ("comfyui", "connection_refused"),
        ("mock", "ok"),
    ]
    assert [(a["provider"], a["outcome"]) for a in second["attempts"]] == [
        ("comfyui", "circuit_open"),
        ("mock", "ok"),
    ]
    assert {row["name"]: row["circuit"] for row in listing}["comfyui"] == "open"

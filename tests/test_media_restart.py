"""Image jobs are durable workflows: a `sparklio serve` killed (`kill -9`) in the middle of a
render and started again on the same home finishes the job, rendering again only the one
the kill cut off, against a fake ComfyUI that keeps its own record of every prompt."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from sparklio.services.auth import local_token_for
from tests.conftest import make_settings
from tests.fakes import FakeComfyUI, Run, Stall
from tests.gateway_process import Server, kill_9
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
                   scheduler: normal}}
"""
IMAGE = {"role": "vision_generator", "task": "image", "prompt": "Dawon green tea",
         "width": 256, "height": 192}  # fmt: skip


async def followed(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once it has ended, followed as a user would (the test timeout is the bound)."""
    while True:
        job: dict[str, Any] = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.05)


def rendered_for(fake: FakeComfyUI) -> list[str]:
    """The job of every prompt ComfyUI was asked to render, in order (its file prefix)."""
    return [graph["9"]["inputs"]["filename_prefix"] for graph in fake.prompts.values()]


@pytest.mark.timeout(240)  # two starts of a server, each up to 90 s on a busy machine
async def test_a_server_killed_mid_render_finishes_the_job_after_a_restart(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES, encoding="utf-8")
    async with FakeComfyUI() as fake:
        fake.then(Run(), Stall())  # the first job renders; the second is held until the kill
        env = {"GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes),
               "COMFYUI_BASE_URL": fake.url}  # fmt: skip
        server = await asyncio.to_thread(Server, home, **env)
        token = await local_token_for(make_settings(sparklio_home=home))
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                         headers=headers, timeout=20) as http:  # fmt: skip
                done = (await http.post("/api/v1/media/generate?wait=30", json=IMAGE)).json()
                assert done["status"] == "succeeded", done
                accepted = await http.post("/api/v1/media/generate", json=IMAGE)
                assert accepted.status_code == 202, accepted.text
                cut_id = accepted.json()["job_id"]
                await until(lambda: len(fake.prompts) == 2)  # the second render runs
                running = (await http.get(f"/api/v1/media/jobs/{cut_id}")).json()
                assert running["status"] == "running"
        finally:
            kill_9(server)
        # ComfyUI stops the render nobody follows any more, as its operator would (the fake
        # has one worker, which the held render would keep)
        async with httpx.AsyncClient() as comfy:
            assert (await comfy.post(f"{fake.url}/interrupt")).status_code == 200

        server = await asyncio.to_thread(Server, home, **env)  # the same home and database
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                         headers=headers, timeout=20) as http:  # fmt: skip
                job = await followed(http, cut_id)
                image = await http.get(job["assets"][0]["url"]) if job["assets"] else None
                again = (await http.get(f"/api/v1/media/jobs/{done['job_id']}")).json()
        finally:
            await asyncio.to_thread(server.stop)
    assert job["status"] == "succeeded", job
    assert image is not None and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (256, 192)
    assert again == done  # the finished job is as it was: not run again
    # ComfyUI was asked once for the job that had finished, twice for the one the kill cut
    rendered = rendered_for(fake)
    assert rendered == [f"sparklio/{done['job_id']}", f"sparklio/{cut_id}",
                        f"sparklio/{cut_id}"]  # fmt: skip

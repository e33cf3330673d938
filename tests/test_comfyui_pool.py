"""A pool of ComfyUI servers named in one routing file: jobs go to a free server (one job at a
time each, by default), a job waits for a server to come free rather than queue on a busy one,
and a server that dies mid-render sends its job to another. With REDIS_URL the same holds
across gateway processes: "free" and "busy" are every process's jobs, not one's."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from PIL import Image

from sparklio.main import close_app, create_app
from tests.conftest import client_for, make_settings
from tests.fakes import FakeComfyUI, Hold
from tests.live import until
from tests.pg import PostgresCluster, postgres
from tests.test_shared_guard import REDIS, prefix, serve_two, until_true

__all__ = ["postgres", "prefix"]  # fixtures, used by name

SDXL = "sd_xl_base_1.0.safetensors"
IMAGE = {"role": "vision_generator", "task": "image", "prompt": "green tea", "width": 96,
         "height": 64}  # fmt: skip


def pool(a: str, b: str) -> str:
    """Two ComfyUI servers serving one workflow; each runs one job at a time (the default)."""
    return f"""version: 1
providers:
  comfy-a: {{kind: comfyui, base_url: "{a}"}}
  comfy-b: {{kind: comfyui, base_url: "{b}"}}
modes:
  live:
    default: [{{provider: mock, model: m}}]
media:
  modes:
    live:
      default:
        - endpoints: [comfy-a, comfy-b]
          workflow: txt2img
          params: {{checkpoint: {SDXL}, steps: 4, cfg: 6.5, sampler: euler,
                   scheduler: normal, width: 512, height: 512}}
"""


@pytest.fixture(params=["in memory", "redis"])
def guards(request: pytest.FixtureRequest, prefix: str) -> dict[str, Any]:
    """The gateway's settings for its endpoint guards: its own, or shared through Redis (the
    test's own key prefix)."""
    return {} if request.param == "in memory" else shared(prefix)


def shared(prefix: str) -> dict[str, Any]:
    """Settings that share the endpoint guards through Redis, under the test's key prefix."""
    return {"redis_url": REDIS, "guard_prefix": prefix, "redis_media_prefix": f"{prefix}media:"}


@asynccontextmanager
async def gateway(
    tmp_path: Path, a: FakeComfyUI, b: FakeComfyUI, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "routes.yaml"
    path.write_text(pool(a.url, b.url))
    app = create_app(make_settings(generator_mode="live", llm_routing_file=path, **settings))
    try:
        async with await client_for(app, "http://gw") as http:
            yield http
    finally:
        await close_app(app)


async def submit(http: httpx.AsyncClient) -> str:
    response = await http.post("/api/v1/media/generate?wait=0", json=IMAGE)
    assert response.status_code in (200, 202), response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def job(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(f"/api/v1/media/jobs/{job_id}")).json()
    return body


async def finished(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once it has ended (polled: the test waits for an end, not for a time)."""
    while True:
        body = await job(http, job_id)
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        await asyncio.sleep(0.02)


async def waiting(http: httpx.AsyncClient) -> int:
    """How many jobs the gateway holds back, waiting for a slot on a server of the pool."""
    rows = (await http.get("/api/v1/media/providers")).json()["providers"]
    return sum(row["waiting"] for row in rows if row["name"].startswith("comfy-"))


def prompt_of(fake: FakeComfyUI, job_id: str) -> str | None:
    """The id of the prompt `fake` was sent for the job (its file name names the job)."""
    for prompt_id, graph in fake.prompts.items():
        if graph["9"]["inputs"]["filename_prefix"] == f"sparklio/{job_id}":
            return prompt_id
    return None


async def test_two_jobs_run_one_on_each_server_and_a_third_waits_for_a_free_one(
    tmp_path: Path, guards: dict[str, Any]
) -> None:
    gates = {"a": asyncio.Event(), "b": asyncio.Event(), "third": asyncio.Event()}
    async with FakeComfyUI() as a, FakeComfyUI() as b:
        a.then(Hold(gates["a"]), Hold(gates["third"]))
        b.then(Hold(gates["b"]), Hold(gates["third"]))
        async with gateway(tmp_path, a, b, **guards) as http:
            first, second = await asyncio.gather(submit(http), submit(http))
            # both render at the same time, one on each server, by each server's own account
            await until(lambda: a.running is not None and b.running is not None)
            assert len(a.prompts) == len(b.prompts) == 1
            [on_a] = [j for j in (first, second) if prompt_of(a, j)]
            assert a.running == prompt_of(a, on_a) and b.running is not None
            third = await submit(http)
            # polled: a count behind the API has no event to wait on
            while await waiting(http) == 0:  # noqa: ASYNC110  (until the third job waits)
                await asyncio.sleep(0.02)
            # nothing was queued on a busy server: the third job waits here for a free one
            assert (await job(http, third))["status"] == "queued"
            assert len(a.prompts) == len(b.prompts) == 1
            # whichever server frees first takes it: free b, keep a busy
            gates["b"].set()
            await until(lambda: len(b.prompts) == 2)
            assert prompt_of(b, third) is not None and prompt_of(a, third) is None
            assert a.running == prompt_of(a, on_a)  # a is still on its first job
            gates["a"].set()
            gates["third"].set()
            jobs = [await finished(http, j) for j in (first, second, third)]
    assert [j["status"] for j in jobs] == ["succeeded"] * 3, jobs
    assert {j["provider"] for j in jobs[:2]} == {"comfy-a", "comfy-b"}
    assert jobs[2]["provider"] == "comfy-b"
    assert [(x["provider"], x["outcome"]) for x in jobs[2]["attempts"]] == [("comfy-b", "ok")]
    assert a.executions == 1 and b.executions == 2


async def test_a_server_that_dies_mid_render_sends_the_job_to_the_other(tmp_path: Path) -> None:
    doomed, survivor = FakeComfyUI(), FakeComfyUI()
    await doomed.__aenter__()
    doomed.then(Hold(asyncio.Event()))  # never let go: the server dies with the render running
    async with survivor, gateway(tmp_path, doomed, survivor) as http:
        job_id = await submit(http)  # of two idle servers, the first named (comfy-a) takes it
        await until(lambda: doomed.running is not None)
        assert prompt_of(doomed, job_id) == doomed.running
        await doomed.__aexit__(None, None, None)  # stopped mid-render: sockets cut, port closed
        ended = await finished(http, job_id)
        image = (await http.get(ended["assets"][0]["url"])).content if ended["assets"] else b""
    assert ended["status"] == "succeeded", ended
    assert ended["provider"] == "comfy-b"
    [(dead, cut), (alive, ok)] = [(x["provider"], x["outcome"]) for x in ended["attempts"]]
    assert (dead, alive, ok) == ("comfy-a", "comfy-b", "ok")
    assert cut in {"connection_refused", "connection_error", "stream_error"}, ended["attempts"]
    assert prompt_of(survivor, job_id) is not None and survivor.executions == 1
    assert doomed.history(prompt_of(doomed, job_id) or "") is None  # it never finished there
    assert Image.open(io.BytesIO(image)).size == (96, 64)


async def test_a_slot_freed_by_a_lapsed_lease_is_taken_though_no_release_announced_it(
    tmp_path: Path, prefix: str
) -> None:
    async with (
        FakeComfyUI() as a,
        FakeComfyUI() as b,
        gateway(tmp_path, a, b, **shared(prefix)) as http,
    ):
        # a process died rendering on both servers: its leases run for 10 more minutes
        redis = aioredis.Redis.from_url(REDIS)
        seconds, micros = await redis.time()
        now = seconds * 1000 + micros // 1000  # Redis's clock, as the leases use
        for server in ("comfy-a", "comfy-b"):
            await redis.zadd(f"{prefix}{server}:holders", {"dead": now + 600_000})
        job_id = await submit(http)
        while await waiting(http) == 0:  # noqa: ASYNC110  (a count behind the API)
            await asyncio.sleep(0.02)
        # a's lease lapses: no release is announced, the waiting job finds out by looking
        await redis.zadd(f"{prefix}comfy-a:holders", {"dead": now}, xx=True)
        await redis.aclose()
        ended = await finished(http, job_id)
    assert ended["status"] == "succeeded", ended
    assert ended["provider"] == "comfy-a" and len(b.prompts) == 0
    assert ended["meta"]["queue_ms"] > 0  # it waited for a's lease, then rendered there


@pytest.mark.timeout(240)  # two `sparklio serve` processes: 25 s each on a busy 2-core machine
async def test_two_serve_processes_on_one_redis_send_each_job_to_a_free_server(
    tmp_path: Path, postgres: PostgresCluster, prefix: str
) -> None:
    gates = {"a": asyncio.Event(), "b": asyncio.Event()}
    async with FakeComfyUI() as a, FakeComfyUI() as b:
        a.then(Hold(gates["a"]))  # the first job on each renders until the test says
        b.then(Hold(gates["b"]))
        servers, key = await asyncio.to_thread(
            serve_two, tmp_path, postgres, pool(a.url, b.url), REDIS_URL=REDIS,
            GUARD_PREFIX=prefix, REDIS_MEDIA_PREFIX=f"{prefix}media:",
        )  # fmt: skip
        p, q = (httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.port}", timeout=60,
                                  headers={"Authorization": f"Bearer {key}"})
                for s in servers)  # fmt: skip
        try:
            first = await submit(p)  # of two free servers, the first named takes it
            await until(lambda: a.running is not None)
            # q runs no job itself, yet sends its job to b: a is busy with p's
            second = await submit(q)
            await until(lambda: b.running is not None)
            assert (prompt_of(a, first), prompt_of(b, second)) == (a.running, b.running)
            rest = await asyncio.gather(submit(p), submit(q), submit(p), submit(q))

            async def all_wait() -> bool:
                return await waiting(p) + await waiting(q) == 4

            await until_true(all_wait)
            # both servers busy: the four wait in their processes, none is sent to a server
            assert len(a.prompts) == len(b.prompts) == 1
            gates["b"].set()  # b frees first and a stays busy: b renders the four in turn
            done = [await finished(p, job_id) for job_id in rest]
            assert a.running == prompt_of(a, first) and len(a.prompts) == 1
            gates["a"].set()
            jobs = [await finished(p, first), await finished(q, second), *done]
        finally:
            for client in (p, q):
                await client.aclose()
            for server in servers:
                await asyncio.to_thread(server.stop)
    assert [j["status"] for j in jobs] == ["succeeded"] * 6, jobs
    assert [j["provider"] for j in jobs] == ["comfy-a"] + ["comfy-b"] * 5
    assert a.max_in_flight == b.max_in_flight == 1  # each server's own count: one at a time
    assert (a.executions, b.executions) == (1, 5)

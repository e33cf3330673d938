"""FakeComfyUI speaks ComfyUI's API (checked with plain aiohttp, no sparklio).

Ref §6 is what a real ComfyUI 0.3.64 answered; these tests hold the fake to it.
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fakes import Delay, DropSocket, Fail, FakeComfyUI, Stall

JSON = dict[str, Any]

# Ref §6: the weight-free graph that really runs; 0xFF8000 is (255, 128, 0).
PROBE: JSON = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 16744448},
    },
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "probe", "images": ["1", 0]}},
}

# Ref §2: the default text-to-image graph, with an installed checkpoint and few steps.
TXT2IMG: JSON = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "cfg": 8,
            "denoise": 1,
            "latent_image": ["5", 0],
            "model": ["4", 0],
            "negative": ["7", 0],
            "positive": ["6", 0],
            "sampler_name": "euler",
            "scheduler": "normal",
            "seed": 8566257,
            "steps": 20,
        },
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"batch_size": 1, "height": 96, "width": 128},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red bicycle"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
}


def probe(**inputs: Any) -> JSON:
    """PROBE with some EmptyImage inputs replaced (None removes one)."""
    graph: JSON = copy.deepcopy(PROBE)
    for name, value in inputs.items():
        if value is None:
            del graph["1"]["inputs"][name]
        else:
            graph["1"]["inputs"][name] = value
    return graph


def with_prefix(graph: JSON, node: str, prefix: str) -> JSON:
    graph = copy.deepcopy(graph)
    graph[node]["inputs"]["filename_prefix"] = prefix
    return graph


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def submit(
    session: aiohttp.ClientSession, fake: FakeComfyUI, graph: JSON, client_id: str | None = None
) -> str:
    body: JSON = {"prompt": graph}
    if client_id is not None:
        body["client_id"] = client_id
    async with session.post(f"{fake.url}/prompt", json=body) as resp:
        assert resp.status == 200, await resp.text()
        data = await resp.json()
    assert data["node_errors"] == {} and isinstance(data["number"], int)
    return str(data["prompt_id"])


async def rejected(session: aiohttp.ClientSession, fake: FakeComfyUI, body: Any) -> JSON:
    async with session.post(f"{fake.url}/prompt", json=body) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        data: JSON = await resp.json()
    assert set(data) == {"error", "node_errors"}
    assert set(data["error"]) == {"type", "message", "details", "extra_info"}
    return data


async def history(session: aiohttp.ClientSession, fake: FakeComfyUI, prompt_id: str) -> JSON:
    async with session.get(f"{fake.url}/history/{prompt_id}") as resp:
        assert resp.status == 200
        data: JSON = await resp.json()
    return data


async def finished(session: aiohttp.ClientSession, fake: FakeComfyUI, prompt_id: str) -> JSON:
    """Poll /history until the prompt's entry appears (the websocket-free way)."""
    for _ in range(200):
        data = await history(session, fake, prompt_id)
        if data:
            entry: JSON = data[prompt_id]
            return entry
        await asyncio.sleep(0.01)
    raise AssertionError(f"{prompt_id} never reached /history")


async def frames_until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> list[JSON]:
    """Frames up to and including `executing` with node null for `prompt_id`."""
    frames: list[JSON] = []
    while True:
        frame: JSON = await asyncio.wait_for(ws.receive_json(), 5)
        frames.append(frame)
        data = frame["data"]
        if frame["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            return frames


def types(frames: list[JSON]) -> list[str]:
    return [f["type"] for f in frames if f["type"] != "progress_state"]


async def view(session: aiohttp.ClientSession, fake: FakeComfyUI, image: JSON) -> bytes:
    params = {k: image[k] for k in ("filename", "subfolder", "type")}
    async with session.get(f"{fake.url}/view", params=params) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/png"
        assert resp.headers["Content-Disposition"] == f'filename="{image["filename"]}"'
        return await resp.read()


# -- running graphs -----------------------------------------------------------------------------


async def test_probe_graph_renders_an_orange_png(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        prompt_id = await submit(session, fake, PROBE, client_id="c1")
        entry = await finished(session, fake, prompt_id)
        (image,) = entry["outputs"]["2"]["images"]
        assert image == {"filename": "probe_00001_.png", "subfolder": "", "type": "output"}
        png = Image.open(io.BytesIO(await view(session, fake, image)))
    assert png.format == "PNG" and png.mode == "RGB" and png.size == (64, 48)
    assert png.getcolors() == [(64 * 48, (255, 128, 0))]
    assert entry["prompt"] == [0, prompt_id, PROBE, {"client_id": "c1"}, ["2"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    events = [m[0] for m in entry["status"]["messages"]]
    assert events == ["execution_start", "execution_cached", "execution_success"]
    assert entry["meta"]["2"] == {
        "node_id": "2",
        "display_node": "2",
        "parent_node": None,
        "real_node_id": "2",
    }
    assert fake.prompts[prompt_id] == PROBE and fake.client_ids[prompt_id] == "c1"
    assert fake.executions == 1


async def test_batches_and_subfolder_prefixes(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        graph = with_prefix(probe(batch_size=2), "2", "sub/dir/x")
        entry = await finished(session, fake, await submit(session, fake, graph))
        images = entry["outputs"]["2"]["images"]
        assert images == [
            {"filename": "x_00001_.png", "subfolder": "sub/dir", "type": "output"},
            {"filename": "x_00002_.png", "subfolder": "sub/dir", "type": "output"},
        ]
        await view(session, fake, images[1])
        # the counter continues from the files already there
        graph = with_prefix(probe(batch_size=1, color=0), "2", "sub/dir/x")
        entry = await finished(session, fake, await submit(session, fake, graph))
        assert entry["outputs"]["2"]["images"][0]["filename"] == "x_00003_.png"


async def test_websocket_frames_follow_the_real_order(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake, session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
        hello = await ws.receive_json()
        assert hello == {
            "type": "status",
            "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "c1"},
        }
        prompt_id = await submit(session, fake, PROBE, client_id="c1")
        frames = await frames_until_done(ws, prompt_id)
    assert types(frames) == [
        "status",
        "status",
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "status",
        "executing",
    ]
    data = [f["data"] for f in frames if f["type"] != "progress_state"]
    remaining = [d["status"]["exec_info"]["queue_remaining"] for d in (data[0], data[1], data[8])]
    assert remaining == [1, 1, 0]
    assert "sid" not in data[0]
    assert data[3]["nodes"] == [] and isinstance(data[2]["timestamp"], int)
    assert data[4] == {"node": "1", "display_node": "1", "prompt_id": prompt_id}
    assert data[5]["node"] == "2"
    assert data[6]["output"] == {
        "images": [{"filename": "probe_00001_.png", "subfolder": "", "type": "output"}]
    }
    assert data[9] == {"node": None, "prompt_id": prompt_id}
    assert any(f["type"] == "progress_state" for f in frames)  # newer builds send these too


async def test_txt2img_progress_and_image(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake, session.ws_connect(f"{fake.url}/api/ws?clientId=c2") as ws:
        await ws.receive_json()
        prompt_id = await submit(session, fake, TXT2IMG, client_id="c2")
        frames = await frames_until_done(ws, prompt_id)
        entry = await finished(session, fake, prompt_id)
        png = Image.open(io.BytesIO(await view(session, fake, entry["outputs"]["9"]["images"][0])))
    progress = [f["data"] for f in frames if f["type"] == "progress"]
    assert 1 < len(progress) <= 10
    assert progress[-1] == {"value": 20, "max": 20, "prompt_id": prompt_id, "node": "3"}
    assert [p["value"] for p in progress] == sorted(p["value"] for p in progress)
    executing = [f["data"]["node"] for f in frames if f["type"] == "executing"]
    assert executing[-1] is None and set(executing[:-1]) == set(TXT2IMG)
    assert executing.index("3") < executing.index("8") < executing.index("9")
    assert png.size == (128, 96)


async def test_history_is_empty_until_done_and_for_unknown_ids(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeComfyUI() as fake:
        assert await history(session, fake, "no-such-id") == {}
        fake.then(Delay(0.2))
        prompt_id = await submit(session, fake, PROBE)
        assert await history(session, fake, prompt_id) == {}
        entry = await finished(session, fake, prompt_id)
        assert entry["status"]["completed"] is True


async def test_identical_resubmission_is_fully_cached(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake, session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
        await ws.receive_json()
        first = await submit(session, fake, PROBE, client_id="c1")
        await frames_until_done(ws, first)
        files = dict(fake.files)
        second = await submit(session, fake, PROBE, client_id="c1")
        frames = await frames_until_done(ws, second)
        old = await finished(session, fake, first)
        new = await finished(session, fake, second)
    cached = next(f["data"] for f in frames if f["type"] == "execution_cached")
    assert sorted(cached["nodes"]) == ["1", "2"]
    assert [f["data"]["node"] for f in frames if f["type"] == "executing"] == [None]
    assert "execution_success" in types(frames) and "executed" in types(frames)
    assert fake.executions == 1 and fake.files == files
    assert new["outputs"] == old["outputs"]


async def test_drop_socket_closes_but_history_completes(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        fake.progress_state = False
        fake.then(DropSocket(after_messages=2))
        async with session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
            await ws.receive_json()
            prompt_id = await submit(session, fake, PROBE, client_id="c1")
            received = []
            async for msg in ws:
                assert msg.type == aiohttp.WSMsgType.TEXT
                received.append(json.loads(msg.data)["type"])
            assert ws.closed and ws.close_code == 1001
        # status after POST, status when the worker takes it, then the 2 prompt frames
        assert received == ["status", "status", "execution_start", "execution_cached"]
        entry = await finished(session, fake, prompt_id)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["2"]["images"][0]["filename"] == "probe_00001_.png"


async def test_stall_then_interrupt(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake, session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
        await ws.receive_json()
        fake.then(Stall())
        prompt_id = await submit(session, fake, PROBE, client_id="c1")
        while (await ws.receive_json())["type"] != "executing":
            pass
        await asyncio.sleep(0.05)
        assert await history(session, fake, prompt_id) == {}
        async with session.get(f"{fake.url}/queue") as resp:
            queue = await resp.json()
        assert [item[1] for item in queue["queue_running"]] == [prompt_id]
        async with session.post(f"{fake.url}/interrupt", json={"prompt_id": "other"}) as resp:
            assert resp.status == 200
        async with session.post(f"{fake.url}/interrupt", json={"prompt_id": prompt_id}) as resp:
            assert resp.status == 200 and await resp.read() == b""
        frames = await frames_until_done(ws, prompt_id)
        entry = await finished(session, fake, prompt_id)
    assert types(frames) == ["execution_interrupted", "status", "executing"]
    assert frames[0]["data"] | {"timestamp": 0} == {
        "prompt_id": prompt_id,
        "node_id": "1",
        "node_type": "EmptyImage",
        "executed": [],
        "timestamp": 0,
    }
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert entry["outputs"] == {}
    assert fake.interrupts == [{"prompt_id": "other"}, {"prompt_id": prompt_id}]


async def test_fail_sends_execution_error(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake, session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
        await ws.receive_json()
        fake.then(
            Fail(message="CUDA error: out of memory", exception_type="torch.OutOfMemoryError")
        )
        prompt_id = await submit(session, fake, TXT2IMG, client_id="c1")
        frames = await frames_until_done(ws, prompt_id)
        entry = await finished(session, fake, prompt_id)
    assert types(frames)[-3:] == ["execution_error", "status", "executing"]
    assert "execution_success" not in types(frames) and "executed" not in types(frames)
    error = next(f["data"] for f in frames if f["type"] == "execution_error")
    assert set(error) == {
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    }
    assert error["node_id"] == "3" and error["node_type"] == "KSampler"
    assert error["exception_message"].startswith("CUDA error: out of memory")
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["current_inputs"]["seed"] == [8566257]
    assert isinstance(error["traceback"], list) and set(error["executed"]) == {"4", "5", "6", "7"}
    status = entry["status"]
    assert status["status_str"] == "error" and status["completed"] is False
    assert entry["outputs"] == {}
    assert [m[0] for m in status["messages"]][-1] == "execution_error"


async def test_delayed_prompt_can_be_deleted_from_the_queue(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeComfyUI() as fake:
        fake.then(Delay(0.3))
        prompt_id = await submit(session, fake, PROBE)
        async with session.get(f"{fake.url}/queue") as resp:
            queue = await resp.json()
        assert queue["queue_running"] == []
        ((number, pending_id, graph, extra, outputs),) = queue["queue_pending"]
        assert (pending_id, graph, extra, outputs) == (prompt_id, PROBE, {}, ["2"])
        assert number == 0
        async with session.get(f"{fake.url}/prompt") as resp:
            assert await resp.json() == {"exec_info": {"queue_remaining": 1}}
        async with session.post(f"{fake.url}/queue", json={"delete": [prompt_id]}) as resp:
            assert resp.status == 200 and await resp.read() == b""
        async with session.get(f"{fake.url}/queue") as resp:
            assert await resp.json() == {"queue_running": [], "queue_pending": []}
        await asyncio.sleep(0.4)
        assert await history(session, fake, prompt_id) == {}
    assert fake.queue_deletes == [[prompt_id]] and fake.executions == 0 and fake.files == {}


async def test_max_in_flight_counts_the_prompts_held_at_once(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeComfyUI() as fake:
        for color in (1, 2):  # one after the other: never two at once
            await finished(session, fake, await submit(session, fake, probe(color=color)))
        assert fake.max_in_flight == 1
        fake.then(Delay(0.2))
        # the second waits in the queue behind the first: two held at once
        sent = [await submit(session, fake, probe(color=color)) for color in (3, 4)]
        for prompt_id in sent:
            await finished(session, fake, prompt_id)
    assert fake.max_in_flight == 2 and fake.executions == 4


# -- validation ---------------------------------------------------------------------------------


async def test_body_without_prompt_and_body_not_json(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        data = await rejected(session, fake, {"client_id": "x"})
        assert data["error"]["type"] == "no_prompt" and data["node_errors"] == {}
        async with session.post(f"{fake.url}/prompt", data=b"{not json") as resp:
            assert resp.status == 500
            assert resp.content_type == "text/plain"
            assert (await resp.text()).startswith("500 Internal Server Error")


async def test_invalid_prompts(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        unknown = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
        data = await rejected(session, fake, {"prompt": unknown})
        assert data["error"] == {
            "type": "invalid_prompt",
            "message": "Cannot execute because node NoSuchNode does not exist.",
            "details": "Node ID '#1'",
            "extra_info": {},
        }
        assert data["node_errors"] == {}
        data = await rejected(session, fake, {"prompt": {"1": {"inputs": {}}}})
        assert data["error"]["type"] == "invalid_prompt" and data["node_errors"] == {}
        data = await rejected(session, fake, {"prompt": {"1": PROBE["1"]}})
        assert data["error"]["type"] == "prompt_no_outputs" and data["node_errors"] == {}


async def test_missing_input_and_bad_values(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        data = await rejected(session, fake, {"prompt": probe(width=None)})
        assert data["error"]["type"] == "prompt_outputs_failed_validation"
        assert data["node_errors"] == {
            "1": {
                "errors": [
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": "width",
                        "extra_info": {"input_name": "width"},
                    }
                ],
                "dependent_outputs": ["2"],
                "class_type": "EmptyImage",
            }
        }
        data = await rejected(session, fake, {"prompt": probe(width=0)})
        (error,) = data["node_errors"]["1"]["errors"]
        assert error["type"] == "value_smaller_than_min" and error["details"] == "width"
        assert error["extra_info"]["received_value"] == 0
        data = await rejected(session, fake, {"prompt": probe(height="abc")})
        assert data["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"
        broken = probe()
        broken["2"]["inputs"]["images"] = ["99", 0]
        data = await rejected(session, fake, {"prompt": broken})
        (error,) = data["node_errors"]["2"]["errors"]
        assert error["type"] == "exception_during_validation"
        assert error["extra_info"]["exception_type"] == "KeyError"


async def test_checkpoint_not_installed(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI(checkpoints=["a.safetensors"]) as fake:
        graph = copy.deepcopy(TXT2IMG)
        graph["4"]["inputs"]["ckpt_name"] = "sd15.safetensors"
        data = await rejected(session, fake, {"prompt": graph})
        assert data["error"]["type"] == "prompt_outputs_failed_validation"
        node = data["node_errors"]["4"]
        assert node["class_type"] == "CheckpointLoaderSimple"
        assert node["dependent_outputs"] == ["9"]
        (error,) = node["errors"]
        assert error["type"] == "value_not_in_list"
        assert error["details"] == "ckpt_name: 'sd15.safetensors' not in ['a.safetensors']"
        assert error["extra_info"]["input_name"] == "ckpt_name"
        assert error["extra_info"]["received_value"] == "sd15.safetensors"
        assert error["extra_info"]["input_config"][0] == ["a.safetensors"]
        assert fake.prompts == {}  # nothing was queued


# -- other routes -------------------------------------------------------------------------------


async def test_view_errors(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        params = {"filename": "nope.png", "subfolder": "", "type": "output"}
        async with session.get(f"{fake.url}/view", params=params) as resp:
            assert resp.status == 404 and await resp.read() == b""
        for name in ("/etc/passwd", "../x.png"):
            async with session.get(f"{fake.url}/view", params={"filename": name}) as resp:
                assert resp.status == 400


async def test_info_routes(session: aiohttp.ClientSession) -> None:
    async with FakeComfyUI() as fake:
        async with session.get(f"{fake.url}/api/system_stats") as resp:
            stats = await resp.json()
        assert stats["devices"][0]["type"] == "cpu" and "comfyui_version" in stats["system"]
        async with session.get(f"{fake.url}/models/checkpoints") as resp:
            assert await resp.json() == ["sd_xl_base_1.0.safetensors"]
        async with session.get(f"{fake.url}/object_info/NoSuchNode") as resp:
            assert resp.status == 200 and await resp.json() == {}
        async with session.get(f"{fake.url}/object_info/EmptyImage") as resp:
            info = (await resp.json())["EmptyImage"]
        assert info["input"]["required"]["color"][0] == "INT" and info["output"] == ["IMAGE"]
    assert [r.path for r in fake.requests_to("/system_stats")] == ["/api/system_stats"]


async def test_shutdown_with_a_stalled_prompt_and_open_socket(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeComfyUI() as fake:
        fake.then(Stall())
        ws = await session.ws_connect(f"{fake.url}/ws?clientId=c1")
        await submit(session, fake, PROBE, client_id="c1")
        await asyncio.sleep(0.05)
    msg = await ws.receive()  # the server closed it on the way out
    while msg.type == aiohttp.WSMsgType.TEXT:
        msg = await ws.receive()
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ws.close()


async def test_client_disconnect_is_quiet_and_reconnect_resumes(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeComfyUI() as fake:
        fake.step_delay = 0.02
        async with aiohttp.ClientSession() as other:  # a client that vanishes mid-prompt
            ws = await other.ws_connect(f"{fake.url}/ws?clientId=gone")
            prompt_id = await submit(session, fake, TXT2IMG, client_id="gone")
            while (await ws.receive_json())["type"] != "progress":
                pass
        assert (await finished(session, fake, prompt_id))["status"]["completed"] is True
        fake.then(DropSocket(after_messages=3))
        graph = copy.deepcopy(TXT2IMG)
        graph["3"]["inputs"]["seed"] = 1
        async with session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
            await ws.receive_json()
            prompt_id = await submit(session, fake, graph, client_id="c1")
            async for _ in ws:
                pass
        async with session.ws_connect(f"{fake.url}/ws?clientId=c1") as ws:
            hello = await ws.receive_json()
            assert hello["data"]["sid"] == "c1"
            # upstream tells a reconnecting client which node it is running (no prompt_id)
            assert (await ws.receive_json())["type"] == "executing"
            frames = await frames_until_done(ws, prompt_id)
    assert "execution_success" in types(frames)

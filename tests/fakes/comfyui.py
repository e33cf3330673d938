"""A fake ComfyUI server: HTTP + websocket API, a one-worker queue, real PNG output.

Shapes follow the protocol reference, upstream-protocols.md section 2 ("Ref §2") and what a
real ComfyUI 0.3.64 answered, section 6 ("Ref §6"), which wins where the two differ.

The fake validates graphs as `execution.validate_prompt` does, "executes" them one at a time
with the websocket events of a real server, caches node outputs by input signature (so an
identical resubmission runs nothing), and renders PNG files with Pillow, kept in memory in
`FakeComfyUI.files`. Usage::

    async with FakeComfyUI() as fake:
        fake.then(Delay(0.5), Fail())  # the next prompt waits in the queue, the one after fails
        # ... fake.url, fake.requests, fake.prompts, fake.executions, fake.files,
        # fake.max_in_flight ...
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import mimetypes
import posixpath
import re
import time
import traceback
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from tests.fakes.base import Recorded

__all__ = [
    "ComfyBehaviour",
    "ComfyRecorded",
    "Delay",
    "DropSocket",
    "Fail",
    "FakeComfyUI",
    "Hold",
    "Run",
    "Stall",
]

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MAX_RESOLUTION = 16384
MAX_PROGRESS_MESSAGES = 10  # progress frames per KSampler, whatever `steps` says
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024}
OUTPUT_DIR = "/ComfyUI/output"  # only shown in error messages

# aiohttp's own answer to a handler that raised (what ComfyUI sends for a body that isn't JSON).
INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"

KSAMPLER_NAMES = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis",
    "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp",
    "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece",
]  # fmt: skip
SAMPLER_NAMES = [*KSAMPLER_NAMES, "ddim", "uni_pc", "uni_pc_bh2"]
SCHEDULER_NAMES = [
    "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
    "linear_quadratic", "kl_optimal",
]  # fmt: skip
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
    "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
    "upscale_models", "hypernetworks", "photomaker", "classifiers", "model_patches",
    "audio_encoders",
]  # fmt: skip


# -- behaviours ---------------------------------------------------------------------------


@dataclass
class Run:
    """Execute the prompt normally."""


@dataclass
class DropSocket:
    """Close every websocket of the prompt's client once `after_messages` frames were sent to
    it for this prompt (execution_start is frame 1). The prompt still finishes into /history;
    a client that reconnects with the same clientId gets the frames that follow."""

    after_messages: int = 3


@dataclass
class Stall:
    """Start (execution_start, execution_cached, executing for the first node), then wait for
    POST /interrupt, which ends the prompt with execution_interrupted (history: error).

    As on a real server, POST /queue {"delete": [id]} does not touch a prompt that is running:
    only an interrupt (or leaving the `async with`) ends a stall."""


@dataclass
class Fail:
    """The node raises: POST /prompt was 200, then execution_error, status, executing null.

    `node_id` None (or a node that does not run) fails the first KSampler to run, else the
    first node to run. `message` becomes exception_message (with ComfyUI's trailing newline).
    """

    node_id: str | None = None
    message: str = "Error while processing the node (fake failure)"
    exception_type: str = "RuntimeError"


@dataclass
class Delay:
    """Stay pending in the queue for `seconds` before running (nothing behind it runs either,
    as with one busy worker); POST /queue {"delete": [id]} removes it meanwhile."""

    seconds: float = 1.0


@dataclass
class Hold:
    """Start (execution_start, executing for the first node), then wait for `gate` before
    running on as `Run` does: the test, not a clock, decides how long the render stays
    running. POST /interrupt ends it as it ends a Stall; so does leaving the `async with`
    (the server stopped mid-render)."""

    gate: asyncio.Event


ComfyBehaviour = Run | DropSocket | Stall | Fail | Delay | Hold


@dataclass
class ComfyRecorded(Recorded):
    """A request the fake received. `path` is the path as sent, without the query string
    (so "/api/prompt" stays "/api/prompt"); the query parameters are in `query`."""

    query: dict[str, str] = field(default_factory=dict)


# -- node classes ---------------------------------------------------------------------------

InputDef = tuple[Any, JSON]  # (type name or list of combo options, config)


@dataclass(frozen=True)
class _NodeClass:
    required: dict[str, InputDef]
    returns: tuple[str, ...] = ()
    return_names: tuple[str, ...] = ()
    hidden: dict[str, str] = field(default_factory=dict)
    output_node: bool = False
    category: str = ""
    display_name: str = ""
    description: str = ""

    def object_info(self, name: str) -> JSON:
        inputs: JSON = {"required": {k: list(v) for k, v in self.required.items()}}
        order: JSON = {"required": list(self.required)}
        if self.hidden:
            inputs["hidden"] = dict(self.hidden)
            order["hidden"] = list(self.hidden)
        return {
            "input": inputs,
            "input_order": order,
            "output": list(self.returns),
            "output_is_list": [False] * len(self.returns),
            "output_name": list(self.return_names or self.returns),
            "name": name,
            "display_name": self.display_name or name,
            "description": self.description,
            "python_module": "nodes",
            "category": self.category,
            "output_node": self.output_node,
        }


def _tip(text: str, **config: Any) -> JSON:
    return {**config, "tooltip": text}


def _node_classes(checkpoints: list[str]) -> dict[str, _NodeClass]:
    """The built-in node classes the fake knows (nodes.py), with their INPUT_TYPES."""
    size = {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8}
    image_size = {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}
    batch = {"default": 1, "min": 1, "max": 4096}
    return {
        "CheckpointLoaderSimple": _NodeClass(
            {"ckpt_name": (list(checkpoints), _tip("The name of the checkpoint (model) to load."))},
            ("MODEL", "CLIP", "VAE"),
            category="loaders",
            display_name="Load Checkpoint",
            description="Loads a diffusion model checkpoint.",
        ),
        "CLIPTextEncode": _NodeClass(
            {
                "text": ("STRING", _tip("The text to be encoded.", multiline=True)),
                "clip": ("CLIP", _tip("The CLIP model used for encoding the text.")),
            },
            ("CONDITIONING",),
            category="conditioning",
            display_name="CLIP Text Encode (Prompt)",
        ),
        "EmptyLatentImage": _NodeClass(
            {
                "width": ("INT", _tip("The width of the latent images in pixels.", **size)),
                "height": ("INT", _tip("The height of the latent images in pixels.", **size)),
                "batch_size": ("INT", _tip("The number of latent images in the batch.", **batch)),
            },
            ("LATENT",),
            category="latent",
            display_name="Empty Latent Image",
        ),
        "KSampler": _NodeClass(
            {
                "model": ("MODEL", _tip("The model used for denoising the input latent.")),
                "seed": ("INT", _tip("The random seed.", default=0, min=0, max=2**64 - 1)),
                "steps": ("INT", _tip("The number of steps.", default=20, min=1, max=10000)),
                "cfg": ("FLOAT", _tip("The CFG scale.", default=8.0, min=0.0, max=100.0)),
                "sampler_name": (SAMPLER_NAMES, _tip("The sampling algorithm.")),
                "scheduler": (SCHEDULER_NAMES, _tip("The noise schedule.")),
                "positive": ("CONDITIONING", _tip("What to include in the image.")),
                "negative": ("CONDITIONING", _tip("What to exclude from the image.")),
                "latent_image": ("LATENT", _tip("The latent image to denoise.")),
                "denoise": ("FLOAT", _tip("The denoising.", default=1.0, min=0.0, max=1.0)),
            },
            ("LATENT",),
            category="sampling",
            display_name="KSampler",
        ),
        "VAEDecode": _NodeClass(
            {
                "samples": ("LATENT", _tip("The latent to be decoded.")),
                "vae": ("VAE", _tip("The VAE model used for decoding the latent.")),
            },
            ("IMAGE",),
            category="latent",
            display_name="VAE Decode",
        ),
        "EmptyImage": _NodeClass(
            {
                "width": ("INT", dict(image_size)),
                "height": ("INT", dict(image_size)),
                "batch_size": ("INT", dict(batch)),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1}),
            },
            ("IMAGE",),
            category="image",
            display_name="EmptyImage",
        ),
        "SaveImage": _NodeClass(
            {
                "images": ("IMAGE", _tip("The images to save.")),
                "filename_prefix": ("STRING", _tip("The prefix for the file.", default="ComfyUI")),
            },
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            output_node=True,
            category="image",
            display_name="Save Image",
            description="Saves the input images to your ComfyUI output directory.",
        ),
        "PreviewImage": _NodeClass(
            {"images": ("IMAGE", {})},
            hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
            output_node=True,
            category="image",
            display_name="Preview Image",
        ),
    }


# -- values flowing between nodes -------------------------------------------------------------


@dataclass(frozen=True)
class _Weights:
    kind: str  # ModelPatcher, CLIP, VAE
    ckpt: str

    def __str__(self) -> str:
        return f"<comfy.{self.kind} object for {self.ckpt}>"


@dataclass(frozen=True)
class _Latent:
    width: int
    height: int
    batch: int
    seed: int | None = None
    positive: str = ""
    negative: str = ""

    def __str__(self) -> str:
        return f"{{'samples': tensor of shape [{self.batch}, 4, {self.height // 8}, ...]}}"


class _Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class _NodeError(Exception):
    """A node that raised: what execution_error reports."""

    def __init__(self, message: str, exception_type: str, tb: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type
        self.tb = tb


# -- queue items ------------------------------------------------------------------------------


@dataclass
class _Job:
    number: float
    prompt_id: str
    prompt: JSON  # the graph after validation (INT/FLOAT/STRING inputs converted, as upstream)
    extra_data: JSON
    outputs: list[str]
    behaviour: ComfyBehaviour
    ready_at: float
    seq: int
    interrupt: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def client_id(self) -> str | None:
        cid = self.extra_data.get("client_id")
        return None if cid is None else str(cid)

    def item(self) -> list[Any]:
        """[number, prompt_id, prompt, extra_data, outputs_to_execute], as in /queue."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class _CacheEntry:
    outputs: tuple[Any, ...]
    ui: JSON | None


@dataclass
class _Current:
    """The running prompt, as the websocket side needs it."""

    job: _Job
    drop_after: int | None
    sent: int = 0
    last_node: str | None = None
    node_states: dict[str, JSON] = field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _types_match(received: str, wanted: Any) -> bool:
    """execution.validate_node_input, without the COMBO details."""
    if not isinstance(wanted, str):
        return received == "COMBO"
    if received == wanted or "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _format_value(value: Any) -> Any:
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return str(value)


def _error(type_: str, message: str, details: str = "", extra: JSON | None = None) -> JSON:
    return {"type": type_, "message": message, "details": details, "extra_info": extra or {}}


def _internal_error() -> web.Response:
    return web.Response(status=500, text=INTERNAL_ERROR)


# -- the server -------------------------------------------------------------------------------


class FakeComfyUI:
    """ComfyUI's API on 127.0.0.1; `checkpoints` are the installed checkpoint names."""

    def __init__(self, checkpoints: list[str] | None = None) -> None:
        self.checkpoints = (
            list(checkpoints) if checkpoints is not None else ["sd_xl_base_1.0.safetensors"]
        )
        self.url = ""
        self.requests: list[ComfyRecorded] = []
        self.prompts: dict[str, JSON] = {}  # prompt_id -> graph as submitted (accepted only)
        self.client_ids: dict[str, str] = {}  # prompt_id -> client_id (absent when none sent)
        self.interrupts: list[JSON | None] = []  # POST /interrupt bodies (None: empty/not JSON)
        self.queue_deletes: list[list[str]] = []  # the "delete" lists of POST /queue
        self.executions = 0  # prompts that ran at least one node (not fully cached)
        #: the most prompts accepted and not finished at once (running or pending): a client
        #: that sends one job at a time keeps it at 1
        self.max_in_flight = 0
        # every websocket event emitted: (target client id, or None for every socket; frame)
        self.events: list[tuple[str | None, JSON]] = []
        # (type, subfolder, filename) -> file bytes; "output" files come from SaveImage
        self.files: dict[tuple[str, str, str], bytes] = {}
        self.step_delay = 0.01  # seconds between KSampler progress frames
        self.progress_state = True  # send progress_state frames, as 0.3.64 does
        self.default: ComfyBehaviour = Run()
        #: how many POST /prompt a reverse proxy in front answers 503 (ComfyUI restarting)
        self.unavailable = 0
        self._script: deque[ComfyBehaviour] = deque()
        self._number = 0
        self._seq = 0
        self._pending: list[_Job] = []
        self._running: _Job | None = None
        self._current: _Current | None = None
        self._history: dict[str, JSON] = {}
        self._cache: dict[str, _CacheEntry] = {}
        self._sockets: dict[str, web.WebSocketResponse] = {}  # clientId -> its latest socket
        self._all_sockets: dict[web.WebSocketResponse, str] = {}  # every open socket -> sid
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._worker_errors: list[BaseException] = []
        self._runner: web.AppRunner | None = None
        self._app = web.Application(middlewares=[self._record])
        for prefix in ("", "/api"):
            self._add_routes(self._app.router, prefix)

    # -- scripting ---------------------------------------------------------------------------

    def then(self, *behaviours: ComfyBehaviour) -> Self:
        """Behaviours for the next accepted prompts, one each, in order; returns self."""
        self._script.extend(behaviours)
        return self

    def requests_to(self, path: str) -> list[ComfyRecorded]:
        """Requests to `path` or to `/api{path}` (e.g. "/prompt"), any method."""
        return [r for r in self.requests if r.path in (path, f"/api{path}")]

    @property
    def running(self) -> str | None:
        """The id of the prompt executing now (the fake runs one at a time), or None."""
        return self._running.prompt_id if self._running is not None else None

    def history(self, prompt_id: str) -> JSON | None:
        """The history entry of a finished prompt, or None."""
        return self._history.get(prompt_id)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        runner = web.AppRunner(
            self._app, access_log=None, handler_cancellation=True, shutdown_timeout=0.05
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._worker = asyncio.create_task(self._work())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for ws in list(self._all_sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._worker_errors and exc is None:
            raise RuntimeError("FakeComfyUI's worker failed") from self._worker_errors[0]

    # -- routes --------------------------------------------------------------------------------

    def _add_routes(self, router: web.UrlDispatcher, p: str) -> None:
        router.add_get(p + "/ws", self._ws)
        router.add_get(p + "/prompt", self._get_prompt)
        router.add_post(p + "/prompt", self._post_prompt)
        router.add_get(p + "/queue", self._get_queue)
        router.add_post(p + "/queue", self._post_queue)
        router.add_post(p + "/interrupt", self._post_interrupt)
        router.add_post(p + "/free", self._post_free)
        router.add_get(p + "/history", self._get_history)
        router.add_get(p + "/history/{prompt_id}", self._get_history_item)
        router.add_post(p + "/history", self._post_history)
        router.add_get(p + "/view", self._view)
        router.add_get(p + "/system_stats", self._system_stats)
        router.add_get(p + "/models", self._models)
        router.add_get(p + "/models/{folder}", self._models_in)
        router.add_get(p + "/object_info", self._object_info)
        router.add_get(p + "/object_info/{node_class}", self._object_info_one)
        router.add_get(p + "/embeddings", self._embeddings)

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query)
        self.requests.append(
            ComfyRecorded(request.method, request.path, headers, body, raw, query=query)
        )
        return await handler(request)

    @property
    def _classes(self) -> dict[str, _NodeClass]:
        return _node_classes(self.checkpoints)

    def _queue_info(self) -> JSON:
        remaining = len(self._pending) + (1 if self._running is not None else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._queue_info())

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [self._running.item()] if self._running is not None else []
        pending = [job.item() for job in sorted(self._pending, key=_queue_key)]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return _internal_error()
        if isinstance(data, dict):
            if data.get("clear"):
                self._pending.clear()
                await self._queue_updated()
            if "delete" in data:
                ids = [str(i) for i in data["delete"]]
                self.queue_deletes.append(ids)
                for prompt_id in ids:  # only pending prompts: a running one is untouched
                    job = next((j for j in self._pending if j.prompt_id == prompt_id), None)
                    if job is not None:
                        self._pending.remove(job)
                        await self._queue_updated()
            self._wake.set()
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        self.interrupts.append(data if isinstance(data, dict) else None)
        wanted = data.get("prompt_id") if isinstance(data, dict) else None
        running = self._running
        if running is not None and (not wanted or wanted == running.prompt_id):
            running.interrupt.set()
        return web.Response(status=200)

    async def _post_free(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        limit = int(max_items) if max_items is not None else None
        offset = int(request.query.get("offset", -1))
        if offset < 0 and limit is not None:
            offset = len(self._history) - limit
        out: JSON = {}
        for i, (key, entry) in enumerate(self._history.items()):
            if i >= offset:
                out[key] = entry
                if limit is not None and len(out) >= limit:
                    break
        return web.json_response(out)

    async def _get_history_item(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return _internal_error()
        if isinstance(data, dict):
            if data.get("clear"):
                self._history.clear()
            for prompt_id in data.get("delete", []):
                self._history.pop(str(prompt_id), None)
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.Response:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename = query["filename"]
        if not filename or filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        kind = query.get("type", "output")
        if kind not in ("output", "input", "temp"):
            return web.Response(status=400)
        subfolder = posixpath.normpath(posixpath.join("/", query.get("subfolder", "")))
        rel = posixpath.relpath(subfolder, "/")
        if rel.startswith(".."):
            return web.Response(status=403)
        filename = posixpath.basename(filename)
        data = self.files.get((kind, "" if rel == "." else rel, filename))
        if data is None:
            return web.Response(status=404)
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        headers = {"Content-Disposition": f'filename="{filename}"', "Content-Type": content_type}
        return web.Response(body=data, headers=headers)

    async def _system_stats(self, request: web.Request) -> web.Response:
        ram_total, ram_free = 16_000_000_000, 12_000_000_000
        system = {
            "os": "posix",
            "ram_total": ram_total,
            "ram_free": ram_free,
            "comfyui_version": "0.3.64",
            "required_frontend_version": "1.27.10",
            "installed_templates_version": "0.1.94",
            "required_templates_version": "0.1.94",
            "python_version": "3.11.7 (main) [GCC 12.2.0]",
            "pytorch_version": "2.8.0+cpu",
            "embedded_python": False,
            "argv": ["main.py", "--cpu", "--listen", "127.0.0.1"],
        }
        device = {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": ram_total,
            "vram_free": ram_free,
            "torch_vram_total": ram_total,
            "torch_vram_free": ram_free,
        }
        return web.json_response({"system": system, "devices": [device]})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def _models_in(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(list(self.checkpoints) if folder == "checkpoints" else [])

    async def _object_info(self, request: web.Request) -> web.Response:
        return web.json_response({k: v.object_info(k) for k, v in self._classes.items()})

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        spec = self._classes.get(name)
        return web.json_response({name: spec.object_info(name)} if spec is not None else {})

    async def _embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    # -- websocket -------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=1.0)  # `timeout`: how long close() awaits the reply
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if not sid:
            sid = uuid.uuid4().hex
        # As upstream: one socket per clientId, the newest; an older one stays open, unfed.
        self._sockets[sid] = ws
        self._all_sockets[ws] = sid
        try:
            await self._send_one(ws, "status", {"status": self._queue_info(), "sid": sid})
            current = self._current
            if current is not None and current.job.client_id == sid and current.last_node:
                await self._send_one(ws, "executing", {"node": current.last_node})
            first = True
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                with contextlib.suppress(ValueError, AttributeError):
                    data = json.loads(msg.data)
                    if first and data.get("type") == "feature_flags":
                        await self._send_one(ws, "feature_flags", dict(SERVER_FEATURES))
                first = False
        finally:
            self._all_sockets.pop(ws, None)
            if self._sockets.get(sid) is ws:
                del self._sockets[sid]
        return ws

    @staticmethod
    async def _send_one(ws: web.WebSocketResponse, event: str, data: JSON) -> bool:
        if ws.closed:
            return False
        try:
            await ws.send_str(json.dumps({"type": event, "data": data}))
        except (ConnectionError, RuntimeError):  # the client went away meanwhile
            return False
        return True

    async def _send(self, event: str, data: JSON, sid: str | None) -> None:
        """server.send_sync: to the socket of `sid`, or to every socket when None."""
        self.events.append((sid, {"type": event, "data": data}))
        if sid is None:
            targets = list(self._sockets.items())
        else:
            ws = self._sockets.get(sid)
            targets = [(sid, ws)] if ws is not None else []
        current = self._current
        for target_sid, ws in targets:
            if not await self._send_one(ws, event, data):
                continue
            if current is None or current.drop_after is None:
                continue
            if target_sid == current.job.client_id:
                current.sent += 1
                if current.sent == current.drop_after:
                    await self._drop(target_sid)

    async def _drop(self, sid: str) -> None:
        for ws, ws_sid in list(self._all_sockets.items()):
            if ws_sid == sid:
                with contextlib.suppress(Exception):
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"dropped by the fake")

    async def _queue_updated(self) -> None:
        await self._send("status", {"status": self._queue_info()}, None)

    # -- POST /prompt ------------------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        if self.unavailable > 0:  # the proxy in front answers while ComfyUI restarts
            self.unavailable -= 1
            return web.Response(status=503, text="503 Service Unavailable")
        try:
            data = json.loads(await request.read())
            return await self._submit(data)
        except Exception:  # upstream lets aiohttp answer a handler that raised
            return _internal_error()

    async def _submit(self, data: Any) -> web.Response:
        if not isinstance(data, dict):
            if isinstance(data, list | str):  # `"prompt" in data` is simply False upstream
                return self._no_prompt()
            raise TypeError(f"argument of type {type(data).__name__!r} is not iterable")
        if "number" in data:
            number = float(data["number"])
        else:
            number = -self._number if data.get("front") else self._number
            self._number += 1
        if "prompt" not in data:
            return self._no_prompt()
        prompt = data["prompt"]
        if not isinstance(prompt, dict):
            raise TypeError("the prompt is not an object")
        submitted = copy.deepcopy(prompt)
        prompt_id = str(data.get("prompt_id", uuid.uuid4()))
        valid, error, outputs, node_errors = self._validate_prompt(
            prompt, data.get("partial_execution_targets")
        )
        extra_data = data.get("extra_data", {})
        if "client_id" in data:
            extra_data["client_id"] = data["client_id"]
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        behaviour = self._script.popleft() if self._script else self.default
        delay = behaviour.seconds if isinstance(behaviour, Delay) else 0.0
        ready_at = asyncio.get_running_loop().time() + delay
        job = _Job(number, prompt_id, prompt, extra_data, outputs, behaviour, ready_at, self._seq)
        self._seq += 1
        self.prompts[prompt_id] = submitted
        if job.client_id is not None:
            self.client_ids[prompt_id] = job.client_id
        self._pending.append(job)
        in_flight = len(self._pending) + (self._running is not None)
        self.max_in_flight = max(self.max_in_flight, in_flight)
        self._wake.set()
        await self._queue_updated()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    @staticmethod
    def _no_prompt() -> web.Response:
        error = _error("no_prompt", "No prompt provided", "No prompt provided")
        return web.json_response({"error": error, "node_errors": {}}, status=400)

    # -- validation (execution.validate_prompt / validate_inputs) ---------------------------

    def _validate_prompt(
        self, prompt: JSON, partial: list[str] | None
    ) -> tuple[bool, JSON | None, list[str], JSON]:
        classes = self._classes
        outputs: list[str] = []
        for node_id, node in prompt.items():
            if "class_type" not in node:
                message = "Cannot execute because a node is missing the class_type property."
                return False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"), [], {}
            class_type = node["class_type"]
            spec = classes.get(class_type)
            if spec is None:
                message = f"Cannot execute because node {class_type} does not exist."
                return False, _error("invalid_prompt", message, f"Node ID '#{node_id}'"), [], {}
            if spec.output_node and (partial is None or node_id in partial):
                outputs.append(node_id)
        if not outputs:
            return False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {}

        good: list[str] = []
        failures: list[tuple[str, list[JSON]]] = []
        node_errors: JSON = {}
        validated: dict[str, tuple[bool, list[JSON]]] = {}
        for out in outputs:
            try:
                valid, reasons = self._validate_inputs(prompt, out, validated, [])
            except Exception as ex:
                valid = False
                extra = {
                    "exception_type": _type_name(ex),
                    "traceback": traceback.format_tb(ex.__traceback__),
                }
                message = "Exception when validating node"
                reasons = [_error("exception_during_validation", message, str(ex), extra)]
                validated[out] = (False, reasons)
            if valid:
                good.append(out)
                continue
            failures.append((out, reasons))
            for node_id, (ok, node_reasons) in validated.items():
                # Upstream: nodes downstream of an error are invalid but carry no errors.
                if ok or not node_reasons:
                    continue
                if node_id not in node_errors:
                    node_errors[node_id] = {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    }
                node_errors[node_id]["dependent_outputs"].append(out)
        if not good:
            details = "\n".join(
                f"{r['message']}: {r['details']}" for _, reasons in failures for r in reasons
            )
            error = _error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
            )
            return False, error, [], node_errors
        return True, None, good, node_errors

    def _validate_inputs(
        self,
        prompt: JSON,
        node_id: str,
        validated: dict[str, tuple[bool, list[JSON]]],
        visiting: list[str],
    ) -> tuple[bool, list[JSON]]:
        if node_id in validated:
            return validated[node_id]
        if node_id in visiting:
            path = [*visiting[visiting.index(node_id) :], node_id]
            text = " -> ".join(f"{n} ({prompt[n]['class_type']})" for n in path)
            for n in dict.fromkeys(path):
                extra: JSON = {"node_id": n, "cycle_nodes": list(dict.fromkeys(path))}
                cycle = _error("dependency_cycle", "Dependency cycle detected", text, extra)
                validated[n] = (False, [cycle])
            return validated[node_id]
        classes = self._classes
        inputs = prompt[node_id]["inputs"]
        spec = classes[prompt[node_id]["class_type"]]
        errors: list[JSON] = []
        valid = True
        for name, (input_type, config) in spec.required.items():
            if name not in inputs:
                extra = {"input_name": name}
                message = "Required input is missing"
                errors.append(_error("required_input_missing", message, name, extra))
                continue
            value = inputs[name]
            info = [input_type, config]
            if isinstance(value, list):
                if len(value) != 2:
                    extra = {"input_name": name, "input_config": info, "received_value": value}
                    message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
                    errors.append(_error("bad_linked_input", message, name, extra))
                    continue
                source = value[0]
                received = classes[prompt[source]["class_type"]].returns[value[1]]
                if not _types_match(received, input_type):
                    details = f"{name}, received_type({received}) mismatch input_type({input_type})"
                    extra = {
                        "input_name": name,
                        "input_config": info,
                        "received_type": received,
                        "linked_node": value,
                    }
                    message = "Return type mismatch between linked nodes"
                    errors.append(_error("return_type_mismatch", message, details, extra))
                    continue
                try:
                    visiting.append(node_id)
                    try:
                        ok, _ = self._validate_inputs(prompt, source, validated, visiting)
                    finally:
                        visiting.pop()
                    if not ok:
                        valid = False
                except Exception as ex:
                    valid = False
                    extra = {
                        "input_name": name,
                        "input_config": info,
                        "exception_message": str(ex),
                        "exception_type": _type_name(ex),
                        "traceback": traceback.format_tb(ex.__traceback__),
                        "linked_node": value,
                    }
                    message = "Exception when validating inner node"
                    reason = _error("exception_during_inner_validation", message, str(ex), extra)
                    validated[source] = (False, [reason])
                continue
            try:
                if isinstance(value, dict) and "__value__" in value:
                    value = inputs[name] = value["__value__"]
                if input_type == "INT":
                    value = inputs[name] = int(value)
                elif input_type == "FLOAT":
                    value = inputs[name] = float(value)
                elif input_type == "STRING":
                    value = inputs[name] = str(value)
            except Exception as ex:
                extra = {
                    "input_name": name,
                    "input_config": info,
                    "received_value": value,
                    "exception_message": str(ex),
                }
                message = f"Failed to convert an input value to a {input_type} value"
                errors.append(
                    _error("invalid_input_type", message, f"{name}, {value}, {ex}", extra)
                )
                continue
            extra = {"input_name": name, "input_config": info, "received_value": value}
            if "min" in config and value < config["min"]:
                message = f"Value {value} smaller than min of {config['min']}"
                errors.append(_error("value_smaller_than_min", message, name, extra))
                continue
            if "max" in config and value > config["max"]:
                message = f"Value {value} bigger than max of {config['max']}"
                errors.append(_error("value_bigger_than_max", message, name, extra))
                continue
            if isinstance(input_type, list) and value not in input_type:
                listed = str(input_type)
                if len(input_type) > 20:  # upstream does not send back long lists
                    listed = f"(list of length {len(input_type)})"
                    extra["input_config"] = None
                details = f"{name}: {value!r} not in {listed}"
                errors.append(_error("value_not_in_list", "Value not in list", details, extra))
        before = validated.get(node_id, (True, []))
        result = (
            before[0] and valid and not errors,
            before[1] + [e for e in errors if e not in before[1]],
        )
        validated[node_id] = result
        return result

    # -- the worker (main.prompt_worker + PromptExecutor) -------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._next_job()
            try:
                await self._execute(job)
            except asyncio.CancelledError:
                raise
            except Exception as ex:  # a bug in the fake: report it when the block exits
                self._worker_errors.append(ex)
                self._running = None
                self._current = None

    async def _next_job(self) -> _Job:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            timeout: float | None = None
            if self._pending:
                job = min(self._pending, key=_queue_key)
                wait = job.ready_at - loop.time()
                if wait <= 0:
                    self._pending.remove(job)
                    return job
                timeout = wait
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _execute(self, job: _Job) -> None:
        behaviour = job.behaviour
        drop = behaviour.after_messages if isinstance(behaviour, DropSocket) else None
        current = _Current(job, drop)
        self._running = job
        await self._queue_updated()
        self._current = current  # DropSocket counts from execution_start

        pid, cid = job.prompt_id, job.client_id
        prompt = job.prompt
        messages: list[list[Any]] = []

        async def add_message(event: str, data: JSON, broadcast: bool) -> None:
            data = {**data, "timestamp": _now_ms()}
            messages.append([event, data])
            if cid is not None or broadcast:
                await self._send(event, data, cid)

        await add_message("execution_start", {"prompt_id": pid}, False)
        order = _execution_order(prompt, job.outputs)
        memo: dict[str, str] = {}
        signatures = {node_id: _signature(prompt, node_id, memo) for node_id in prompt}
        # The classic cache keeps only what the current prompt can use.
        wanted = set(signatures.values())
        self._cache = {k: v for k, v in self._cache.items() if k in wanted}
        target = self._target(job, order)
        if target is not None:
            self._cache.pop(signatures[target], None)  # a scripted node really runs
        cached = [node_id for node_id in prompt if signatures[node_id] in self._cache]
        await add_message("execution_cached", {"nodes": cached, "prompt_id": pid}, False)

        results: dict[str, tuple[Any, ...]] = {}
        executed: list[str] = []
        ui_outputs: JSON = {}
        meta: JSON = {}
        success = True
        counted = False
        for node_id in order:
            node = prompt[node_id]
            class_type = node["class_type"]
            entry = self._cache.get(signatures[node_id])
            if entry is not None:
                results[node_id] = entry.outputs
                await self._node_state(current, node_id, "finished")
                if entry.ui:
                    ui_outputs[node_id] = entry.ui
                    meta[node_id] = _meta(node_id)
                    if cid is not None:
                        await self._send("executed", _executed(node_id, entry.ui, pid), cid)
                continue
            if not counted:
                self.executions += 1
                counted = True
            await self._node_state(current, node_id, "running")
            if cid is not None:
                current.last_node = node_id
                executing = {"node": node_id, "display_node": node_id, "prompt_id": pid}
                await self._send("executing", executing, cid)
            try:
                if job.interrupt.is_set():
                    raise _Interrupted
                if node_id == target and isinstance(behaviour, Stall):
                    await job.interrupt.wait()
                    raise _Interrupted
                if node_id == target and isinstance(behaviour, Hold):
                    await _first(behaviour.gate, job.interrupt)
                    if job.interrupt.is_set():
                        raise _Interrupted
                if node_id == target and isinstance(behaviour, Fail):
                    tb = [
                        '  File "/ComfyUI/execution.py", line 496, in execute\n'
                        "    output_data, output_ui, has_subgraph, has_pending_tasks = "
                        "await get_output_data(...)\n",
                        f'  File "/ComfyUI/nodes.py", line 1, in {class_type}\n'
                        f"    raise {behaviour.exception_type}(...)\n",
                    ]
                    raise _NodeError(behaviour.message, behaviour.exception_type, tb)
                outputs, ui = await self._run_node(current, node_id, results)
            except _Interrupted:
                success = False
                interrupted = {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(executed),
                }
                await add_message("execution_interrupted", interrupted, True)
                break
            except Exception as ex:
                success = False
                if isinstance(ex, _NodeError):
                    message, exc_type, tb = ex.message, ex.exception_type, ex.tb
                else:
                    message, exc_type = str(ex), _type_name(ex)
                    tb = traceback.format_tb(ex.__traceback__)
                error = {
                    "prompt_id": pid,
                    "node_id": node_id,
                    "node_type": class_type,
                    "executed": list(executed),
                    "exception_message": f"{message}\n",
                    "exception_type": exc_type,
                    "traceback": tb,
                    "current_inputs": self._current_inputs(node, results),
                    "current_outputs": list(cached),
                }
                await add_message("execution_error", error, False)
                break
            results[node_id] = outputs
            self._cache[signatures[node_id]] = _CacheEntry(outputs, ui)
            executed.append(node_id)
            await self._node_state(current, node_id, "finished")
            if ui:
                ui_outputs[node_id] = ui
                meta[node_id] = _meta(node_id)
                if cid is not None:
                    await self._send("executed", _executed(node_id, ui, pid), cid)
        else:
            await add_message("execution_success", {"prompt_id": pid}, False)
        current.last_node = None

        # PromptQueue.task_done, then the done marker.
        status = {
            "status_str": "success" if success else "error",
            "completed": success,
            "messages": messages,
        }
        self._history[pid] = {
            "prompt": job.item(),
            "outputs": ui_outputs,
            "status": status,
            "meta": meta,
        }
        self._running = None
        await self._queue_updated()
        if cid is not None:
            await self._send("executing", {"node": None, "prompt_id": pid}, cid)
        self._current = None

    @staticmethod
    def _target(job: _Job, order: list[str]) -> str | None:
        """The node a Stall, Hold or Fail acts on."""
        behaviour = job.behaviour
        if not order:
            return None
        if isinstance(behaviour, Stall | Hold):
            return order[0]
        if isinstance(behaviour, Fail):
            if behaviour.node_id in order:
                return behaviour.node_id
            samplers = [n for n in order if job.prompt[n]["class_type"] == "KSampler"]
            return samplers[0] if samplers else order[0]
        return None

    async def _node_state(self, current: _Current, node_id: str, state: str) -> None:
        """progress_state frames (0.3.64 sends them at each node's start and finish)."""
        if not self.progress_state:
            return
        pid = current.job.prompt_id
        current.node_states[node_id] = {
            "value": 1 if state == "finished" else 0,
            "max": 1,
            "state": state,
            "node_id": node_id,
            "prompt_id": pid,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        data = {"prompt_id": pid, "nodes": copy.deepcopy(current.node_states)}
        await self._send("progress_state", data, current.job.client_id)

    @staticmethod
    def _current_inputs(node: JSON, results: dict[str, tuple[Any, ...]]) -> JSON:
        out: JSON = {}
        for name, value in node["inputs"].items():
            if _is_link(value):
                produced = results.get(value[0])
                if produced is None or not isinstance(value[1], int):
                    out[name] = [None]
                    continue
                item = produced[value[1]] if value[1] < len(produced) else None
                out[name] = [_format_value(item)]
            else:
                out[name] = [_format_value(value)]
        return out

    # -- nodes --------------------------------------------------------------------------------

    async def _run_node(
        self, current: _Current, node_id: str, results: dict[str, tuple[Any, ...]]
    ) -> tuple[tuple[Any, ...], JSON | None]:
        node = current.job.prompt[node_id]
        class_type = node["class_type"]
        args: JSON = {}
        for name, value in node["inputs"].items():
            args[name] = results[value[0]][value[1]] if _is_link(value) else value
        if class_type == "CheckpointLoaderSimple":
            ckpt = str(args["ckpt_name"])
            weights = ("ModelPatcher", "CLIP", "VAE")
            return tuple(_Weights(kind, ckpt) for kind in weights), None
        if class_type == "CLIPTextEncode":
            return (str(args["text"]),), None
        if class_type == "EmptyLatentImage":
            return (_Latent(args["width"], args["height"], args["batch_size"]),), None
        if class_type == "KSampler":
            await self._sample(current, node_id, int(args["steps"]))
            latent: _Latent = args["latent_image"]
            sampled = _Latent(
                latent.width,
                latent.height,
                latent.batch,
                int(args["seed"]),
                str(args["positive"]),
                str(args["negative"]),
            )
            return (sampled,), None
        if class_type == "VAEDecode":
            return ([_render(args["samples"], i) for i in range(args["samples"].batch)],), None
        if class_type == "EmptyImage":
            color = int(args["color"])
            rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
            size = (int(args["width"]), int(args["height"]))
            return ([Image.new("RGB", size, rgb) for _ in range(int(args["batch_size"]))],), None
        if class_type == "SaveImage":
            prefix = str(args.get("filename_prefix", "ComfyUI"))
            return (), self._save(current.job, args["images"], prefix, "output")
        if class_type == "PreviewImage":
            suffix = "".join(chr(ord("a") + b % 26) for b in uuid.uuid4().bytes[:5])
            return (), self._save(current.job, args["images"], f"ComfyUI_temp_{suffix}", "temp")
        raise RuntimeError(f"the fake cannot run {class_type}")

    async def _sample(self, current: _Current, node_id: str, steps: int) -> None:
        """KSampler's progress frames: at most MAX_PROGRESS_MESSAGES, `step_delay` apart."""
        job = current.job
        count = max(1, min(steps, MAX_PROGRESS_MESSAGES))
        for i in range(1, count + 1):
            await asyncio.sleep(self.step_delay)
            if job.interrupt.is_set():
                raise _Interrupted
            value = steps if i == count else i * steps // count
            progress = {"value": value, "max": steps, "prompt_id": job.prompt_id, "node": node_id}
            await self._send("progress", progress, job.client_id)

    def _save(self, job: _Job, images: list[Image.Image], prefix: str, kind: str) -> JSON:
        """SaveImage: `{prefix}_{counter:05}_.png`, a prefix with slashes gives a subfolder."""
        if images:
            prefix = prefix.replace("%width%", str(images[0].width))
            prefix = prefix.replace("%height%", str(images[0].height))
        normal = posixpath.normpath(prefix)
        subfolder, filename = posixpath.dirname(normal), posixpath.basename(normal)
        if subfolder.startswith("/") or subfolder.split("/")[0] == "..":
            raise Exception(  # upstream raises a bare Exception here
                "**** ERROR: Saving image outside the output folder is not allowed."
                f"\n full_output_folder: {posixpath.join(OUTPUT_DIR, subfolder)}"
                f"\n         output_dir: {OUTPUT_DIR}"
            )
        pattern = re.compile(re.escape(filename) + r"_(\d+)_")
        counters = [
            int(m.group(1))
            for (k, sub, name) in self.files
            if k == kind and sub == subfolder and (m := pattern.fullmatch(name.rsplit(".", 1)[0]))
        ]
        counter = max(counters, default=0) + 1
        metadata = PngInfo()
        metadata.add_text("prompt", json.dumps(job.prompt))
        for key, value in (job.extra_data.get("extra_pnginfo") or {}).items():
            metadata.add_text(str(key), json.dumps(value))
        saved = []
        for image in images:
            name = f"{filename}_{counter:05}_.png"
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=metadata, compress_level=4)
            self.files[(kind, subfolder, name)] = buffer.getvalue()
            saved.append({"filename": name, "subfolder": subfolder, "type": kind})
            counter += 1
        return {"images": saved}


async def _first(*events: asyncio.Event) -> None:
    """Wait until any of `events` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _queue_key(job: _Job) -> tuple[float, int]:
    return (job.number, job.seq)


def _meta(node_id: str) -> JSON:
    return {
        "node_id": node_id,
        "display_node": node_id,
        "parent_node": None,
        "real_node_id": node_id,
    }


def _executed(node_id: str, ui: JSON, prompt_id: str) -> JSON:
    return {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id}


def _execution_order(prompt: JSON, outputs: list[str]) -> list[str]:
    """Nodes the outputs need, each after its inputs."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value) and value[0] in prompt:
                visit(value[0])
        order.append(node_id)

    for out in outputs:
        visit(out)
    return order


def _signature(prompt: JSON, node_id: str, memo: dict[str, str]) -> str:
    """The cache key: class and inputs, links replaced by the signature of their source."""
    if node_id in memo:
        return memo[node_id]
    memo[node_id] = "cycle"  # a cyclic graph never validates; this only stops the recursion
    node = prompt[node_id]
    parts: JSON = {}
    for name, value in node.get("inputs", {}).items():
        if _is_link(value) and isinstance(value[0], str) and value[0] in prompt:
            parts[name] = ["link", _signature(prompt, value[0], memo), value[1]]
        else:
            parts[name] = ["value", value]
    memo[node_id] = json.dumps([node.get("class_type"), parts], sort_keys=True, default=str)
    return memo[node_id]


def _render(latent: _Latent, index: int) -> Image.Image:
    """A deterministic picture for a sampled latent: seed, prompts and batch index decide it."""
    key = f"{latent.seed}|{index}|{latent.positive}|{latent.negative}".encode()
    digest = hashlib.sha256(key).digest()
    width, height = latent.width, latent.height
    image = Image.new("RGB", (width, height), (digest[0], digest[1], digest[2]))
    draw = ImageDraw.Draw(image)
    for k in range(4):
        b = digest[3 + 7 * k : 10 + 7 * k]
        x0, y0 = b[0] * width // 256, b[1] * height // 256
        x1, y1 = x0 + 1 + b[2] * width // 512, y0 + 1 + b[3] * height // 512
        draw.ellipse((x0, y0, x1, y1), fill=(b[4], b[5], b[6]))
    return image

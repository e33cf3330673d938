"""ComfyUI at COMFYUI_BASE_URL: submit a filled workflow, follow it, fetch its images.

The job is followed on the websocket (`/ws?clientId=`), opened before the prompt is sent so
no message is missed; when the socket drops, `/history/{prompt_id}` is polled instead (it
answers `{}` until the prompt is done). Outputs are read from history, which is authoritative,
and downloaded with `/view`. A job that is cancelled or runs out of time is stopped on the
server too: `/interrupt` for the running prompt and a queue delete for a waiting one
(upstream-protocols.md, sections 2 and 6).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson

from sparklio.core.config import Settings
from sparklio.exceptions import ProviderError
from sparklio.services.gateway.http import HTTPProvider
from sparklio.services.gateway.providers import EndpointDefaults, ProviderHealth
from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse, Progress

POLL_INTERVAL = 0.5
STOP_TIMEOUT = 5.0


class ComfyUIProvider(HTTPProvider, MediaProvider):
    """The team's ComfyUI: one prompt per job, progress from its websocket."""

    @classmethod
    def defaults(cls, settings: Settings) -> EndpointDefaults:
        return EndpointDefaults(base_url=settings.comfyui_base_url,
                                timeout=settings.comfyui_timeout,
                                max_concurrency=settings.comfyui_max_concurrency)  # fmt: skip

    @property
    def vendor(self) -> str:
        return "comfyui"

    def error_message(self, status: int, body: Any, model: str) -> str:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return describe_rejection(body, self.base_url)
        return super().error_message(status, body, model)

    def is_retryable(self, status: int, body: Any) -> bool:
        # a rejected graph (400) stays rejected, and so does a render that failed (500); a
        # proxy or a restarting server in front of ComfyUI (502-504) is worth another try
        return status in (502, 503, 504)

    async def generate(
        self,
        prompt: str,
        role: str,
        task: str,
        options: dict[str, Any],
        progress: Progress,
    ) -> MediaProviderResponse:
        model = str(options.get("model", "comfyui"))
        started = time.perf_counter()
        client_id = uuid.uuid4().hex
        socket = await self._connect(client_id)
        prompt_id: str | None = None
        try:
            prompt_id = await self._submit(options["graph"], client_id, model)
            progress(0.0, "queued on ComfyUI")
            via = await self._follow(socket, prompt_id, model, progress) if socket else "polling"
            if via == "polling":
                await self._poll(prompt_id, model)
            entry = await self._history(prompt_id, model)
            self._raise_if_failed(entry, model)
            images = [
                img
                for out in (entry.get("outputs") or {}).values()
                for img in out.get("images", [])
                if img.get("type", "output") == "output"
            ]
            outputs = [await self.assets.save(await self._view(img, model)) for img in images]
        except BaseException:
            if prompt_id is not None:
                await asyncio.shield(self._stop(prompt_id))
            raise
        finally:
            if socket is not None:
                await socket.close()
        progress(1.0, "done")
        return MediaProviderResponse(
            provider=self.name,
            model=model,
            outputs=outputs,
            usage={"images": len(outputs), "seconds": round(time.perf_counter() - started, 2)},
            meta={
                "prompt_id": prompt_id,
                "workflow": options.get("workflow"),
                "followed": via,
                "seed": options.get("seed"),
            },
        )

    async def _connect(self, client_id: str) -> aiohttp.ClientWebSocketResponse | None:
        """The progress socket, or None (then the job is followed by polling history)."""
        url = f"{self.base_url}/ws?clientId={client_id}"
        try:
            return await self.session().ws_connect(url, heartbeat=30, max_msg_size=0)
        except (aiohttp.ClientError, OSError):
            return None

    async def _submit(self, graph: dict[str, Any], client_id: str, model: str) -> str:
        body = {"prompt": graph, "client_id": client_id}
        async with self.request("POST", f"{self.base_url}/prompt", json=body, model=model) as resp:
            answer = await self.read_json(resp, model)
        prompt_id = str(answer["prompt_id"])
        if answer.get("node_errors"):
            # ComfyUI dropped the outputs that failed validation and queued the rest: an
            # image the caller asked for would be missing without a word
            await self._stop(prompt_id)
            raise self._error(model, describe_rejection(answer, self.base_url), "http_400")
        return prompt_id

    async def _follow(
        self,
        socket: aiohttp.ClientWebSocketResponse,
        prompt_id: str,
        model: str,
        progress: Progress,
    ) -> str:
        """Read the socket until the prompt is done: 'websocket', or 'polling' if it dropped."""
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue  # binary frames are previews
            event = orjson.loads(message.data)
            data = event.get("data") or {}
            if data.get("prompt_id") != prompt_id:
                continue  # status broadcasts, other clients' prompts
            kind = event.get("type")
            if kind == "progress" and data.get("max"):
                progress(
                    0.05 + 0.9 * data["value"] / data["max"],
                    f"node {data.get('node')}: step {data['value']}/{data['max']}",
                )
            elif kind == "execution_error":
                raise self._error(model, describe_execution_error(data), "execution_error")
            elif kind == "execution_interrupted":
                raise self._error(
                    model,
                    f"the prompt was interrupted at node {data.get('node_id')}",
                    "interrupted",
                )
            elif kind == "executing" and data.get("node") is None:
                return "websocket"  # the done marker, sent after history is written
        return "polling"  # the socket closed before the done marker

    async def _poll(self, prompt_id: str, model: str) -> None:
        """Wait until history has the prompt (it answers `{}` until then)."""
        # an HTTP endpoint to poll: there is no event to wait on once the socket is gone
        while not await self._history(prompt_id, model, required=False):  # noqa: ASYNC110
            await asyncio.sleep(POLL_INTERVAL)

    async def _history(self, prompt_id: str, model: str, *, required: bool = True) -> Any:
        url = f"{self.base_url}/history/{prompt_id}"
        async with self.request("GET", url, model=model) as resp:
            history = await self.read_json(resp, model)
        entry = history.get(prompt_id) if isinstance(history, dict) else None
        if entry is None and required:
            raise self._error(
                model, f"ComfyUI has no history for prompt {prompt_id}", "stream_error"
            )
        return entry

    def _raise_if_failed(self, entry: dict[str, Any], model: str) -> None:
        status = entry.get("status") or {}
        if status.get("status_str", "success") == "success":
            return
        for name, data in status.get("messages") or []:
            if name == "execution_error":
                raise self._error(model, describe_execution_error(data), "execution_error")
            if name == "execution_interrupted":
                raise self._error(model, "the prompt was interrupted", "interrupted")
        raise self._error(
            model, f"the prompt ended with status {status.get('status_str')!r}", "execution_error"
        )

    async def _view(self, image: dict[str, Any], model: str) -> bytes:
        params = {k: str(image.get(k, "")) for k in ("filename", "subfolder", "type")}
        async with self.request("GET", f"{self.base_url}/view", params=params, model=model) as resp:
            return await resp.read()

    async def _stop(self, prompt_id: str) -> None:
        """Stop the prompt on the server: interrupt it if it runs, drop it if it waits.

        Both are harmless when they do not apply: /interrupt with a prompt_id only stops that
        prompt, and deleting an id that is not queued does nothing.
        """
        session = self.session()
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                async with session.post(
                    f"{self.base_url}/interrupt", json={"prompt_id": prompt_id}
                ):
                    pass
                async with session.post(f"{self.base_url}/queue", json={"delete": [prompt_id]}):
                    pass
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass  # the server is gone: nothing of ours runs there any more

    def _error(self, model: str, reason: str, outcome: str) -> ProviderError:
        return ProviderError(
            f"{self.where(model)}: {reason}", provider=self.name, model=model, outcome=outcome
        )

    async def health(self, models: list[str]) -> ProviderHealth:
        model = models[0] if models else "-"
        async with self.request("GET", f"{self.base_url}/system_stats", model=model) as resp:
            stats = await self.read_json(resp, model)
        async with self.request("GET", f"{self.base_url}/models/checkpoints", model=model) as resp:
            installed = set(await self.read_json(resp, model))
        device = (stats.get("devices") or [{}])[0]
        present = {m: m in installed for m in models if m.endswith((".safetensors", ".ckpt"))}
        missing = [m for m, ok in present.items() if not ok]
        message = f"{device.get('type', '?')} {device.get('name', '')}".strip()
        if missing:
            message += f"; checkpoints not installed: {', '.join(missing)}"
        return ProviderHealth(available=True, message=message, models=present)


def describe_rejection(body: dict[str, Any], base_url: str) -> str:
    """A ComfyUI 400 envelope in one sentence that names the node, the input and the problem."""
    problems = []
    for node_id, node in (body.get("node_errors") or {}).items():
        for error in node.get("errors", []):
            extra = error.get("extra_info") or {}
            name = extra.get("input_name")
            if error.get("type") == "value_not_in_list" and name == "ckpt_name":
                problems.append(
                    f"checkpoint {extra.get('received_value')!r} is not installed on "
                    f"the ComfyUI server at {base_url}"
                )
                continue
            where = f"node {node_id} ({node.get('class_type')})" + (
                f" input {name}" if name else ""
            )
            problems.append(f"{where}: {error.get('message')} ({error.get('details')})")
    if problems:
        return "; ".join(problems)
    error = body.get("error") or {}
    return f"ComfyUI rejected the workflow: {error.get('message')} ({error.get('details')})"


def describe_execution_error(data: dict[str, Any]) -> str:
    return (
        f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
        f"{data.get('exception_type')}: {data.get('exception_message')}"
    )

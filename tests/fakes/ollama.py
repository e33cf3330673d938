"""A fake Ollama server: /api/chat (NDJSON or single JSON), /api/tags, /api/version, /.

Shapes follow the protocol reference, upstream-protocols.md section 1 ("Ref §1").
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aiohttp import web

from tests.fakes.base import (
    Answer,
    FakeServer,
    Recorded,
    Reply,
    Status,
    StreamError,
    rfc3339_now,
    split_text,
)

NDJSON = "application/x-ndjson"

# Ref §1 errors table: ErrMaxQueue has two spaces after the full stop.
BUSY = "server busy, please try again.  maximum pending requests exceeded"
RUNNER_EOF = "an error was encountered while running the model: unexpected EOF"

_DEFAULT_MESSAGES = {
    400: "invalid request",
    499: "request canceled",
    500: "llama runner process has terminated: exit status 2",
    502: "bad gateway",
    503: BUSY,
}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _normalise(name: str) -> str:
    """Ollama treats an untagged name as `:latest`."""
    return name if ":" in name else f"{name}:latest"


class FakeOllama(FakeServer):
    """Ollama's native API; `models` are the models it has pulled."""

    model_path = "/api/chat"

    def __init__(self, models: list[str] | None = None) -> None:
        self.models = list(models) if models is not None else ["qwen2.5:7b", "qwen2.5:14b"]
        super().__init__()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/", self._root)
        router.add_get("/api/version", self._version)
        router.add_get("/api/tags", self._tags)

    # -- plain routes ----------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.5.1"})

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._tag(name) for name in self.models]})

    @staticmethod
    def _tag(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T12:00:00.000000+00:00",
            "size": 4683087332,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "qwen2",
                "families": ["qwen2"],
                "parameter_size": "7.6B",
                "quantization_level": "Q4_K_M",
            },
        }

    # -- /api/chat -------------------------------------------------------------------

    @staticmethod
    def _error(code: int, message: str) -> Answer:
        return Answer.json(code, {"error": message})

    @staticmethod
    def _streaming(rec: Recorded) -> bool:
        return rec.body.get("stream") is not False  # ref §1: streaming is on by default

    def reject(self, rec: Recorded) -> Answer | None:
        body = rec.body
        if rec.bad_json:
            return self._error(400, "invalid character looking for beginning of value")
        if not isinstance(body, dict) or not body.get("model"):
            return self._error(400, "model is required")
        model = str(body["model"])
        if _normalise(model) not in {_normalise(m) for m in self.models}:
            return self._error(404, f"model '{model}' not found")
        fmt = body.get("format")
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            # Ref §1 format parsing: the status code is unconfirmed ([?] probably 500).
            msg = f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema'
            return self._error(500, msg + " object")
        if not body.get("messages"):
            # Ref §1 model loading: chat with no messages only loads (or unloads) the model.
            reason = "unload" if body.get("keep_alive") == 0 else "load"
            message = {"role": "assistant", "content": ""}
            line = self._head(model) | {"message": message, "done": True, "done_reason": reason}
            return Answer.json(200, line)
        return None

    @staticmethod
    def _head(model: str) -> dict[str, Any]:
        return {"model": model, "created_at": rfc3339_now()}

    @staticmethod
    def _metrics(reply: Reply, elapsed: float) -> dict[str, Any]:
        """Integer nanosecond durations; `load_duration` covers the reply's delay."""
        load = 5_000_000 + int(elapsed * 1e9)
        prompt_eval = 1_000_000 * max(1, reply.prompt_tokens)
        eval_ = 20_000_000 * max(1, reply.completion_tokens)
        return {
            "total_duration": load + prompt_eval + eval_ + 1_000_000,
            "load_duration": load,
            "prompt_eval_count": reply.prompt_tokens,
            "prompt_eval_duration": prompt_eval,
            "eval_count": reply.completion_tokens,
            "eval_duration": eval_,
        }

    def render_reply(self, rec: Recorded, reply: Reply, elapsed: float) -> Answer:
        head = self._head(str(rec.body["model"]))
        final = {"done": True, "done_reason": reply.finish or "stop"}
        final |= self._metrics(reply, elapsed)
        if not self._streaming(rec):
            message = {"role": "assistant", "content": reply.text()}
            return Answer.json(200, head | {"message": message} | final)
        lines = [
            _line(head | {"message": {"role": "assistant", "content": part}, "done": False})
            for part in split_text(reply.text(), reply.chunks)
        ]
        # Ref §1 streaming: the final line's message.content is "".
        lines.append(_line(head | {"message": {"role": "assistant", "content": ""}} | final))
        return Answer(200, lines, NDJSON, streamed=True)

    def render_status(self, rec: Recorded, status: Status) -> Answer:
        message = status.message
        if message is None:
            if status.code == 404:
                message = f"model '{rec.body['model']}' not found"
            else:
                message = _DEFAULT_MESSAGES.get(status.code, f"error {status.code}")
        answer = self._error(status.code, message)
        answer.headers.update(status.headers)
        return answer

    def render_stream_error(self, rec: Recorded, error: StreamError) -> Answer:
        if not self._streaming(rec):
            # Ref §1: an error before any bytes are written gets a real status and JSON body.
            return self._error(500, error.message or RUNNER_EOF)
        head = self._head(str(rec.body["model"]))
        # Split into more parts than are sent, so the content is visibly incomplete.
        fragments = split_text(Reply().text(), error.after_chunks + 2)[: error.after_chunks]
        lines = [
            _line(head | {"message": {"role": "assistant", "content": part}, "done": False})
            for part in fragments
        ]
        # Ref §1: mid-stream errors keep status 200 and end with an {"error": ...} line.
        lines.append(_line({"error": error.message or RUNNER_EOF}))
        return Answer(200, lines, NDJSON, streamed=True)

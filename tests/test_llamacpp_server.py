"""The OpenAI provider against a real OpenAI-compatible server: llama-cpp-python's own
(`python -m llama_cpp.server`) serving SmolLM2, which lacks response_format json_schema.

Checked by hand (llama-cpp-python 0.3.36): it answers json_schema with a 500 whose body names
`response_format` (tests/fakes/openai.py quotes it), and honours a `schema` sent with
json_object as a grammar. The server is started once for the module; every budget here is
generous, for a loaded 2-core machine.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from tests.live import CALL, live_gateway

try:
    import llama_cpp.server.app  # noqa: F401  (the `server` extra: uvicorn, sse-starlette...)
except ImportError:  # pragma: no cover - CI installs the local extra, so this must not skip there
    if os.environ.get("CI"):
        raise
    pytest.skip("llama-cpp-python's server is not installed: pip install -e '.[local]'",
                allow_module_level=True)  # fmt: skip

from sparklio.services.llm.providers.llamacpp import _shipped_catalogue

# loading the model and compiling a schema's grammar can take tens of seconds under load
pytestmark = pytest.mark.timeout(300)

MODEL = "smollm2-135m-instruct"
#: small enough for a 135M model under a grammar, with bounds that keep the answer short
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "headline": {"type": "string", "maxLength": 40},
        "hashtags": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "minItems": 1,
            "maxItems": 2,
        },
    },
    "required": ["headline", "hashtags"],
}


@dataclass
class Server:
    url: str
    log: Path

    def answers(self, status: int) -> int:
        """How many chat completions the server has answered with `status` (its access log,
        written as each response starts, so before the client has it)."""
        line = f'"POST /v1/chat/completions HTTP/1.1" {status} '
        return self.log.read_text(errors="replace").count(line)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = _shipped_catalogue().models[MODEL].locate()
    port = _free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    # one thread: on a busy machine llama.cpp's threads mostly wait for each other
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model),
               "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "2048", "--n_threads", "1"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited {process.returncode}:\n"
                            + log.read_text(errors="replace")[-2000:])  # fmt: skip
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 180 s")
            time.sleep(0.5)
        yield Server(url, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def routes() -> str:
    return f"""
    default:
      - {{provider: openai, model: {MODEL}, options: {{temperature: 0, max_tokens: 96}}}}
    """


async def test_json_mode_with_a_schema_on_a_server_without_json_schema(
    tmp_path: Path, server: Server
) -> None:
    refused_before = server.answers(500)
    call = {**CALL, "output_schema": SCHEMA}
    async with live_gateway(tmp_path, routes(), openai_base_url=f"{server.url}/v1",
                            openai_timeout=120, llm_deadline=280) as (_, http):  # fmt: skip
        first = await http.post("/api/v1/llm/generate", json=call)
        refused_by_first = server.answers(500) - refused_before
        second = await http.post("/api/v1/llm/generate", json=call)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    for response in (first, second):
        body = response.json()
        assert list(Draft202012Validator(SCHEMA).iter_errors(body["output"])) == []
        # one attempt: the refusal and the fallback happened inside it, no retry spent
        assert [(a["provider"], a["outcome"]) for a in body["meta"]["attempts"]] == [
            ("openai", "ok")
        ]
        assert body["meta"]["response_format"] == "json_object"
    assert refused_by_first == 1  # the real server's 500 for json_schema, once...
    assert server.answers(500) - refused_before == 1  # ...and the second call did not ask

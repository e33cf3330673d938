"""The Ollama provider against a faithful fake: what it sends, what it makes of the answer."""

from __future__ import annotations

from pathlib import Path

from tests.fakes import FakeOllama, Reply, Status, StreamError
from tests.live import CALL, COPY_SCHEMA, GOOD_COPY, live_gateway

ROUTES = """
default:
  - {provider: ollama, model: "qwen2.5:7b", options: {temperature: 0.2, num_ctx: 8192}}
"""


async def test_json_mode_sends_schema_format_keep_alive_and_options(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        fake.then(Reply(GOOD_COPY, prompt_tokens=31, completion_tokens=17))
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url,
                                ollama_keep_alive="45m") as (_, http):  # fmt: skip
            response = await http.post("/api/v1/llm/generate", json={
                **CALL, "options": {"max_tokens": 256, "seed": 7, "top_p": 0.9,
                                    "stop": ["###"], "temperature": 0.5}})  # fmt: skip
    assert response.status_code == 200, response.text
    sent = fake.model_calls()[0].body
    assert sent["model"] == "qwen2.5:7b"  # from the routing file
    assert sent["format"] == COPY_SCHEMA
    assert sent["keep_alive"] == "45m"
    assert sent["stream"] is True
    assert sent["options"] == {
        "temperature": 0.5,  # the caller's option beats the route's
        "num_ctx": 8192,  # the route's own Ollama option passes through
        "num_predict": 256,  # max_tokens, in Ollama's words
        "seed": 7,
        "top_p": 0.9,
        "stop": ["###"],
    }
    prompt = sent["messages"][-1]["content"]
    assert sent["messages"][-1]["role"] == "user"
    assert "JSON" in prompt and "Dawon green tea" in prompt  # asked for JSON in words too

    body = response.json()
    assert body["provider"] == "ollama" and body["model"] == "qwen2.5:7b"
    assert body["output"] == GOOD_COPY
    assert body["usage"] == {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48}
    meta = body["meta"]
    assert meta["done_reason"] == "stop"
    assert meta["eval_ms"] > 0 and meta["load_ms"] is not None and meta["tokens_per_s"] > 0


async def test_json_mode_without_schema_asks_for_json_and_text_mode_sends_no_format(
    tmp_path: Path,
) -> None:
    async with FakeOllama() as fake:
        fake.then(Reply({"idea": "calm"}), Reply("A calm cup for a busy day."))
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url) as (_, http):
            plain = {"role": "brief", "task": "analyze", "payload": {"brief": "tea"}}
            json_answer = await http.post("/api/v1/llm/generate", json=plain)
            text_answer = await http.post("/api/v1/llm/generate", json={**plain, "mode": "text"})
    first, second = (c.body for c in fake.model_calls())
    assert first["format"] == "json"
    assert "format" not in second
    assert json_answer.json()["output"] == {"idea": "calm"}
    assert text_answer.json()["output"] == {"text": "A calm cup for a busy day."}


async def test_an_error_line_inside_a_200_stream_is_an_error_not_an_empty_answer(
    tmp_path: Path,
) -> None:
    async with FakeOllama() as fake:
        fake.default = StreamError("an error was encountered while running the model")
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url) as (_, http):
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 502
    error = response.json()["error"]
    assert "an error was encountered while running the model" in error["message"]
    outcomes = [a["outcome"] for a in error["details"]["attempts"]]
    assert outcomes == ["stream_error"] * 3  # retried twice: a runner crash can be transient


async def test_a_stream_error_then_success_is_retried(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        fake.then(StreamError(), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url) as (_, http):
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    assert [a["outcome"] for a in response.json()["meta"]["attempts"]] == ["stream_error", "ok"]


async def test_done_reason_length_is_truncated_in_json_and_flagged_in_text(
    tmp_path: Path,
) -> None:
    async with FakeOllama() as fake:
        fake.then(Reply('{"headline": "Calm', finish="length"),
                  Reply("A calm cup for", finish="length"))  # fmt: skip
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url) as (_, http):
            cut_json = await http.post("/api/v1/llm/generate", json=CALL)
            cut_text = await http.post("/api/v1/llm/generate", json={**CALL, "mode": "text"})
    assert cut_json.status_code == 502
    error = cut_json.json()["error"]
    assert error["details"]["outcome"] == "truncated"
    assert "done_reason: length" in error["message"] and "max_tokens" in error["message"]
    assert cut_text.status_code == 200
    assert cut_text.json()["output"] == {"text": "A calm cup for"}
    assert cut_text.json()["meta"]["truncated"] is True


async def test_unknown_model_says_ollama_pull_and_is_not_retried(tmp_path: Path) -> None:
    routes = 'default:\n  - {provider: ollama, model: "llama9:70b"}\n'
    async with (
        FakeOllama(models=["qwen2.5:7b"]) as fake,
        live_gateway(tmp_path, routes, ollama_base_url=fake.url) as (_, http),
    ):
        response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 502
    error = response.json()["error"]
    assert "ollama pull llama9:70b" in error["message"]
    assert error["details"]["outcome"] == "http_404"
    assert fake.calls == 1


async def test_busy_503_is_retried(tmp_path: Path) -> None:
    async with FakeOllama() as fake:
        fake.then(Status(503), Reply(GOOD_COPY))
        async with live_gateway(tmp_path, ROUTES, ollama_base_url=fake.url) as (_, http):
            response = await http.post("/api/v1/llm/generate", json=CALL)
    assert response.status_code == 200
    assert [a["outcome"] for a in response.json()["meta"]["attempts"]] == ["http_503", "ok"]


async def test_health_reports_which_routed_models_are_pulled(tmp_path: Path) -> None:
    routes = """
    default:
      - {provider: ollama, model: "qwen2.5:7b"}
      - {provider: ollama, model: "llama9:70b"}
    """
    async with (
        FakeOllama(models=["qwen2.5:7b"]) as fake,
        live_gateway(tmp_path, routes, ollama_base_url=fake.url) as (_, http),
    ):
        response = await http.get("/api/v1/llm/providers")
    ollama = next(p for p in response.json()["providers"] if p["name"] == "ollama")
    assert ollama["available"] is True
    assert ollama["models"] == {"qwen2.5:7b": True, "llama9:70b": False}
    assert "ollama pull" in ollama["message"]


async def test_health_of_a_stopped_ollama_says_so(tmp_path: Path) -> None:
    from tests.fakes import refused_url

    routes = 'default:\n  - {provider: ollama, model: "qwen2.5:7b"}\n'
    async with live_gateway(tmp_path, routes, ollama_base_url=refused_url()) as (_, http):
        response = await http.get("/api/v1/llm/providers")
    ollama = response.json()["providers"][0]
    assert ollama["available"] is False
    assert "connection refused" in ollama["message"]

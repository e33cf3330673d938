"""The mock provider: schema-valid, deterministic, made of the payload's words."""

from __future__ import annotations

import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from sparklio.services.llm.providers.base import LLMProviderResponse
from sparklio.services.llm.providers.mock import MockProvider
from tests.conftest import make_settings
from tests.schemas import REALISTIC, Brief

DAWON = {
    "brief": "Launch Dawon green tea for office workers who want a calm afternoon.",
    "product": "Dawon green tea",
    "audience": "office workers in Seoul",
    "channels": ["instagram", "naver_search"],
}
KOREAN = {
    "brief": "바쁜 직장인을 위한 다원 녹차 출시 캠페인",
    "product": "다원 녹차",
    "audience": "서울의 직장인",
}


async def ask(
    payload: dict[str, Any],
    schema: dict[str, Any] | None,
    mode: str = "json",
    role: str = "copywriter",
    task: str = "channel_copy",
) -> LLMProviderResponse:
    provider = MockProvider(make_settings())
    options: dict[str, Any] = {"model": "mock-v1", "payload": payload}
    if schema is not None:
        options["schema"] = schema
    return await provider.generate("prompt text", role, task, mode, options)  # type: ignore[arg-type]


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@pytest.mark.parametrize("name", sorted(REALISTIC))
async def test_every_output_validates_against_its_schema(name: str) -> None:
    schema = REALISTIC[name]
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    for payload in (DAWON, KOREAN, {}, {"product": "Aurora running shoes", "n": 3}):
        response = await ask(payload, schema)
        errors = [e.message for e in validator.iter_errors(response.output)]
        assert errors == [], (name, payload, response.output)


async def test_pydantic_models_accept_the_output() -> None:
    response = await ask(DAWON, REALISTIC["brief"])
    brief = Brief.model_validate(response.output)
    assert brief.product == "Dawon green tea"
    assert brief.language == "en"
    assert set(brief.channels) <= {"instagram", "naver_search", "youtube", "kakao", "email"}


async def test_same_input_gives_the_same_output() -> None:
    first = await ask(DAWON, REALISTIC["strategy"])
    second = await ask(DAWON, REALISTIC["strategy"])
    assert first.output == second.output


async def test_different_payload_or_task_gives_different_output() -> None:
    base = await ask(DAWON, REALISTIC["copy"])
    other_payload = await ask({**DAWON, "audience": "students"}, REALISTIC["copy"])
    other_task = await ask(DAWON, REALISTIC["copy"], task="revise")
    assert base.output != other_payload.output
    assert base.output != other_task.output


async def test_text_is_built_from_the_payload_words() -> None:
    response = await ask(DAWON, REALISTIC["copy"])
    text = " ".join(strings(response.output))
    assert "Dawon green tea" in text
    assert re.search(r"office|workers|calm|afternoon|Seoul", text)


async def test_korean_payload_yields_korean_text() -> None:
    response = await ask(KOREAN, REALISTIC["copy"])
    copy = response.output["copies"][0]
    assert "다원 녹차" in copy["body"]
    assert re.search(r"[가-힣]", copy["headline"])
    brief = await ask(KOREAN, REALISTIC["brief"])
    assert brief.output["language"] == "ko"


async def test_text_mode_returns_a_paragraph_about_the_payload() -> None:
    response = await ask(DAWON, None, mode="text")
    assert list(response.output) == ["text"]
    text = response.output["text"]
    assert "Dawon green tea" in text
    assert text.count(".") >= 3


async def test_usage_and_meta_are_filled() -> None:
    response = await ask(DAWON, REALISTIC["review"])
    assert response.provider == "mock"
    assert response.model == "mock-v1"
    assert response.meta["mock"] is True
    usage = response.usage
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_length_limits_are_kept_with_long_payload_words() -> None:
    payload = {"product": "Extraordinarily Long Named Premium Organic Jeju Green Tea Collection"}
    response = await ask(payload, REALISTIC["copy"])
    for copy in response.output["copies"]:
        assert len(copy["headline"]) <= 30
        assert 40 <= len(copy["body"]) <= 2200


async def test_one_provider_answers_a_request_alike_however_busy_it_was() -> None:
    """The provider keeps each payload's words and each schema's folded nodes between calls;
    what it kept (or evicted) never changes an answer."""
    busy = MockProvider(make_settings())
    options: dict[str, Any] = {"payload": DAWON, "schema": REALISTIC["copy"], "seed": 1}
    first = await busy.generate("p", "copywriter", "channel_copy", "json", dict(options))
    text = await busy.generate("p", "copywriter", "channel_copy", "text", dict(options))
    for n in range(80):  # more payloads and schemas than it keeps
        other = {**options, "payload": {"product": f"Tea {n}", "audience": f"group {n}"}}
        if n % 2:
            other["schema"] = {**REALISTIC["copy"], "title": f"copy {n}"}
        await busy.generate("p", "copywriter", "channel_copy", "json", other)
    again = await busy.generate("p", "copywriter", "channel_copy", "json", dict(options))
    text_again = await busy.generate("p", "copywriter", "channel_copy", "text", dict(options))
    fresh = await MockProvider(make_settings()).generate(
        "p", "copywriter", "channel_copy", "json", dict(options)
    )
    assert again.output == first.output == fresh.output
    assert text_again.output == text.output
    assert "Dawon green tea" in text.output["text"]

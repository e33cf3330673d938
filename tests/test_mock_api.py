"""The mock through POST /api/v1/llm/generate: cycles end, huge minimums are 422s, and a
heavy schema is built off the event loop (only public APIs here, so this file also runs
against older code)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.schema_corpus import valid

PAYLOAD = {"product": "Dawon green tea", "brief": "A calm afternoon for office workers."}
SELF_REF_IN_ANYOF = {
    "type": "object",
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "child": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "required": ["name", "child"],
        }
    },
    "properties": {"tree": {"$ref": "#/$defs/node"}},
    "required": ["tree"],
}


def _call(schema: dict[str, Any]) -> dict[str, Any]:
    return {"role": "copywriter", "task": "channel_copy", "payload": PAYLOAD,
            "output_schema": schema}  # fmt: skip


@pytest.mark.timeout(60)
async def test_api_answers_a_self_reference_inside_anyof(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/llm/generate", json=_call(SELF_REF_IN_ANYOF))
    assert response.status_code == 200, response.text
    assert valid(SELF_REF_IN_ANYOF, response.json()["output"])


async def test_api_gives_a_422_for_a_billion_items(http: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"tags": {"type": "array", "minItems": 10**9,
              "items": {"type": "string"}}}, "required": ["tags"]}  # fmt: skip
    response = await http.post("/api/v1/llm/generate", json=_call(schema))
    assert response.status_code == 422, response.text
    assert "minItems" in response.text and "/properties/tags" in response.text


async def test_api_gives_a_422_for_an_unsatisfiable_schema(http: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {"x": {"not": {}}}, "required": ["x"]}
    response = await http.post("/api/v1/llm/generate", json=_call(schema))
    assert response.status_code == 422, response.text
    assert "/properties/x" in response.text


@pytest.mark.timeout(120)
async def test_health_keeps_answering_while_a_heavy_schema_is_built(
    http: httpx.AsyncClient,
) -> None:
    """5,000 distinct strings take about a second of work: built off the event loop, /health
    answers many times while the call runs (counted, not timed); on the loop, hardly at all."""
    rows = {"type": "array", "minItems": 5000, "uniqueItems": True, "items": {"type": "string"}}
    schema = {"type": "object", "properties": {"rows": rows}, "required": ["rows"]}
    call = asyncio.create_task(http.post("/api/v1/llm/generate", json=_call(schema)))
    polls = 0
    while not call.done():
        health = await http.get("/health")
        assert health.status_code == 200
        polls += not call.done()
        await asyncio.sleep(0)
    response = await call
    assert polls >= 5
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["output"]["rows"]) == 5000


@pytest.mark.timeout(60)
async def test_api_answers_forty_thousand_items(http: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "minItems": 40000, "items": {"type": "string"}}},
        "required": ["tags"],
    }
    response = await http.post("/api/v1/llm/generate", json=_call(schema))
    assert response.status_code == 200, response.text
    assert len(response.json()["output"]["tags"]) == 40000


async def test_api_gives_a_422_for_a_billion_characters(http: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"bio": {"type": "string", "minLength": 10**9}},
        "required": ["bio"],
    }
    response = await http.post("/api/v1/llm/generate", json=_call(schema))
    assert response.status_code == 422, response.text
    assert "minLength" in response.text and "/properties/bio" in response.text

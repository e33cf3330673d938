"""Input a careful attacker (or a careless script) sends: never a 500, always a 4xx that names
the field and says what to send instead; a bug is still a 500 with a request id, logged once."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from sparklio.api.deps import get_gateway
from tests.conftest import client_for

CALL: dict[str, Any] = {"role": "copywriter", "task": "channel_copy",
                        "payload": {"product": "Dawon green tea"}}  # fmt: skip
IMAGE = {"role": "vision_generator", "task": "image", "prompt": "A cup of tea",
         "width": 64, "height": 64}  # fmt: skip
HUGE = 10**30


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({**CALL, "payload": {"a": {"b": HUGE}}}, "payload.a.b"),
        ({**CALL, "payload": {"list": [1, 2, -HUGE]}}, "payload.list[2]"),
        (
            {**CALL, "output_schema": {"properties": {"n": {"maximum": HUGE}}}},
            "output_schema.properties.n.maximum",
        ),
        ({**CALL, "options": {"provider_extra": HUGE}}, "options.provider_extra"),
    ],
)
async def test_an_integer_beyond_64_bits_is_a_422_naming_its_path(
    http: httpx.AsyncClient, body: dict[str, Any], where: str
) -> None:
    response = await http.post("/api/v1/llm/generate", json=body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["message"].startswith(f"{where}: integer ")
    assert "64-bit" in error["message"] and "send it as a string" in error["message"]
    assert error["details"] == [{"field": where, "problem": error["message"][len(where) + 2 :]}]


async def test_an_integer_of_hundreds_of_digits_is_described_not_printed(
    http: httpx.AsyncClient,
) -> None:
    body = b'{"role": "copywriter", "task": "channel_copy", "payload": {"n": 1' + b"0" * 400 + b"}}"
    response = await http.post(
        "/api/v1/llm/generate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "payload.n: integer of about 401 digits is outside" in error_of(response)["message"]


async def test_the_largest_64_bit_integers_still_go_through(http: httpx.AsyncClient) -> None:
    body = {**CALL, "payload": {"big": 2**64 - 1, "small": -(2**63)}, "mode": "text"}
    response = await http.post("/api/v1/llm/generate", json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("number", [b"1e999", b"-Infinity", b"NaN"])
async def test_a_number_json_cannot_write_back_is_a_422(
    http: httpx.AsyncClient, number: bytes
) -> None:
    body = b'{"role": "copywriter", "task": "channel_copy", "payload": {"x": [%s]}}' % number
    response = await http.post(
        "/api/v1/llm/generate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("payload.x[0]: number ")


async def test_the_same_words_inside_strings_are_just_text(http: httpx.AsyncClient) -> None:
    payload = {"note": "NaN, Infinity and 1e999 are words here", "n": 1.5e300}
    response = await http.post("/api/v1/llm/generate", json={**CALL, "payload": payload})
    assert response.status_code == 200, response.text


async def test_a_media_option_json_cannot_write_back_is_a_422(http: httpx.AsyncClient) -> None:
    body = (b'{"role": "vision_generator", "task": "image", "prompt": "tea", '
            b'"options": {"strength": -Infinity}}')  # fmt: skip
    response = await http.post(
        "/api/v1/media/generate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("options.strength: number -inf ")


@pytest.mark.parametrize(
    ("options", "where"),
    [
        (b'{"style": ["ok", "bad \\ud800"]}', "options.style[1]"),
        (b'{"k\\udc00": 1}', "options.k\\udc00"),
    ],
)
async def test_a_lone_surrogate_in_media_options_is_a_422_naming_where(
    http: httpx.AsyncClient, options: bytes, where: str
) -> None:
    # FastAPI reads this body with Python's json, which takes "\ud800"; orjson cannot write it
    body = b'{"role": "vision_generator", "task": "image", "prompt": "tea", "options": %s}' % (
        options
    )
    response = await http.post(
        "/api/v1/media/generate", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith(f"{where}: text with a lone UTF-16 surrogate")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"timeout": "abc"}, ["options.timeout", "number of seconds", "'abc'"]),
        ({"timeout": -5}, ["options.timeout", "above 0", "-5"]),
        ({"timeout": 1e300}, ["options.timeout", "at most 300", "LLM_DEADLINE"]),
        ({"timeout": True}, ["options.timeout"]),
        ({"temperature": "hot"}, ["options.temperature", "from 0 to 2"]),
        ({"max_tokens": 2.5}, ["options.max_tokens", "whole number"]),
        ({"seed": {"a": 1}}, ["options.seed", "whole number"]),
        ({"stop": [1, 2]}, ["options.stop", "list of strings"]),
    ],
)
async def test_a_known_option_of_the_wrong_type_is_a_422_naming_it(
    http: httpx.AsyncClient, options: dict[str, Any], words: list[str]
) -> None:
    response = await http.post("/api/v1/llm/generate", json={**CALL, "options": options})
    assert response.status_code == 422, response.text
    message = error_of(response)["message"]
    for word in words:
        assert word in message


async def test_good_options_still_work(http: httpx.AsyncClient) -> None:
    options = {"timeout": 30, "temperature": 0.2, "max_tokens": 100, "seed": 7, "stop": ["\n"],
               "timeout_unknown_extra": "kept for the provider"}  # fmt: skip
    response = await http.post("/api/v1/llm/generate", json={**CALL, "options": options})
    assert response.status_code == 200, response.text


async def test_media_options_beyond_64_bits_are_a_422_and_no_job_is_made(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    response = await http.post("/api/v1/media/generate", json={**IMAGE, "options": {"n": HUGE}})
    assert response.status_code == 422, response.text
    assert error_of(response)["message"].startswith("options.n: integer ")
    assert app.state.services.media.jobs.active() == []


@pytest.mark.parametrize(
    "query",
    [
        "to=9999-12-31",
        "from=9999-12-31",  # the window's end (a day later) is past what a datetime holds
        "to=0001-01-01T00:00:00",  # the default start (a day earlier) is before year 1
        "from=0001-01-01T00:00:00%2B05:00&to=0002-01-01",  # year 0 in UTC
        "from=2024-01-01&to=9999-12-31T23:59:59-05:00",  # year 10000 in UTC
    ],
)
async def test_usage_at_the_ends_of_the_calendar_answers(
    http: httpx.AsyncClient, query: str
) -> None:
    response = await http.get(f"/api/v1/usage?{query}")
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        assert response.json()["total"]["calls"] == 0
    else:
        assert "from must be before to" in error_of(response)["message"]


async def test_usage_through_the_last_day_there_is_counts_todays_calls(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    assert (await http.post("/api/v1/llm/generate", json=CALL)).status_code == 200
    await app.state.services.call_log.flush()
    response = await http.get("/api/v1/usage?from=2000-01-01&to=9999-12-31")
    assert response.status_code == 200, response.text
    assert response.json()["total"]["calls"] == 1


async def test_a_bug_is_a_500_with_the_request_id_logged_once(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug in a dependency")

    app.dependency_overrides[get_gateway] = broken
    # ASGITransport re-raises what the app lets escape: this client would raise, not answer
    async with await client_for(app) as http:
        with caplog.at_level(logging.ERROR):
            response = await http.get("/api/v1/llm/routes", headers={"X-Request-ID": "bug-hunt-1"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["type"] == "internal_error"
    assert "bug-hunt-1" in error["message"]
    assert "a bug in a dependency" not in response.text  # the details stay in the log
    logged = [r for r in caplog.records if r.exc_info and "bug-hunt-1" in r.getMessage()]
    assert len(logged) == 1
    assert "a bug in a dependency" in str(logged[0].exc_info[1])  # type: ignore[index]


async def test_an_os_error_of_our_own_is_a_500_not_a_database_outage(app: FastAPI) -> None:
    async def disk_full() -> None:
        raise OSError(28, "No space left on device")

    app.dependency_overrides[get_gateway] = disk_full
    async with await client_for(app) as http:
        response = await http.get("/api/v1/llm/routes")
    assert response.status_code == 500
    assert error_of(response)["type"] == "internal_error"


@pytest.mark.parametrize(
    "path", ["/api/v1/auth/login", "/api/v1/auth/api-keys", "/api/v1/media/generate"]
)
async def test_a_body_that_is_not_utf8_is_a_422_like_any_bad_json(
    http: httpx.AsyncClient, path: str
) -> None:
    response = await http.post(
        path, content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text  # FastAPI's own answer was a 400
    error = error_of(response)
    assert error["type"] == "invalid_request"
    assert "not valid JSON" in error["message"] and "UTF-8" in error["message"]

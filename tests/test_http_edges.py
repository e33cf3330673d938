"""Small rules at the providers' edge: the spend guard, Retry-After, finding JSON in an answer."""

from __future__ import annotations

from email.utils import formatdate
from time import time

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sparklio.exceptions import ProviderError
from sparklio.services.gateway.http import is_loopback, retry_after
from sparklio.services.llm.providers.base import parse_json_object


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:11434", True),
        ("http://localhost:8000/v1", True),
        ("http://[::1]:8188", True),
        ("http://127.8.9.10", True),
        ("https://api.openai.com/v1", False),
        ("http://192.168.0.20:11434", False),  # the GPU desktop on the LAN is not this machine
        ("http://localhost.evil.example", False),
    ],
)
def test_spend_guard_knows_what_is_this_machine(url: str, local: bool) -> None:
    assert is_loopback(url) is local


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def test_retry_after_in_seconds_milliseconds_and_http_dates() -> None:
    assert retry_after(_headers(retry_after="3")) == 3.0
    assert retry_after(_headers(retry_after_ms="250", retry_after="9")) == 0.25
    in_four = retry_after(_headers(retry_after=formatdate(time() + 4, usegmt=True)))
    assert in_four is not None and 2.5 < in_four <= 4
    assert retry_after(_headers()) is None
    assert retry_after(_headers(retry_after="soon")) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1}',
        '```json\n{"a": 1}\n```',
        'Here is the JSON you asked for:\n{"a": 1}\nHope it helps!',
        '  \n{"a": 1}  ',
    ],
)
def test_json_is_found_in_fences_and_prose(text: str) -> None:
    assert parse_json_object(text, "ollama/m") == {"a": 1}


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "an empty answer"), ("[1, 2]", "a JSON list"), ('{"a": ', "not valid JSON")],
)
def test_unusable_answers_are_invalid_json_carrying_the_answer(text: str, reason: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_json_object(text, "ollama/m")
    assert info.value.outcome == "invalid_json"
    assert reason in info.value.message
    assert info.value.raw == text

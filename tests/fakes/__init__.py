"""Fake upstream LLM servers (Ollama, OpenAI, Anthropic) for gateway tests."""

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import (
    Behaviour,
    Cut,
    FakeServer,
    Recorded,
    Reply,
    Status,
    StreamError,
    refused_url,
)
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI

__all__ = [
    "Behaviour",
    "Cut",
    "FakeAnthropic",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "Recorded",
    "Reply",
    "Status",
    "StreamError",
    "refused_url",
]

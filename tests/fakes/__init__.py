"""Fake upstream LLM servers (Ollama, OpenAI, Anthropic) for gateway tests."""

from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.base import (
    Behaviour,
    Cut,
    FakeServer,
    Held,
    Recorded,
    Reply,
    Status,
    StreamError,
    refused_url,
)
from tests.fakes.comfyui import Delay, DropSocket, Fail, FakeComfyUI, Hold, Run, Stall
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI

__all__ = [
    "Behaviour",
    "Cut",
    "Delay",
    "DropSocket",
    "Fail",
    "FakeAnthropic",
    "FakeComfyUI",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "Held",
    "Hold",
    "Recorded",
    "Reply",
    "Run",
    "Stall",
    "Status",
    "StreamError",
    "refused_url",
]

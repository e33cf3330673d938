"""The media gateway's wire types: an image request, the job the API reports, its files."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sparklio.wire.llm import NAME_PATTERN

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
MIN_SIZE, MAX_SIZE, MAX_COUNT = 64, 4096, 8


class GenerateImageRequest(BaseModel):
    """One image request: who asks, what for, and what to draw."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "role": "vision_generator",
                    "task": "image",
                    "prompt": "A cup of Dawon green tea on an office desk, soft afternoon light",
                    "width": 768,
                    "height": 512,
                    "options": {"palette": ["#2E7D32", "#F5F5DC"]},
                }
            ]
        },
    )

    role: str = Field(pattern=NAME_PATTERN)
    task: str = Field(pattern=NAME_PATTERN)
    prompt: str = Field(min_length=1, max_length=10_000)
    negative_prompt: str = Field(default="", max_length=10_000)
    width: int | None = Field(default=None, ge=MIN_SIZE, le=MAX_SIZE)
    height: int | None = Field(default=None, ge=MIN_SIZE, le=MAX_SIZE)
    count: int = Field(default=1, ge=1, le=MAX_COUNT)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError(
                f"must be a multiple of 8 (image models work in 8-pixel blocks); "
                f"try {value - value % 8} or {value - value % 8 + 8}"
            )
        return value


class MediaRequest(BaseModel):
    """What the caller asked for."""

    role: str
    task: str
    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    count: int = 1
    seed: int | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class MediaAsset(BaseModel):
    """One generated file: what it is and where to download it."""

    id: str
    mime_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    url: str


class MediaJob(BaseModel):
    """One image job as the API reports it."""

    job_id: str
    status: JobStatus = "queued"
    progress: float = 0.0
    message: str = ""
    request: MediaRequest
    provider: str | None = None
    model: str | None = None
    rule: str | None = None
    assets: list[MediaAsset] = Field(default_factory=list)
    error: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


__all__ = [
    "FINISHED",
    "MAX_COUNT",
    "MAX_SIZE",
    "MIN_SIZE",
    "GenerateImageRequest",
    "JobStatus",
    "MediaAsset",
    "MediaJob",
    "MediaRequest",
]

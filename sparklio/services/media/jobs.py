"""Image jobs and where their state lives: one JSON file per job under SPARKLIO_HOME/jobs.

State is written whenever a job changes status, so after a restart a job that was queued or
running reports failed ("interrupted by restart") instead of vanishing.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from sparklio.exceptions import InvalidRequestError, NotFoundError
from sparklio.services.media.assets import MediaAsset

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


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


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Jobs in memory, each mirrored to `<root>/<job_id>.json` when its status changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._jobs: dict[str, MediaJob] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._recover()

    def _recover(self) -> None:
        """Load earlier jobs; those that were queued or running were cut off by a restart."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*.json")):
            try:
                job = MediaJob.model_validate_json(path.read_bytes())
            except ValueError:
                continue  # a file cut short by a crash: nothing to report from it
            if not job.finished:
                job.status, job.finished_at = "failed", time.time()
                was = "running" if job.started_at else "queued"
                job.error = {
                    "type": "interrupted",
                    "message": f"interrupted by restart: the gateway stopped while this job "
                    f"was {was}. Submit it again.",
                }
                self._write(job)
            self._jobs[job.job_id] = job

    def add(self, job: MediaJob) -> None:
        self._jobs[job.job_id] = job
        self._done[job.job_id] = asyncio.Event()

    def get(self, job_id: str) -> MediaJob:
        if not all(c in "0123456789abcdef" for c in job_id) or len(job_id) != 32:
            raise InvalidRequestError(f"job id {job_id!r} is not a job id (32 hex characters).")
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"No job {job_id}: it was never submitted here.")
        return job

    async def save(self, job: MediaJob) -> None:
        """Persist a status change (off the event loop); wake waiters when it finished."""
        await asyncio.to_thread(self._write, job)
        if job.finished and job.job_id in self._done:
            self._done[job.job_id].set()

    def _write(self, job: MediaJob) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{job.job_id}.json"
        partial = path.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(job.model_dump_json().encode())
        partial.replace(path)

    async def wait(self, job_id: str, seconds: float) -> MediaJob:
        """The job once it finished, or as it stands after `seconds`."""
        job = self.get(job_id)
        event = self._done.get(job_id)
        if event is not None and not job.finished and seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await event.wait()
            except TimeoutError:
                pass
        return job

    def active(self) -> list[MediaJob]:
        return [job for job in self._jobs.values() if not job.finished]

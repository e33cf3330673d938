"""Image jobs and where their state lives: the media_jobs table.

State is written whenever a job changes status; a job runs as a durable workflow
(sparklio.services.media.runs), so after a restart a job that was queued or running is
resumed from its row (`unfinished`, `resume`) instead of vanishing.

While the database is down, a job already stored keeps running: its new state stays in memory
(`GET` shows it from there) and is written once the database answers again, by a background
task that retries with a back-off and is woken when the app's database monitor sees it back.
A job cannot be submitted while the database is down (503): its row is its owner's record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sparklio.db.errors import describe, is_outage, outage_error
from sparklio.db.models import MediaJobRow
from sparklio.exceptions import InvalidRequestError, NotFoundError
from sparklio.wire.media import FINISHED, JobStatus, MediaRequest
from sparklio.wire.media import MediaJob as WireMediaJob

if TYPE_CHECKING:
    from sparklio.services.media.progress import SharedProgress

log = logging.getLogger("sparklio.media")


class MediaJob(WireMediaJob):
    """One image job as the server keeps it: the job the API reports (`sparklio.wire.MediaJob`,
    which this is), stored as that JSON in its media_jobs row."""

    @classmethod
    def from_row(cls, row: MediaJobRow) -> Self:
        """The job a media_jobs row holds."""
        return cls.model_validate(row.data)

    def to_row(self, row: MediaJobRow | None = None, user_id: str | None = None) -> MediaJobRow:
        """A new row for this job (made by `user_id`), or `row` brought up to date with it."""
        data = self.model_dump(mode="json")
        if row is None:
            return MediaJobRow(job_id=self.job_id, status=self.status, data=data, user_id=user_id)
        row.status, row.data, row.updated_at = self.status, data, datetime.now(UTC)
        return row


def new_job_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    """Jobs in the database (table media_jobs), with this process's live jobs in memory.

    A job's row is written whenever its status changes; progress stays in memory (it changes
    many times a second and means nothing after a restart), and with `progress` (REDIS_URL)
    in Redis too, where other processes read it for a job that runs here.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        backoff: tuple[float, float] = (1.0, 30.0),
        progress: SharedProgress | None = None,
    ) -> None:
        self.sessions = sessions
        self._progress = progress
        self._jobs: dict[str, MediaJob] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._stored: set[str] = set()  # live jobs whose row exists
        self._unsaved: set[str] = set()  # live jobs whose last change is not written yet
        self._backoff = backoff
        self._retry = asyncio.Event()  # the database is back: write the unsaved jobs now
        self._writer: asyncio.Task[None] | None = None
        self._owners: dict[str, str | None] = {}  # who made each live job (the row has it too)

    async def unfinished(self) -> list[str]:
        """The jobs a previous run left queued or running (not this process's own: when the
        database was down at start, jobs submitted since are not leftovers)."""
        async with self.sessions() as session:
            job_ids = (await session.scalars(
                select(MediaJobRow.job_id).where(MediaJobRow.status.in_(("queued", "running")))
            )).all()  # fmt: skip
        return [job_id for job_id in job_ids if job_id not in self._jobs]

    async def resume(self, job_id: str) -> MediaJob | None:
        """The live job, or its row's job made live (its workflow resumes after a restart),
        so GET shows its progress from memory as for any job running here; None without one."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job
        try:
            async with self.sessions() as session:
                row = await session.get(MediaJobRow, job_id)
        except Exception as exc:
            if is_outage(exc):
                raise outage_error(exc) from exc
            raise
        if row is None:
            return None
        job = MediaJob.from_row(row)
        if not job.finished:
            self.add(job)
            self._owners[job_id] = row.user_id
            self._stored.add(job_id)
        return job

    def add(self, job: MediaJob) -> None:
        self._jobs[job.job_id] = job
        self._done[job.job_id] = asyncio.Event()

    async def get(self, job_id: str, owner: str | None = None) -> MediaJob:
        """The job; with `owner`, only if that user made it: another user's job is reported
        missing, exactly as one that does not exist (so its id tells a stranger nothing)."""
        if len(job_id) != 32 or not all(c in "0123456789abcdef" for c in job_id):
            raise InvalidRequestError(f"job id {job_id!r} is not a job id (32 hex characters).")
        missing = NotFoundError(f"No job {job_id}: it was never submitted here.")
        job = self._jobs.get(job_id)
        if job is not None:
            if owner is not None and self._owners.get(job_id) != owner:
                raise missing
            return job
        try:
            async with self.sessions() as session:
                row = await session.get(MediaJobRow, job_id)
        except Exception as exc:
            if is_outage(exc):
                raise outage_error(exc) from exc
            raise
        if row is None or (owner is not None and row.user_id != owner):
            raise missing
        job = MediaJob.from_row(row)
        if self._progress is not None and not job.finished:  # running on another process?
            live = await self._progress.read(job_id)
            if live is not None and live[0] >= job.progress:
                job.progress, job.message = live
        return job

    def progressed(self, job: MediaJob) -> None:
        """A live job's progress changed: tell the other processes (with REDIS_URL)."""
        if self._progress is not None:
            self._progress.note(job.job_id, job.progress, job.message)

    async def save(self, job: MediaJob, user_id: str | None = None) -> None:
        """Write a status change; wake waiters when the job finished.

        The first save of a job raises DatabaseUnavailableError (503) while the database is
        down (the job is forgotten); later ones keep the change in memory and write it once
        the database is back."""
        if user_id is not None and job.job_id in self._jobs:
            self._owners[job.job_id] = user_id  # before the write, which may fail in an outage
        first = job.job_id not in self._stored
        try:
            await self._write(job, user_id)
        except Exception as exc:
            if first:
                self._forget(job.job_id)
                if is_outage(exc):
                    raise outage_error(exc) from exc
                raise
            if not is_outage(exc):
                raise
            if job.job_id not in self._unsaved:
                log.warning(
                    "media job %s is %s; the database is down (%s): kept in memory until it "
                    "is back",
                    job.job_id,
                    job.status,
                    describe(exc),
                )
            self._unsaved.add(job.job_id)
            self._start_writer()
        else:
            self._stored.add(job.job_id)
            self._unsaved.discard(job.job_id)
        if job.finished:
            event = self._done.get(job.job_id)
            if event is not None:
                event.set()
            if job.job_id not in self._unsaved:
                self._forget(job.job_id)  # the row is the record from now on

    async def _write(self, job: MediaJob, user_id: str | None) -> None:
        async with self.sessions() as session, session.begin():
            row = await session.get(MediaJobRow, job.job_id)
            if row is None:
                session.add(job.to_row(user_id=user_id))
            else:
                job.to_row(row)

    def _forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
        self._done.pop(job_id, None)
        self._owners.pop(job_id, None)
        self._stored.discard(job_id)
        self._unsaved.discard(job_id)

    # -- writing what the database missed ----------------------------------------------------

    def database_changed(self, up: bool, _error: str | None = None) -> None:
        """The database monitor's news: once it answers again, write the unsaved jobs now."""
        if up:
            self._retry.set()

    @property
    def unsaved(self) -> int:
        """Jobs whose last change waits in memory for the database."""
        return len(self._unsaved)

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_unsaved(), name="sparklio-media-jobs")

    async def _write_unsaved(self) -> None:
        delay = self._backoff[0]
        while self._unsaved:
            self._retry.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._retry.wait()
            if await self.flush_unsaved():
                return
            delay = min(delay * 2, self._backoff[1])

    async def flush_unsaved(self) -> bool:
        """Write every unsaved job now; whether all of them are written."""
        for job_id in list(self._unsaved):
            job = self._jobs.get(job_id)
            if job is None:
                self._unsaved.discard(job_id)
                continue
            try:
                await self._write(job, None)
            except Exception as exc:
                if not is_outage(exc):
                    log.exception("media job %s could not be written", job_id)
                return False
            self._unsaved.discard(job_id)
            log.info("media job %s written (%s) now that the database is back", job_id,
                     job.status)  # fmt: skip
            if job.finished:
                self._forget(job_id)
        return True

    async def aclose(self) -> None:
        """Stop retrying; a last try writes what is unsaved (else the next start finds the
        jobs unfinished, and resumes them)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        written = False
        if self._unsaved:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):  # shutdown stays quick
                    written = await self.flush_unsaved()
        if self._unsaved and not written:
            log.warning("%d media jobs could not be written: the database is down",
                        len(self._unsaved))  # fmt: skip
        if self._progress is not None:
            await self._progress.aclose()

    async def wait(self, job_id: str, seconds: float) -> MediaJob:
        """The job once it finished, or as it stands after `seconds`."""
        job = await self.get(job_id)
        event = self._done.get(job_id)
        if event is not None and not job.finished and seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await event.wait()
            except TimeoutError:
                pass
        return job

    def active(self) -> list[MediaJob]:
        return list(self._jobs.values())


__all__ = ["FINISHED", "JobStatus", "JobStore", "MediaJob", "MediaRequest", "new_job_id"]

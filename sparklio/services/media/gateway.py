"""The Media Gateway: every image request goes through it, as a job.

`submit()` routes (role, task) through the routing file's media section, fills the route's
workflow template (a missing placeholder is a 422 before anything is queued), stores the job
and starts it as a durable workflow (sparklio.services.media.runs), so a restart resumes it;
the job runs through the same attempt loop as model calls: it waits for a slot on the least
busy healthy endpoint of its candidate, runs with the endpoint's timeout, is retried after a
transient failure, skips an endpoint whose circuit is open, falls back to the route's next
candidate, and records every attempt.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dbos import DBOS

from sparklio.core.config import Settings
from sparklio.exceptions import (
    ConfigError,
    GatewayError,
    InvalidRequestError,
    ProviderError,
    RouteNotFoundError,
    ServiceUnavailableError,
)
from sparklio.services.gateway.attempts import AttemptLoop, Plan, Trail, Try
from sparklio.services.gateway.endpoints import Endpoints
from sparklio.services.gateway.guard import RetryPolicy
from sparklio.services.gateway.providers import Registry
from sparklio.services.gateway.router import Router
from sparklio.services.gateway.routing import MediaCandidate, RoutingFile
from sparklio.services.media import runs
from sparklio.services.media.assets import AssetStore
from sparklio.services.media.jobs import JobStore, MediaJob, MediaRequest, new_job_id
from sparklio.services.media.providers.base import MediaProvider, MediaProviderResponse
from sparklio.services.media.workflows import WorkflowLibrary

log = logging.getLogger("sparklio.media")

#: Request options that would bypass the routing file.
RESERVED_OPTIONS = frozenset({"checkpoint", "workflow", "graph", "model", "job_id"})
DEFAULT_SIZE = 1024
#: DBOS's ends of a workflow (a job whose row is unfinished but whose workflow ended cannot resume)
ENDED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})


class MediaGateway:
    """Routes image requests, runs them as jobs, keeps their state and files."""

    def __init__(
        self,
        settings: Settings,
        endpoints: Endpoints[MediaProvider],
        router: Router[MediaCandidate] | None,
        workflows: WorkflowLibrary,
        jobs: JobStore,
        launch: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.router = router
        self.workflows = workflows
        self.jobs = jobs
        self.assets = AssetStore(settings.home / "assets")
        self.loop = AttemptLoop(endpoints, RetryPolicy.from_settings(settings))
        #: launches DBOS for this app (once; the campaigns run on it too)
        self.launch = launch
        self._tasks: dict[str, asyncio.Task[Any]] = {}  # the workflows running here, by job

    @classmethod
    def build(
        cls,
        settings: Settings,
        routing: RoutingFile,
        path: Path,
        registry: Registry[MediaProvider],
        jobs: JobStore,
        launch: Callable[[], Awaitable[None]],
    ) -> MediaGateway:
        """The gateway for the routing file's media section; ConfigError for a bad one.
        `launch` launches DBOS for the app (see MediaGateway.launch)."""
        max_queue = settings.media_max_queue
        endpoints = Endpoints(registry, settings, routing.providers, max_queue=max_queue)
        workflows = WorkflowLibrary(settings.workflows_dir)
        router = None
        problems: list[str] = []
        if routing.media is not None:
            router = Router(
                routing.media.modes, settings.generator_mode, path=path, section="media.modes"
            )
            problems.extend(endpoints.check(router.models_by_endpoint()))
            for _, candidate in _candidates(router):
                if candidate.workflow is not None:
                    try:
                        workflows.get(candidate.workflow)
                    except ConfigError as exc:
                        problems.append(f"media route {candidate.label}: {exc}")
        if problems:
            raise ConfigError(f"Routing file {path} is invalid:\n  " + "\n  ".join(problems))
        return cls(settings, endpoints, router, workflows, jobs, launch)

    def _router(self) -> Router[MediaCandidate]:
        if self.router is None:
            raise RouteNotFoundError(
                "The routing file has no 'media' section, so no image routes: add one "
                "(see the shipped routing.yaml)."
            )
        return self.router

    async def submit(self, request: MediaRequest, user_id: str | None = None) -> MediaJob:
        """Check, store and start a job; it runs in the background."""
        route = self._router().route(request.role, request.task)
        reserved = RESERVED_OPTIONS.intersection(request.options)
        if reserved:
            raise InvalidRequestError(
                f"options may not set {', '.join(sorted(reserved))}: the routing file picks "
                "the workflow and checkpoint."
            )
        job = MediaJob(job_id=new_job_id(), request=request, rule=route.rule)
        if request.seed is None:
            # a fresh seed per job: ComfyUI hands back the old image for an identical graph
            request.seed = secrets.randbelow(2**48)
        primary = route.candidates[0]
        self.options_for(job, primary)  # a missing placeholder is a 422 now
        limiters = [self.endpoints.get(name).guard.limiter for name in primary.targets]
        if all(limiter.waiting >= limiter.max_queue for limiter in limiters):
            waiting = sum(limiter.waiting for limiter in limiters)
            raise ServiceUnavailableError(
                f"{waiting} image jobs already wait for {primary.where}; try again later."
            )
        self.jobs.add(job)
        await self.jobs.save(job, user_id)  # a 503 while the database is down
        try:
            await self._launch()
            await runs.enqueue(job.job_id)
        except Exception as exc:  # no workflow runs it: the job must not stay queued
            log.warning("media job %s could not be started: %s", job.job_id, exc)
            reason = exc.message if isinstance(exc, GatewayError) else "DBOS failed to start it"
            message = f"The image job could not be started: {reason}; try again."
            await self._finish(job, "failed", error={"type": "unavailable", "message": message})
            raise ServiceUnavailableError(message) from exc
        log.info(
            "→ media %s.%s job %s via %s",
            request.role,
            request.task,
            job.job_id,
            route.candidates[0].label,
        )
        return job

    async def _launch(self) -> None:
        """DBOS running in this process, with this gateway running its image jobs."""
        await self.launch()
        runs.claim(self)

    def options_for(self, job: MediaJob, candidate: MediaCandidate) -> dict[str, Any]:
        """What the provider gets: the route's params, the request, and the filled graph."""
        request = job.request
        width = request.width or int(candidate.params.get("width", DEFAULT_SIZE))
        height = request.height or int(candidate.params.get("height", DEFAULT_SIZE))
        options: dict[str, Any] = {
            **candidate.params,
            **request.options,
            "model": candidate.model,
            "workflow": candidate.workflow,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": width,
            "height": height,
            "count": request.count,
            "seed": request.seed,
            "job_id": job.job_id,
            # a new file name per job too, so no job is ever handed another's file
            "filename_prefix": f"sparklio/{job.job_id}",
        }
        if candidate.workflow is not None:
            options["graph"] = self.workflows.get(candidate.workflow).fill(options)
        return options

    # -- the workflow's parts (sparklio.services.media.runs) ---------------------------------

    async def execute(self, job_id: str) -> str:
        """The job's workflow: its render, unless its row says it finished meanwhile (the
        render wrote it, and the stop came before DBOS recorded the step); the final status."""
        job = await self.jobs.resume(job_id)
        if job is None or job.finished:
            return job.status if job is not None else "missing"
        task = asyncio.current_task()
        if task is not None:
            self._tasks[job_id] = task
        try:
            return await runs.render_step(job_id)
        finally:
            self._tasks.pop(job_id, None)

    async def render(self, job_id: str) -> str:
        """The render step: run the job through the attempt loop and write how it ended; its
        status. The row is written here, not in a step of its own, so that while the database
        is down a job that rendered shows succeeded from memory (written once it is back)
        although DBOS cannot record the step before then. A job whose route is gone since it
        was submitted (the routing changed before a restart) fails, saying so."""
        job = await self.jobs.resume(job_id)
        if job is None:
            return "missing"
        if job.finished:  # cancelled as it started
            return job.status
        try:
            route = self._router().route(job.request.role, job.request.task)
        except GatewayError as exc:
            message = f"The job cannot resume after the restart: {exc.message} Submit it again."
            await self._finish(job, "failed", error={"type": "interrupted", "message": message})
            return job.status
        trail = Trail(job.attempts, describe=lambda c: {"workflow": c.workflow})
        plan = Plan(
            what=f"{job.request.role}/{job.request.task}",
            candidates=route.candidates,
            attempt=lambda attempt: self._attempt(job, attempt),
            timeout=lambda _, endpoint: endpoint.config.timeout,
            queue_in_timeout=False,  # a job waits its turn on a busy server, then is timed
            retry_timeouts=False,
            after_timeout="; the work was stopped on the server",
        )
        try:
            response = await self.loop.run(plan, trail)
        except GatewayError as exc:
            job.meta["queue_ms"] = round(trail.queue_ms, 1)
            error = {"type": str(getattr(exc, "outcome", exc.type)), "message": exc.message}
            await self._finish(job, "failed", error=error)
        except Exception as exc:  # a bug must still leave the job in a final state
            log.exception("media job %s failed", job.job_id)
            error = {"type": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            await self._finish(job, "failed", error=error)
        else:
            job.meta["queue_ms"] = round(trail.queue_ms, 1)
            job.assets = response.outputs
            job.meta.update(response.meta, usage=response.usage)
            await self._finish(job, "succeeded")
        return job.status

    async def _attempt(self, job: MediaJob, attempt: Try[MediaCandidate]) -> MediaProviderResponse:
        """One attempt of a job on one endpoint, once it holds a slot there."""
        candidate, endpoint = attempt.candidate, attempt.endpoint
        job.status, job.started_at = "running", job.started_at or time.time()
        job.provider, job.model = endpoint.name, candidate.model
        await self.jobs.save(job)
        try:
            options = self.options_for(job, candidate)
        except GatewayError as exc:  # e.g. a fallback's workflow needs a value it lacks
            raise ProviderError(exc.message, provider=endpoint.name, model=candidate.model,
                                outcome="rejected") from None  # fmt: skip
        provider: MediaProvider = endpoint.provider
        return await provider.generate(
            job.request.prompt,
            job.request.role,
            job.request.task,
            options,
            lambda f, m: self._progress(job, f, m),
        )

    def _progress(self, job: MediaJob, fraction: float, message: str) -> None:
        job.progress = round(min(max(fraction, job.progress), 1.0), 3)
        job.message = message
        self.jobs.progressed(job)  # and to other processes, with REDIS_URL

    async def _finish(
        self, job: MediaJob, status: str, error: dict[str, Any] | None = None
    ) -> None:
        job.status = status  # type: ignore[assignment]  # one of the JobStatus literals
        job.finished_at = time.time()
        job.error = error
        if status == "succeeded":
            job.progress, job.message = 1.0, "done"
        await self.jobs.save(job)
        took = job.finished_at - job.created_at
        log.info(
            "← media job %s %s in %.1fs (%d images)", job.job_id, status, took, len(job.assets)
        )

    async def cancel(self, job_id: str) -> MediaJob:
        """Cancel a job that has not finished: its workflow is cancelled (no restart resumes
        it) and its render stopped, on the provider's server too. A finished job is returned
        as it is."""
        job = await self.jobs.get(job_id)
        if job.finished:
            return job
        await self._launch()
        await DBOS.cancel_workflow_async(job_id)
        # running here: stopped now (DBOS logs it), not at DBOS's next poll for cancellations
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if not job.finished:  # it may have finished meanwhile
            error = {"type": "cancelled", "message": "cancelled before it finished"}
            await self._finish(job, "cancelled", error=error)
        return job

    async def recover(self) -> int:
        """For the server once its database answers: resume the jobs a stop left unfinished;
        how many there were. DBOS resumes those it was running (launching it does); a job
        stored but never handed to it (the stop came in between) is started now; one whose
        workflow ended without writing its row fails, saying so.

        Only the server calls this: an in-process app sharing the database must not take
        over the jobs a running server is working on."""
        runs.claim(self)  # should the campaigns launch DBOS, the jobs it resumes find us
        job_ids = await self.jobs.unfinished()
        if not job_ids:
            return 0
        await self._launch()
        for job_id in job_ids:
            status = await DBOS.get_workflow_status_async(job_id)
            if status is None:
                await runs.enqueue(job_id)
            elif status.status in ENDED:
                job = await self.jobs.get(job_id)
                error = {"type": "interrupted", "message": "interrupted by restart: the job "
                         f"could not be resumed (its workflow ended {status.status.lower()}). "
                         "Submit it again."}  # fmt: skip
                await self._finish(job, "failed", error=error)
        return len(job_ids)

    async def stop_jobs(self) -> None:
        """Stop the jobs running in this process, as they stand: their rows stay unfinished
        and their workflows pending, so the next start resumes them. Before DBOS goes."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        runs.release(self)

    async def aclose(self) -> None:
        """Stop running jobs (the next start resumes them) and close the providers."""
        await self.stop_jobs()
        await self.jobs.aclose()  # writes job states the database missed, if it can
        await self.endpoints.aclose()


def _candidates(router: Router[MediaCandidate]) -> list[tuple[str, MediaCandidate]]:
    rows = router.table()
    return [
        (row["rule"], MediaCandidate.model_validate(c)) for row in rows for c in row["candidates"]
    ]

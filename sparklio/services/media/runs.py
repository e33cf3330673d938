"""Image jobs as DBOS durable workflows, on the engine the campaigns run on.

A job's workflow has the job's id and one step, `render`: the job through the attempt loop
(slots, retries, fallback, breakers), its end written to its row (see MediaGateway.render).
DBOS checkpoints a finished step in its system database, so after a crash the next launch
resumes the job: a render that finished is not run again (nor one whose row says it ended,
should the crash come before DBOS recorded it), and a render the crash cut off is run again
from the start, on a fresh prompt to the provider (its half-done work cannot be picked up:
the process that followed it is gone).

DBOS is one per process, launched for the app whose gateway calls `claim`; the workflow
reaches that gateway through this module, as the campaigns reach their engine.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING

from dbos import DBOS, SetWorkflowID

if TYPE_CHECKING:
    from sparklio.services.media.gateway import MediaGateway

#: The gateway whose jobs DBOS runs in this process (DBOS is a process-wide singleton).
_current: MediaGateway | None = None


def claim(gateway: MediaGateway) -> None:
    """`gateway` runs the jobs of this process's DBOS from now on (its app launched it)."""
    global _current
    _current = gateway


def release(gateway: MediaGateway) -> None:
    """`gateway` is closing: its jobs are no longer run here."""
    global _current
    if _current is gateway:
        _current = None


def _gateway() -> MediaGateway:
    if _current is None:  # DBOS was launched by an app whose media gateway never started a job
        raise RuntimeError("no media gateway runs image jobs in this process")
    return _current


async def enqueue(job_id: str) -> None:
    """Hand the job to DBOS: the one place a job's workflow is started (its id is the job's,
    so starting one twice starts it once). Started in a context of its own: a job submitted
    from inside a campaign's step (in-process) is a workflow of its own, not a child of the
    step, which DBOS would refuse."""

    async def start() -> None:
        with SetWorkflowID(job_id):
            await DBOS.start_workflow_async(media_job_workflow, job_id)

    await asyncio.create_task(start(), context=contextvars.Context())


@DBOS.workflow(name="sparklio.media.job")
async def media_job_workflow(job_id: str) -> str:
    """An image job, durable: see MediaGateway.execute. Its final status."""
    return await _gateway().execute(job_id)


# preemptible: a cancel from another process (DBOS.cancel_workflow) stops a render running here
@DBOS.step(name="sparklio.media.render", preemptible=True)
async def render_step(job_id: str) -> str:
    """The job's render through the attempt loop, its end written to its row: its status."""
    return await _gateway().render(job_id)

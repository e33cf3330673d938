"""Campaigns as DBOS durable workflows: each agent call of `run_campaign` is a DBOS step.

DBOS checkpoints every finished step's output in its system database (SQLite in
SPARKLIO_HOME, or the app's PostgreSQL); after a crash, launching DBOS again recovers the
workflow, replays the recorded outputs, and runs only the steps that had not finished.

DBOS is one per process (a singleton with a global registry of workflows), so one app at a
time owns it: the server launches it once its database answers when campaigns are
unfinished (recovery happens there), any app else on its first campaign; `close` destroys
it. A step reaches the models like any client, through the gateway clients over the app
itself (in-process transports), with a token of the campaign's owner, so the call log
attributes every call to them.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from dbos import DBOS, Queue, SetWorkflowID
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp

from sparklio.agents.base import StepRecord
from sparklio.agents.pipeline import Decision, run_campaign
from sparklio.core.config import Settings
from sparklio.db.models import CampaignEvent
from sparklio.exceptions import AgentError, ServiceUnavailableError
from sparklio.services import telemetry
from sparklio.services.auth import AuthService
from sparklio.services.campaigns import executors
from sparklio.services.campaigns.feed import EventFeed, joined, latest
from sparklio.services.campaigns.store import FINISHED, CampaignStore
from sparklio.services.clients.asgi import StreamingASGITransport
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.wire.brand import BrandKit

log = logging.getLogger("sparklio.campaigns")
T = TypeVar("T")

#: A workflow that resumes a campaign after a review: `<campaign id>:resume-<pause event id>`.
RESUME = ":resume-"

#: The DBOS queue campaigns wait in, and how often each process looks for one to run.
CAMPAIGN_QUEUE = "sparklio-campaigns"
QUEUE_POLL = 0.1

#: The engine DBOS runs campaigns for in this process (DBOS is a process-wide singleton).
_current: CampaignEngine | None = None


class Paused(Exception):
    """The campaign awaits a review: its workflow ends, and the review resumes a fork of it."""


class StepFailed(Exception):
    """A step's failure as DBOS records it (a plain message: AgentError does not pickle)."""


class CampaignEngine:
    """Starts, runs, recovers and cancels campaigns for one app."""

    def __init__(self, settings: Settings, store: CampaignStore, auth: AuthService) -> None:
        self.settings = settings
        self.store = store
        self.auth = auth
        self.app: ASGIApp | None = None
        self.launched = False
        #: "serve" or "worker": names this process's executor slot (see executors.py)
        self.role = "serve"
        self.executor: executors.Executor | None = None
        self.queue: Queue | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self._loop_executor: ThreadPoolExecutor | None = None
        self._starting = asyncio.Lock()

    def bind(self, app: ASGIApp) -> None:
        """The app whose gateway the steps call (set once create_app has built it)."""
        self.app = app

    def system_database_url(self) -> str:
        """DBOS's own tables: in the app's PostgreSQL when it has one, else SQLite in HOME."""
        url = self.settings.database_url or ""
        if url.startswith("postgresql"):
            return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        return f"sqlite:///{self.settings.home / 'workflows.sqlite'}"

    async def start(self, *, if_free: bool = False) -> None:
        """Launch DBOS for this app, which recovers the campaigns this executor slot left
        unfinished (see executors.py), and listen on the campaigns' queue. Called in the
        event loop the campaigns run on (DBOS runs async workflows on the loop it launched
        in). `if_free`: quietly do nothing when another app of this process has it."""
        if self.launched:
            return
        async with self._starting:  # image jobs submitted at once launch it once
            if not self.launched:
                await self._start(if_free=if_free)

    async def _start(self, *, if_free: bool) -> None:
        global _current
        if _current is not None:
            if if_free:
                return
            raise ServiceUnavailableError(
                "Another Sparklio app in this process runs the campaigns; close it first"
            )
        _log_to_current_stderr()
        # DBOS makes its own thread pool this loop's default executor (asyncio.to_thread),
        # and shuts that pool down when destroyed: the loop gets its own back in aclose
        self._loop_executor = getattr(asyncio.get_running_loop(), "_default_executor", None)
        # DBOS's own tables, migrated off the loop: launch() would do it on the loop's thread,
        # and on PostgreSQL its CREATE INDEX CONCURRENTLY waits for every open transaction,
        # the app's own among them, which wait for the loop (seen: a server stuck for good)
        await asyncio.to_thread(DBOS.migrate, self.system_database_url())
        executor = executors.claim(self.role, self.system_database_url())
        # a short poll: DBOS.destroy waits out one (1 s by default) for every app closed
        DBOS(config={"name": "sparklio", "system_database_url": self.system_database_url(),
                     "log_level": "WARNING", "executor_id": executor.id,
                     "notification_listener_polling_interval_sec": 0.1,
                     "run_migrations": False})  # fmt: skip
        if not self.runs_campaigns:
            DBOS.listen_queues([])  # it queues them; the workers run them
        _current = self
        try:
            DBOS.launch()
            # the limit is the database's: every process sharing it holds to the latest one
            self.queue = await DBOS.register_queue_async(
                CAMPAIGN_QUEUE,
                global_concurrency=self.settings.campaign_concurrency,
                worker_concurrency=min(
                    self.settings.campaign_worker_concurrency, self.settings.campaign_concurrency
                ),
                polling_interval_sec=QUEUE_POLL,
                on_conflict="always_update",
            )
        except BaseException:
            _current = None
            self._destroy()
            executor.release()
            raise
        self.executor = executor
        self.launched = True

    async def stop_running(self) -> None:
        """Cancel the campaigns running here (see aclose); they stay pending."""
        running = [task for task in self._running if not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def _destroy(self) -> None:
        """Stop DBOS, and give the loop back its own default executor (DBOS's pool is gone)."""
        DBOS.destroy()
        asyncio.get_running_loop().set_default_executor(
            self._loop_executor or ThreadPoolExecutor(thread_name_prefix="asyncio")
        )

    @property
    def runs_campaigns(self) -> bool:
        """Whether this process runs campaigns, or only queues them for the workers."""
        return self.role == "worker" or self.settings.campaigns_in_server

    async def recover(self) -> None:
        """For the server once its database answers (one that hangs must not hold up the
        start): when campaigns are unfinished, launch DBOS, which resumes what this executor
        slot left unfinished and runs the campaigns queued; otherwise the first campaign
        launches it (a server that runs none has no DBOS threads)."""
        if not await self.store.unfinished():
            return
        await self.start(if_free=True)
        if self.launched:
            await self._resume_reviewed()

    async def aclose(self) -> None:
        """Stop DBOS; unfinished campaigns stay pending, for the next start to recover.
        The campaigns running here are cancelled first, at whatever they await: a step cut
        short records nothing (DBOS leaves the workflow pending), where one failing because
        its gateway closed under it would fail the campaign for good."""
        global _current
        if not self.launched:
            return
        await self.stop_running()
        self.launched = False
        _current = None
        self._destroy()
        if self.executor is not None:
            self.executor.release()
            self.executor = None

    async def submit(self, campaign_id: str) -> None:
        """Queue the campaign's workflow (its id is the campaign's: queuing twice is once);
        the server or a worker runs it once the queue's concurrency allows."""
        await self.start()
        with SetWorkflowID(campaign_id):
            await self.queue.enqueue_async(campaign_workflow, campaign_id)  # type: ignore[union-attr]

    async def cancel(self, campaign_id: str) -> bool:
        """Cancel the campaign: no step starts after this. False when it had finished."""
        if not await self.store.set_status(campaign_id, "cancelled", "cancelled"):
            return False
        await self.start()  # whichever process runs it, DBOS stops it at its next step
        review = await self.store.last_event(campaign_id, "review")
        await DBOS.cancel_workflow_async(
            review.data.get("workflow_id", campaign_id) if review else campaign_id
        )
        return True

    async def execute(self, campaign_id: str) -> str:
        """The workflow's body (a task of this loop, which `aclose` cancels)."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            return await self._execute(campaign_id)
        finally:
            self._running.discard(task)

    async def _execute(self, campaign_id: str) -> str:
        """Run the pipeline, each step durable; the final status."""
        row = await self.store.get(campaign_id)
        if row is None or row.status in FINISHED:
            return row.status if row is not None else "missing"
        await _campaign_step(campaign_id, "start", self._started)
        options = row.options
        manual = (options.get("options") or {}).get("review") == "manual"
        # a fresh token at every (re)start: the campaign may outlive any one token
        token = self.auth.issue_token(row.user_id, "member", expires_in=timedelta(hours=12))
        connection: dict[str, Any] = {
            "base_url": "http://sparklio.local",
            "api_key": token.access_token,
            "transport": httpx.ASGITransport(app=self.app),  # type: ignore[arg-type]
        }
        # copy as it streams and image progress, a few events a second at most
        copy_feed = EventFeed(self.store, campaign_id, "copy_delta", joined("text"))
        image_feed = EventFeed(self.store, campaign_id, "image_progress", latest)
        try:
            async with (
                # streamed: httpx's ASGITransport hands an answer over only once it is whole,
                # so the copy would reach the live view in one piece at the end of its step
                LLMGatewayClient(
                    **connection | {"transport": StreamingASGITransport(self.app)}
                ) as llm,
                MediaGatewayClient(**connection) as media,
            ):
                campaign = await run_campaign(
                    llm,
                    media,
                    row.brief,
                    product_facts=options.get("product_facts") or {},
                    brand_guide=options.get("brand_guide"),
                    brand_kit=_kit(options.get("brand_kit")),
                    words_to_avoid=options.get("words_to_avoid") or [],
                    channels=options.get("channels"),
                    variants=options.get("variants"),
                    on_copy=lambda channel, text: copy_feed.add(
                        channel, {"channel": channel, "text": text}
                    ),
                    on_image=lambda state: image_feed.add(state.index, state.model_dump()),
                    runner=partial(_flushed_step, campaign_id, (copy_feed, image_feed)),
                    gate=partial(self._gate, campaign_id) if manual else None,
                )
        except Paused:
            return "awaiting_review"
        except StepFailed as exc:
            await _campaign_step(
                campaign_id, "finish", partial(self._failed, campaign_id, str(exc))
            )
            return "failed"
        finally:
            copy_feed.close()
            image_feed.close()
        result = campaign.model_dump(mode="json")
        await _campaign_step(campaign_id, "finish", partial(self._succeeded, campaign_id, result))
        return "succeeded"

    async def _gate(self, campaign_id: str, gate: str, shown: dict[str, Any]) -> Decision:
        """A pause for a reviewer. The workflow ends here (a paused campaign holds no place
        in the queue, however long the review takes); POST .../review records the decision
        and forks the workflow from this very step (`review`), and the fork - its earlier
        steps replayed from the record, never called again - reads the decision here."""
        decision = await _quiet_step(partial(self._pause_or_resume, campaign_id, gate, shown))
        if decision is None:
            raise Paused
        return Decision.model_validate(decision)

    async def _pause_or_resume(
        self, campaign_id: str, gate: str, shown: dict[str, Any]
    ) -> dict[str, Any] | None:
        """In the fork that resumes this pause, the reviewer's decision; anywhere else, pause
        here: the campaign awaits review, and its pause event says where to fork from."""
        workflow_id, step = DBOS.workflow_id, DBOS.step_id
        pause_id = _resumed_pause(workflow_id or "")
        if pause_id is not None:
            pause = await self.store.event(campaign_id, pause_id)
            if pause is not None and pause.data.get("resume", {}).get("step") == step:
                review = await self.store.review_of(campaign_id, pause_id)
                if review is not None:
                    return {k: review.data.get(k) for k in ("approve", "changes")}
        resume = {"workflow_id": workflow_id, "step": step}
        await self.store.set_status(campaign_id, "awaiting_review", "awaiting_review",
                                    data={"gate": gate, **shown, "resume": resume})  # fmt: skip
        return None

    async def review(self, campaign_id: str, pause: CampaignEvent) -> None:
        """Resume a campaign whose review (of `pause`) is recorded: fork its workflow from
        the pause's step, into the queue. The fork's id names the pause, so one pause is
        resumed once, however often this is called."""
        await self.start()
        resume = pause.data.get("resume") or {}
        fork_id = resuming(campaign_id, pause.id)
        if await DBOS.get_workflow_status_async(fork_id) is not None:
            return
        with SetWorkflowID(fork_id):
            await DBOS.fork_workflow_async(resume["workflow_id"], resume["step"],
                                           queue_name=CAMPAIGN_QUEUE)  # fmt: skip

    async def _resume_reviewed(self) -> None:
        """Fork the campaigns whose review was recorded but whose fork was not (the process
        stopped in between): a review is never lost."""
        for campaign_id, pause in await self.store.reviewed_unresumed():
            try:
                await self.review(campaign_id, pause)
            except Exception:  # another process forked it first, or it cannot be resumed
                log.exception("could not resume campaign %s after its review", campaign_id)

    async def _started(self) -> None:
        pass  # the "start" step's event is what it is for

    async def _succeeded(self, campaign_id: str, result: dict[str, Any]) -> None:
        await self.store.set_status(campaign_id, "succeeded", "done", result=result,
                                    data={"status": result["status"]})  # fmt: skip

    async def _failed(self, campaign_id: str, message: str) -> None:
        await self.store.set_status(campaign_id, "failed", "failed", error={"message": message},
                                    data={"message": message})  # fmt: skip


def _quiet_cancellations(record: logging.LogRecord) -> bool:
    """Not DBOS's warning for each workflow task cancelled at a stop (it prints the step's
    whole argument list): a campaign stopped so is pending, not failed, and resumes later."""
    return not record.getMessage().startswith("Asyncio task cancelled")


def _log_to_current_stderr() -> None:
    """DBOS's console handler keeps the sys.stderr of its first launch; a later launch flushes
    it, which fails once that stream is closed (a test runner's capture, a finished command's
    redirect). Point it at the stderr of now."""
    dbos_log = logging.getLogger("dbos")
    if _quiet_cancellations not in dbos_log.filters:
        dbos_log.addFilter(_quiet_cancellations)
    for handler in dbos_log.handlers:
        if isinstance(handler, logging.StreamHandler) and type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr


def resuming(campaign_id: str, pause_id: int) -> str:
    """The id of the workflow that resumes a campaign after its pause `pause_id`."""
    return f"{campaign_id}{RESUME}{pause_id}"


def _resumed_pause(workflow_id: str) -> int | None:
    """The pause event a resuming workflow's id names (None for a campaign's first one)."""
    _, found, pause_id = workflow_id.rpartition(RESUME)
    return int(pause_id) if found and pause_id.isdigit() else None


def _engine() -> CampaignEngine:
    if _current is None:  # DBOS runs workflows only while an engine has launched it
        raise RuntimeError("no campaign engine is running")
    return _current


def _kit(stored: dict[str, Any] | None) -> BrandKit | None:
    """The brand kit a campaign started with (kept in its options)."""
    if not stored:
        return None
    return BrandKit.model_validate({k: v for k, v in stored.items() if k != "id"})


def step_records(value: Any) -> list[StepRecord]:
    """The StepRecords in a step's output ((model, record) or (models, records))."""
    if isinstance(value, StepRecord):
        return [value]
    if isinstance(value, tuple | list):
        return [record for item in value for record in step_records(item)]
    return []


@DBOS.step(name="sparklio.campaign.step")
async def _campaign_step(campaign_id: str, name: str, call: Callable[[], Awaitable[T]]) -> T:
    """One step of a campaign: its events around the call. DBOS records the output, so a
    finished step is replayed from the record, never called again."""
    store = _engine().store
    if name == "start":
        await store.set_status(campaign_id, "running", "started")
    elif name != "finish":
        await store.add_event(campaign_id, "step_started", name)
    try:
        with telemetry.campaign_step(campaign_id, name):
            value = await call()
    except Exception as exc:
        await store.add_event(campaign_id, "step_failed", name, {"error": str(exc)})
        if isinstance(exc, AgentError | StepFailed):
            raise StepFailed(str(exc)) from None
        raise StepFailed(f"step {name} failed: {type(exc).__name__}: {exc}") from None
    if name not in ("start", "finish"):
        records = [record.model_dump(mode="json") for record in step_records(value)]
        output = to_jsonable_python(value)
        if isinstance(value, tuple) and records:  # the records are reported on their own
            output = output[0]
        await store.add_event(campaign_id, "step_finished", name,
                              {"output": output, "records": records})  # fmt: skip
    return value


async def _flushed_step(
    campaign_id: str, feeds: tuple[EventFeed, ...], name: str, call: Callable[[], Awaitable[T]]
) -> T:
    """A campaign step whose live updates (copy deltas, image progress) are all written
    before its `step_finished` (or `step_failed`) event."""

    async def then_flush() -> T:
        try:
            return await call()
        finally:
            for feed in feeds:
                await feed.flush()

    return await _campaign_step(campaign_id, name, then_flush)


@DBOS.step(name="sparklio.campaign.quiet")
async def _quiet_step(call: Callable[[], Awaitable[T]]) -> T:
    """A step of the campaign's own bookkeeping (no step events): done once, replayed after."""
    return await call()


@DBOS.workflow(name="sparklio.campaign")
async def campaign_workflow(campaign_id: str) -> str:
    """A campaign, durable: see CampaignEngine.execute."""
    return await _engine().execute(campaign_id)

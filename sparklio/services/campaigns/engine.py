"""Campaigns as DBOS durable workflows: each agent call of `run_campaign` is a DBOS step.

DBOS checkpoints every finished step's output in its system database (SQLite in
SPARKLIO_HOME, or the app's PostgreSQL); after a crash, launching DBOS again recovers the
workflow, replays the recorded outputs, and runs only the steps that had not finished.

DBOS is one per process (a singleton with a global registry of workflows), so one app at a
time owns it: the server launches it once its database answers when campaigns are
unfinished (recovery happens there), any app else on its first campaign; `close` destroys
it. A step reaches the models like any client, through the gateway clients over the app
itself (httpx.ASGITransport), with a token of the campaign's owner, so the call log
attributes every call to them.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

import httpx
from dbos import DBOS, SetWorkflowID
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import make_url
from starlette.types import ASGIApp

from sparklio.agents.base import StepRecord
from sparklio.agents.pipeline import Decision, run_campaign
from sparklio.core.config import Settings
from sparklio.exceptions import AgentError, ServiceUnavailableError
from sparklio.services.auth import AuthService
from sparklio.services.campaigns.store import FINISHED, CampaignStore
from sparklio.services.clients.llm_client import LLMGatewayClient
from sparklio.services.clients.media_client import MediaGatewayClient
from sparklio.wire.brand import BrandKit

log = logging.getLogger("sparklio.campaigns")
T = TypeVar("T")

#: The topic of the messages that carry a reviewer's decision to a paused campaign.
REVIEW_TOPIC = "review"
#: Seconds one wait for a review lasts before it is taken up again (it waits on).
REVIEW_WAIT = 3600.0

#: The engine DBOS runs campaigns for in this process (DBOS is a process-wide singleton).
_current: CampaignEngine | None = None


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

    def bind(self, app: ASGIApp) -> None:
        """The app whose gateway the steps call (set once create_app has built it)."""
        self.app = app

    def system_database_url(self) -> str:
        """DBOS's own tables: in the app's PostgreSQL when it has one, else SQLite in HOME."""
        url = self.settings.database_url or ""
        if url.startswith("postgresql"):
            return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        return f"sqlite:///{self.settings.home / 'workflows.sqlite'}"

    def start(self, *, if_free: bool = False) -> None:
        """Launch DBOS for this app, which recovers the campaigns a stop left unfinished.
        Called in the event loop the campaigns run on (DBOS runs async workflows there).
        `if_free`: quietly do nothing when another app of this process has it."""
        global _current
        if self.launched:
            return
        if _current is not None:
            if if_free:
                return
            raise ServiceUnavailableError(
                "Another Sparklio app in this process runs the campaigns; close it first"
            )
        _log_to_current_stderr()
        # a short poll: DBOS.destroy waits out one (1 s by default) for every app closed
        DBOS(config={"name": "sparklio", "system_database_url": self.system_database_url(),
                     "log_level": "WARNING",
                     "notification_listener_polling_interval_sec": 0.1})  # fmt: skip
        _current = self
        try:
            DBOS.launch()
        except BaseException:
            _current = None
            DBOS.destroy()
            raise
        self.launched = True

    async def recover(self) -> None:
        """For the server once its database answers (one that hangs must not hold up the
        start): launch DBOS now if a stop left campaigns unfinished, which resumes them;
        otherwise the first campaign launches it (no DBOS threads in a server without any)."""
        if await self.store.unfinished():
            self.start(if_free=True)

    def close(self) -> None:
        """Stop DBOS; unfinished campaigns stay pending, for the next start to recover."""
        global _current
        if not self.launched:
            return
        self.launched = False
        _current = None
        DBOS.destroy()

    async def submit(self, campaign_id: str) -> None:
        """Start the campaign's workflow (its id is the campaign's: starting twice is once)."""
        self.start()
        with SetWorkflowID(campaign_id):
            await DBOS.start_workflow_async(campaign_workflow, campaign_id)

    async def cancel(self, campaign_id: str) -> bool:
        """Cancel the campaign: no step starts after this. False when it had finished."""
        if not await self.store.set_status(campaign_id, "cancelled", "cancelled"):
            return False
        if self.launched:
            await DBOS.cancel_workflow_async(campaign_id)
        return True

    async def execute(self, campaign_id: str) -> str:
        """The workflow's body: run the pipeline, each step durable; the final status."""
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
        try:
            async with (
                LLMGatewayClient(**connection) as llm,
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
                    runner=partial(_campaign_step, campaign_id),
                    gate=partial(self._gate, campaign_id) if manual else None,
                )
        except StepFailed as exc:
            await _campaign_step(
                campaign_id, "finish", partial(self._failed, campaign_id, str(exc))
            )
            return "failed"
        result = campaign.model_dump(mode="json")
        await _campaign_step(campaign_id, "finish", partial(self._succeeded, campaign_id, result))
        return "succeeded"

    async def _gate(self, campaign_id: str, gate: str, shown: dict[str, Any]) -> Decision:
        """A pause for a reviewer: the campaign awaits review until a message on its
        REVIEW_TOPIC (POST .../review) says what to do. DBOS keeps the message, so a
        paused campaign waits on across a restart, and a replay reads the same answer."""
        await _quiet_step(partial(self._pause, campaign_id, gate, shown))
        message = None
        while message is None:  # None: the wait timed out; wait on (no step ran meanwhile)
            message = await DBOS.recv_async(REVIEW_TOPIC, timeout_seconds=REVIEW_WAIT)
        return Decision.model_validate(message)

    async def _pause(self, campaign_id: str, gate: str, shown: dict[str, Any]) -> None:
        await self.store.set_status(campaign_id, "awaiting_review", "awaiting_review",
                                    data={"gate": gate, **shown})  # fmt: skip

    async def review(self, campaign_id: str, decision: Decision, event_id: int) -> None:
        """Hand a reviewer's decision to the paused campaign (`event_id`: its pause's
        event, so that the same review is never delivered twice)."""
        self.start()
        await DBOS.send_async(campaign_id, decision.model_dump(mode="json"), REVIEW_TOPIC,
                              idempotency_key=f"{campaign_id}:review:{event_id}")  # fmt: skip

    async def _started(self) -> None:
        pass  # the "start" step's event is what it is for

    async def _succeeded(self, campaign_id: str, result: dict[str, Any]) -> None:
        await self.store.set_status(campaign_id, "succeeded", "done", result=result,
                                    data={"status": result["status"]})  # fmt: skip

    async def _failed(self, campaign_id: str, message: str) -> None:
        await self.store.set_status(campaign_id, "failed", "failed", error={"message": message},
                                    data={"message": message})  # fmt: skip


def _log_to_current_stderr() -> None:
    """DBOS's console handler keeps the sys.stderr of its first launch; a later launch flushes
    it, which fails once that stream is closed (a test runner's capture, a finished command's
    redirect). Point it at the stderr of now."""
    for handler in logging.getLogger("dbos").handlers:
        if isinstance(handler, logging.StreamHandler) and type(handler) is logging.StreamHandler:
            handler.stream = sys.stderr


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


@DBOS.step(name="sparklio.campaign.quiet")
async def _quiet_step(call: Callable[[], Awaitable[T]]) -> T:
    """A step of the campaign's own bookkeeping (no step events): done once, replayed after."""
    return await call()


@DBOS.workflow(name="sparklio.campaign")
async def campaign_workflow(campaign_id: str) -> str:
    """A campaign, durable: see CampaignEngine.execute."""
    return await _engine().execute(campaign_id)

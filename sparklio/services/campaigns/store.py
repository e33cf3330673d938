"""The campaigns table and its events: what the API lists and streams, what the workflow writes.

Event ids come from one autoincrement column, so within a campaign they only grow: they are
the server-sent events' ids, and `Last-Event-ID` resumes after one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker

from sparklio.db.models import CampaignEvent, CampaignRow, new_id, now

#: A campaign in one of these states is over: nothing more happens to it.
FINISHED = ("succeeded", "failed", "cancelled")
#: The events that end a campaign's stream.
LAST_EVENTS = ("done", "failed", "cancelled")


class CampaignStore:
    """Reads and writes campaigns and their events on the app's database."""

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self.sessions = sessions

    async def create(self, user_id: str, brief: str, options: dict[str, Any]) -> CampaignRow:
        moment = now()
        row = CampaignRow(id=new_id(), user_id=user_id, status="queued", brief=brief,
                          options=options, created_at=moment, updated_at=moment)  # fmt: skip
        async with self.sessions() as session, session.begin():
            session.add(row)
            await session.flush()  # no relationship orders the inserts: the row goes first
            session.add(CampaignEvent(campaign_id=row.id, type="queued", data={}))
        return row

    async def get(self, campaign_id: str) -> CampaignRow | None:
        async with self.sessions() as session:
            row: CampaignRow | None = await session.get(CampaignRow, campaign_id)
            return row

    async def unfinished(self) -> bool:
        """Whether any campaign is queued or running (a stop may have left it so)."""
        query = select(CampaignRow.id).where(CampaignRow.status.not_in(FINISHED)).limit(1)
        async with self.sessions() as session:
            return (await session.scalar(query)) is not None

    async def owned_by(self, user_id: str, limit: int, offset: int) -> list[CampaignRow]:
        query = (
            select(CampaignRow)
            .where(CampaignRow.user_id == user_id)
            .order_by(CampaignRow.created_at.desc(), CampaignRow.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def costs(self, campaign_ids: list[str]) -> dict[str, float]:
        """Each campaign's cost so far (USD), in one query: per step, what its last finished
        run's records cost, as GET /api/v1/campaigns/{id} totals it."""
        query = (
            select(CampaignEvent.campaign_id, CampaignEvent.step, CampaignEvent.data)
            .where(CampaignEvent.campaign_id.in_(campaign_ids),
                   CampaignEvent.type == "step_finished")
            .order_by(CampaignEvent.id)
        )  # fmt: skip
        steps: dict[str, dict[str | None, float]] = {i: {} for i in campaign_ids}
        if campaign_ids:
            async with self.sessions() as session:
                for campaign_id, step, data in (await session.execute(query)).all():
                    records = data.get("records", []) if isinstance(data, dict) else []
                    cost = sum(r.get("cost_usd", 0.0) for r in records if isinstance(r, dict))
                    steps[campaign_id][step] = round(cost, 10)
        return {i: round(sum(costs.values()), 10) for i, costs in steps.items()}

    async def events(self, campaign_id: str, after: int = 0) -> list[CampaignEvent]:
        query = (
            select(CampaignEvent)
            .where(CampaignEvent.campaign_id == campaign_id, CampaignEvent.id > after)
            .order_by(CampaignEvent.id)
        )
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def add_event(
        self,
        campaign_id: str,
        kind: str,
        step: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        async with self.sessions() as session, session.begin():
            session.add(
                CampaignEvent(campaign_id=campaign_id, type=kind, step=step, data=data or {})
            )

    async def set_status(
        self,
        campaign_id: str,
        status: str,
        event: str,
        *,
        data: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> bool:
        """Move an unfinished campaign to `status` and log `event`, in one transaction;
        False (nothing written) when it had already finished, e.g. was cancelled."""
        moment = now()
        values: dict[str, Any] = {"status": status, "updated_at": moment}
        if status == "running" and event == "started":
            values["started_at"] = moment
        if status in FINISHED:
            values["finished_at"] = moment
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error
        async with self.sessions() as session, session.begin():
            changed = await session.execute(
                update(CampaignRow)
                .where(CampaignRow.id == campaign_id, CampaignRow.status.not_in(FINISHED))
                .values(**values)
            )
            if not changed.rowcount:
                return False
            session.add(CampaignEvent(campaign_id=campaign_id, type=event, data=data or {}))
        return True

    async def take_review(self, campaign_id: str, data: dict[str, Any]) -> bool:
        """Move a campaign awaiting review back to running and log the `review` event, in
        one transaction; False when it was not awaiting one (so one review per pause)."""
        async with self.sessions() as session, session.begin():
            changed = await session.execute(
                update(CampaignRow)
                .where(CampaignRow.id == campaign_id, CampaignRow.status == "awaiting_review")
                .values(status="running", updated_at=now())
            )
            if not changed.rowcount:
                return False
            session.add(CampaignEvent(campaign_id=campaign_id, type="review", data=data))
        return True

    async def event(self, campaign_id: str, event_id: int) -> CampaignEvent | None:
        async with self.sessions() as session:
            event: CampaignEvent | None = await session.get(CampaignEvent, event_id)
        return event if event is not None and event.campaign_id == campaign_id else None

    async def review_of(self, campaign_id: str, pause_id: int) -> CampaignEvent | None:
        """The review that answered the pause `pause_id` (an awaiting_review event)."""
        query = (
            select(CampaignEvent)
            .where(CampaignEvent.campaign_id == campaign_id, CampaignEvent.type == "review",
                   CampaignEvent.id > pause_id)
            .order_by(CampaignEvent.id)
        )  # fmt: skip
        async with self.sessions() as session:
            reviews = (await session.scalars(query)).all()
        return next((r for r in reviews if r.data.get("pause") == pause_id), None)

    async def reviewed_unresumed(self) -> list[tuple[str, CampaignEvent]]:
        """Running campaigns whose last event is a review: each with the pause it answered
        (its fork may not exist: the process that took the review stopped before forking)."""
        latest = (
            select(CampaignEvent.campaign_id, func.max(CampaignEvent.id).label("last"))
            .join(CampaignRow, CampaignRow.id == CampaignEvent.campaign_id)
            .where(CampaignRow.status == "running")
            .group_by(CampaignEvent.campaign_id)
            .subquery()
        )
        query = (
            select(CampaignEvent)
            .join(latest, CampaignEvent.id == latest.c.last)
            .where(CampaignEvent.type == "review")
        )
        found = []
        async with self.sessions() as session:
            for review in (await session.scalars(query)).all():
                pause = await session.get(CampaignEvent, review.data.get("pause"))
                if pause is not None and pause.type == "awaiting_review":
                    found.append((review.campaign_id, pause))
        return found

    async def last_event(self, campaign_id: str, kind: str) -> CampaignEvent | None:
        query = (
            select(CampaignEvent)
            .where(CampaignEvent.campaign_id == campaign_id, CampaignEvent.type == kind)
            .order_by(CampaignEvent.id.desc())
            .limit(1)
        )
        async with self.sessions() as session:
            event: CampaignEvent | None = await session.scalar(query)
            return event


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)

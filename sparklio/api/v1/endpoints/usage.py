"""`GET /api/v1/usage`: calls, errors, fallbacks, tokens, cost and latency from the call log."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, get_args

from fastapi import APIRouter, Query
from starlette.responses import Response

from sparklio.api.budgets import BudgetsDep
from sparklio.api.deps import SessionsDep
from sparklio.api.responses import json_response
from sparklio.exceptions import InvalidRequestError
from sparklio.services.usage import GroupBy, usage_report

router = APIRouter(prefix="/usage", tags=["usage"])

DEFAULT_WINDOW = timedelta(hours=24)
ALLOWED_GROUPS: tuple[str, ...] = get_args(GroupBy)
#: The window's bounds when a date is at the end of what datetime can hold (years 1 to 9999).
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)
_WHEN_HELP = "ISO 8601 date or datetime (e.g. 2024-05-01 or 2024-05-01T09:00:00Z); UTC if no zone"


def shift(moment: datetime, delta: timedelta) -> datetime:
    """`moment + delta`, held at the first or last moment a datetime can hold: the day after
    9999-12-31 has no datetime, and everything logged is before it anyway."""
    try:
        return moment + delta
    except OverflowError:
        return LATEST if delta > timedelta(0) else EARLIEST


def parse_when(value: str, name: str, *, end: bool = False) -> datetime:
    """An ISO 8601 datetime (UTC when it names no zone), or a date: its start, or for the
    end of a window, the start of the next day (so `to=2024-05-01` includes that day)."""
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return shift(start, timedelta(days=1)) if end else start
    # an unescaped '+' in a query string arrives as a space: "09:00:00 02:00"
    for candidate in (text, text.replace(" ", "+")):
        try:
            when = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        if when.tzinfo is None:
            return when.replace(tzinfo=UTC)
        try:
            return when.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 in UTC is in year 0
            return EARLIEST if when.year == 1 else LATEST
    raise InvalidRequestError(
        f"{name} must be an {_WHEN_HELP} (got {value!r}).",
        details=[{"field": name, "problem": f"not an {_WHEN_HELP}"}],
    )


@router.get(
    "",
    response_class=Response,
    responses={
        200: {"description": "Per group and in total: calls, errors, fallbacks, tokens, "
              "cost_usd, latency_ms p50/p95, and the response cache's cache_hits, "
              "saved_tokens and saved_usd; by user, also each user's limits (used, "
              "remaining).",
              "content": {"application/json": {"schema": {"type": "object"}}}},
        422: {"description": "from, to or group_by is not valid."},
    },
)  # fmt: skip
async def usage(
    sessions: SessionsDep,
    budgets: BudgetsDep,
    from_: Annotated[
        str | None, Query(alias="from", description=f"Start, inclusive: {_WHEN_HELP}.")
    ] = None,
    to: Annotated[
        str | None, Query(description=f"End, exclusive (a date: through that day): {_WHEN_HELP}.")
    ] = None,
    group_by: Annotated[
        str,
        Query(
            description="role, task, provider, model or user.",
            json_schema_extra={"enum": list(ALLOWED_GROUPS)},
        ),
    ] = "role",
) -> Response:
    """Usage of the gateway over a window (default: the last 24 hours)."""
    if group_by not in ALLOWED_GROUPS:
        raise InvalidRequestError(
            f"group_by must be one of {', '.join(ALLOWED_GROUPS)} (got {group_by!r}).",
            details=[{"field": "group_by", "allowed": list(ALLOWED_GROUPS)}],
        )
    end = parse_when(to, "to", end=True) if to else datetime.now(UTC)
    start = parse_when(from_, "from") if from_ else shift(end, -DEFAULT_WINDOW)
    if start >= end:
        raise InvalidRequestError(
            f"from must be before to (got from={start.isoformat()}, to={end.isoformat()})."
        )
    report: dict[str, Any] = await usage_report(sessions, start, end, group_by)
    if group_by == "user" and budgets is not None:
        # each user's limits as they stand now: what of each is used and what remains
        for group in report["groups"]:
            if group["key"] is not None:
                group["limits"] = await budgets.report(await budgets.account(group["key"], None))
    return json_response(report)

"""Usage: what the gateway's calls cost and how they went, per role, task, provider, model or
user, over a time window, from the `llm_calls` table. Calls answered from the response cache
count no tokens and no cost; `cache_hits`, `saved_tokens` and `saved_usd` say what they saved.

Counts and sums are one GROUP BY. Latency percentiles are exact, interpolated linearly
between the two nearest ranks (as PostgreSQL's `percentile_cont` and numpy's default do):
SQLite has no percentile function, so a window query ranks each group's latencies and
returns only the rows at the ranks needed, at most four per group, whatever its size.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, case, func, literal, or_, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from sparklio.db.models import LLMCall

GroupBy = Literal["role", "task", "provider", "model", "user"]
GROUP_COLUMNS: dict[str, Any] = {
    "role": LLMCall.role,
    "task": LLMCall.task,
    "provider": LLMCall.provider,
    "model": LLMCall.model,
    "user": LLMCall.user_id,
}
#: the percentiles reported, in hundredths
PERCENTILES = {"p50": 50, "p95": 95}


async def usage_report(
    sessions: async_sessionmaker[Any], start: datetime, end: datetime, group_by: str
) -> dict[str, Any]:
    """Calls in [start, end) grouped by `group_by`, busiest group first, and their total."""
    key = GROUP_COLUMNS[group_by]
    window = and_(LLMCall.created_at >= start, LLMCall.created_at < end)
    sums = (
        select(
            key.label("key"),
            func.count().label("calls"),
            func.sum(case((LLMCall.outcome != "ok", 1), else_=0)).label("errors"),
            func.sum(case((LLMCall.fallback.is_(True), 1), else_=0)).label("fallbacks"),
            func.sum(LLMCall.prompt_tokens).label("prompt_tokens"),
            func.sum(LLMCall.completion_tokens).label("completion_tokens"),
            func.sum(LLMCall.cost_usd).label("cost_usd"),
            func.sum(case((LLMCall.cache == "hit", 1), else_=0)).label("cache_hits"),
            func.sum(LLMCall.saved_tokens).label("saved_tokens"),
            func.sum(LLMCall.saved_usd).label("saved_usd"),
        )
        .where(window)
        .group_by(key)
    )
    async with sessions() as session:
        rows = (await session.execute(sums)).all()
        by_group = await session.execute(_ranked(key, window))
        latencies = _percentiles(by_group.all())
        overall = _percentiles((await session.execute(_ranked(None, window))).all())
    groups = [
        _group(row.key, row._mapping, latencies.get(row.key, {}))
        for row in sorted(rows, key=lambda r: (-r.calls, str(r.key)))
    ]
    fields = ("calls", "errors", "fallbacks", "prompt_tokens", "completion_tokens", "cost_usd",
              "cache_hits", "saved_tokens", "saved_usd")  # fmt: skip
    total = {name: sum(row._mapping[name] or 0 for row in rows) for name in fields}
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "groups": groups,
        "total": {
            k: v for k, v in _group(None, total, overall.get(None, {})).items() if k != "key"
        },
    }


def _group(key: Any, sums: Any, latency: dict[str, float]) -> dict[str, Any]:
    prompt, completion = int(sums["prompt_tokens"] or 0), int(sums["completion_tokens"] or 0)
    return {
        "key": key,
        "calls": int(sums["calls"] or 0),
        "errors": int(sums["errors"] or 0),
        "fallbacks": int(sums["fallbacks"] or 0),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost_usd": round(float(sums["cost_usd"] or 0.0), 10),
        # answered from the response cache: no tokens counted, and what they would have cost
        "cache_hits": int(sums["cache_hits"] or 0),
        "saved_tokens": int(sums["saved_tokens"] or 0),
        "saved_usd": round(float(sums["saved_usd"] or 0.0), 10),
        "latency_ms": {name: latency.get(name) for name in PERCENTILES},
    }


def _ranked(key: Any, window: ColumnElement[bool]) -> Any:
    """Each group's latencies at the ranks the percentiles fall between (1-based ranks
    floor(h) + 1 and ceil(h) + 1 for h = (n - 1) * p; integer arithmetic in both databases)."""
    partition = [key] if key is not None else None
    ranked = (
        select(
            (key if key is not None else literal(None)).label("key"),
            LLMCall.latency_ms.label("value"),
            func.row_number()
            .over(partition_by=partition, order_by=(LLMCall.latency_ms, LLMCall.id))
            .label("rank"),
            func.count().over(partition_by=partition).label("n"),
        )
        .where(window)
        .subquery()
    )
    n, rank = ranked.c.n, ranked.c.rank
    wanted = []
    for hundredths in PERCENTILES.values():
        scaled = (n - 1) * hundredths
        wanted += [rank == scaled // 100 + 1, rank == (scaled + 99) // 100 + 1]
    return select(ranked.c.key, ranked.c.n, ranked.c.rank, ranked.c.value).where(or_(*wanted))


def _percentiles(rows: Any) -> dict[Any, dict[str, float]]:
    """{key: {"p50": ms, "p95": ms}} from the rows `_ranked` returns."""
    values: dict[Any, dict[int, float]] = defaultdict(dict)
    counts: dict[Any, int] = {}
    for row in rows:
        values[row.key][int(row.rank)] = float(row.value)
        counts[row.key] = int(row.n)
    result: dict[Any, dict[str, float]] = {}
    for group, ranks in values.items():
        scaled_n = counts[group] - 1
        result[group] = {}
        for name, hundredths in PERCENTILES.items():
            low, rest = divmod(scaled_n * hundredths, 100)
            below, above = ranks[low + 1], ranks[low + 1 + (rest > 0)]
            result[group][name] = round(below + (above - below) * rest / 100, 3)
    return result


__all__ = ["GROUP_COLUMNS", "PERCENTILES", "GroupBy", "usage_report"]

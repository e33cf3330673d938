"""Budget overspend: 50 concurrent calls against a daily USD budget that allows 10, with the
in-memory counters (one process) and with Redis (two gateway apps on one Redis and one
database, the calls spread over both; skipped if Redis does not answer).

The mock model is priced in a routing file written here, so every call costs the same; the
calls pass `max_tokens` equal to the answer's real length, so the gateway's reservation is
close to (and not below) what a call costs. For each backend: how many calls were answered,
what they cost against the budget, and the overspend (in USD and in calls). Then, one call at
a time until refused, what the budget ends up spending once nothing is in flight. Prints a
table; not a test. The target (issue 14): overspend at most one call's cost.

    .venv/bin/python bench/budget_overspend.py [--calls 50] [--redis-url redis://host:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparklio.core.config import Settings  # noqa: E402
from sparklio.main import close_app, create_app  # noqa: E402

ROUTING = """\
version: 1
tasks:
  copywriter: [channel_copy]
modes:
  mock:
    default:
      - {provider: mock, model: mock-v1}
prices:
  mock:
    mock-v1: {input: 1000, output: 3000}
"""
CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "mode": "text",
    "payload": {"product": "Dawon green tea"},
}


async def client_on(app: Any) -> httpx.AsyncClient:
    token = await app.state.services.auth.local_token()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip


async def run(home: Path, apps_count: int, calls: int, **env: Any) -> dict[str, Any]:
    routing = home / "routing.yaml"
    home.mkdir(parents=True)  # noqa: ASYNC240 - before anything runs
    routing.write_text(ROUTING)
    settings = Settings(_env_file=None, sparklio_home=home, log_level="warning",
                        llm_routing_file=routing, **env)  # fmt: skip
    apps = [create_app(settings) for _ in range(apps_count)]
    clients = [await client_on(app) for app in apps]
    try:
        first = (await clients[0].post("/api/v1/llm/generate", json=CALL)).json()
        cost, completion = first["meta"]["cost_usd"], first["usage"]["completion_tokens"]
        budget = cost * 10
        made = await clients[0].post(
            "/api/v1/auth/api-keys", json={"name": "bench", "limits": {"usd_per_day": budget}}
        )
        key = made.json()["key"]
        body = {**CALL, "options": {"max_tokens": completion}}
        headers = {"Authorization": f"Bearer {key}"}

        async def one(i: int) -> httpx.Response:
            return await clients[i % len(clients)].post("/api/v1/llm/generate", json=body,
                                                        headers=headers)  # fmt: skip

        burst = await asyncio.gather(*(one(i) for i in range(calls)))
        spent = [r.json()["meta"]["cost_usd"] for r in burst if r.status_code == 200]
        answered = len(spent)
        burst_spent = sum(spent)
        while (r := await one(0)).status_code == 200:
            spent.append(r.json()["meta"]["cost_usd"])
        return {"cost": cost, "budget": budget, "answered": answered, "burst": burst_spent,
                "after": len(spent), "total": sum(spent)}  # fmt: skip
    finally:
        for client in clients:
            await client.aclose()
        for app in apps:
            await close_app(app)


def line(name: str, row: dict[str, Any], calls: int) -> str:
    over = row["total"] - row["budget"]
    return (f"{name:<22} {calls:>5} {row['answered']:>8} {row['burst'] / row['budget']:>8.2%} "
            f"{row['after']:>7} {row['total'] / row['budget']:>8.2%} "
            f"{max(0.0, over):>12.8f} {max(0.0, over) / row['cost']:>6.2f}")  # fmt: skip


async def redis_answers(url: str) -> bool:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args(argv)
    print(f"{'counters':<22} {'calls':>5} {'answered':>8} {'of budg.':>8} {'+serial':>7} "
          f"{'spent':>8} {'overspend $':>12} {'calls':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        row = await run(Path(tmp) / "memory", 1, args.calls)
        print(line("memory, 1 app", row, args.calls))
        if await redis_answers(args.redis_url):
            prefix = f"bench-budget-{uuid.uuid4().hex}:"
            try:
                row = await run(Path(tmp) / "redis", 2, args.calls, redis_url=args.redis_url,
                                budget_prefix=prefix)  # fmt: skip
                print(line("redis, 2 apps", row, args.calls))
            finally:
                from redis.asyncio import Redis

                client = Redis.from_url(args.redis_url)
                keys = [k async for k in client.scan_iter(match=prefix + "*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()
        else:
            print(f"redis    (skipped: nothing answers at {args.redis_url})")
    print(
        "answered: of the burst; of budg.: what the burst spent; +serial: answered in all "
        "after one call at a time until refused; overspend in USD and in calls' cost."
    )


if __name__ == "__main__":
    asyncio.run(main())

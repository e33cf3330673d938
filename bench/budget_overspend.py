"""Budget overspend: 50 concurrent calls against a daily USD budget that allows 10, with the
in-memory counters (one process), with Redis shared by two gateway apps in this process (one
database, the calls spread over both), and with Redis shared by two `sparklio serve`
processes on one PostgreSQL (a fresh database in the cluster of `--postgres`, dropped
after), the calls spread over both as a load balancer would. The Redis runs are skipped if
Redis does not answer, the processes' run also if PostgreSQL does not.

The mock model is priced in a routing file written here, so every call costs the same; the
calls pass `max_tokens` equal to the answer's real length, so the gateway's reservation is
close to (and not below) what a call costs. For each backend: how many calls were answered,
what they cost against the budget, and the overspend (in USD and in calls). Then, one call at
a time until refused, what the budget ends up spending once nothing is in flight. Prints a
table; not a test. The target (issue 14): overspend at most one call's cost.

    .venv/bin/python bench/budget_overspend.py [--calls 50] [--redis-url redis://host:6379/0]
                                               [--postgres postgresql+asyncpg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from campaigns import fresh_database  # noqa: E402
from gateway_overhead import gateway_key, redis_answers, serving  # noqa: E402

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
    """`apps_count` gateway apps in this process, on one database (and Redis, in `env`)."""
    routing = home / "routing.yaml"
    home.mkdir(parents=True)  # noqa: ASYNC240 - before anything runs
    routing.write_text(ROUTING)
    settings = Settings(_env_file=None, sparklio_home=home, log_level="warning",
                        llm_routing_file=routing, **env)  # fmt: skip
    apps = [create_app(settings) for _ in range(apps_count)]
    clients = [await client_on(app) for app in apps]
    try:
        return await overspend(clients, calls)
    finally:
        for client in clients:
            await client.aclose()
        for app in apps:
            await close_app(app)


async def overspend(clients: list[httpx.AsyncClient], calls: int) -> dict[str, Any]:
    """One call's cost (by the clients' own user, unlimited), then a key of that user whose
    daily budget allows 10 such calls, `calls` calls at once with it spread over `clients`,
    then one at a time (on each client in turn) until refused."""
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
    other = [r.status_code for r in burst if r.status_code not in (200, 429)]
    if other:
        raise SystemExit(f"calls answered neither 200 nor 429: {sorted(set(other))}")
    spent = [r.json()["meta"]["cost_usd"] for r in burst if r.status_code == 200]
    answered = len(spent)
    burst_spent = sum(spent)
    turn = 0
    while (r := await one(turn)).status_code == 200:
        spent.append(r.json()["meta"]["cost_usd"])
        turn += 1
    return {"cost": cost, "budget": budget, "answered": answered, "burst": burst_spent,
            "after": len(spent), "total": sum(spent)}  # fmt: skip


def run_processes(tmp: Path, count: int, calls: int, redis_url: str, url: str,
                  prefix: str) -> dict[str, Any]:  # fmt: skip
    """The same measure against `count` `sparklio serve` processes on one PostgreSQL
    database (`url`) and one Redis."""
    routing = tmp / "routing.yaml"
    routing.write_text(ROUTING)
    # one JWT secret, as every process of one deployment has: a token of one is good on all
    secret = os.environ.setdefault("JWT_SECRET", uuid.uuid4().hex * 2)
    env = {**os.environ, "LOG_LEVEL": "warning", "GENERATOR_MODE": "mock",
           "LLM_ROUTING_FILE": str(routing), "DATABASE_URL": url, "REDIS_URL": redis_url,
           "JWT_SECRET": secret}  # fmt: skip
    for name in ("BUDGET_PREFIX", "GUARD_PREFIX", "CACHE_PREFIX", "REDIS_AUTH_PREFIX",
                 "REDIS_MEDIA_PREFIX"):  # fmt: skip
        env[name] = f"{prefix}{name.lower().removesuffix('_prefix')}:"
    (tmp / "keys").mkdir()
    with serving(count, env, tmp) as ports:
        token = gateway_key({**env, "SPARKLIO_HOME": str(tmp / "keys")})

        async def measure() -> dict[str, Any]:
            clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                         headers={"Authorization": f"Bearer {token}"})
                       for port in ports]  # fmt: skip
            try:
                return await overspend(clients, calls)
            finally:
                for client in clients:
                    await client.aclose()

        return asyncio.run(measure())


def line(name: str, row: dict[str, Any], calls: int) -> str:
    over = row["total"] - row["budget"]
    return (f"{name:<22} {calls:>5} {row['answered']:>8} {row['burst'] / row['budget']:>8.2%} "
            f"{row['after']:>7} {row['total'] / row['budget']:>8.2%} "
            f"{max(0.0, over):>12.8f} {max(0.0, over) / row['cost']:>6.2f}")  # fmt: skip


async def forget(url: str, prefix: str) -> None:
    """Delete this run's keys from Redis."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--postgres",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="the cluster the processes' run makes its database in",
    )
    args = parser.parse_args(argv)
    print(f"{'counters':<22} {'calls':>5} {'answered':>8} {'of budg.':>8} {'+serial':>7} "
          f"{'spent':>8} {'overspend $':>12} {'calls':>6}")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        row = asyncio.run(run(tmp / "memory", 1, args.calls))
        print(line("memory, 1 app", row, args.calls))
        if not asyncio.run(redis_answers(args.redis_url)):
            print(f"redis    (skipped: nothing answers at {args.redis_url})")
            return
        prefix = f"bench-budget-{uuid.uuid4().hex}:"
        try:
            row = asyncio.run(run(tmp / "redis", 2, args.calls, redis_url=args.redis_url,
                                  budget_prefix=prefix))  # fmt: skip
            print(line("redis, 2 apps", row, args.calls))
            with ExitStack() as stack:
                try:
                    url = stack.enter_context(fresh_database(args.postgres))
                except Exception as exc:
                    print(f"redis, 2 processes (skipped: PostgreSQL at {args.postgres}: {exc})")
                    return
                (tmp / "processes").mkdir()
                row = run_processes(tmp / "processes", 2, args.calls, args.redis_url, url,
                                    prefix)  # fmt: skip
                print(line("redis, 2 processes", row, args.calls))
        finally:
            asyncio.run(forget(args.redis_url, prefix))
    print(
        "answered: of the burst; of budg.: what the burst spent; +serial: answered in all "
        "after one call at a time until refused; overspend in USD and in calls' cost."
    )


if __name__ == "__main__":
    main()

"""Campaigns: throughput and duration of durable campaigns over HTTP, and what the durable
engine adds to each step.

1. durable: `sparklio serve` in mock mode (a fresh temporary SPARKLIO_HOME), N campaigns
   submitted with POST /api/v1/campaigns, at most C under way at a time, each followed by
   polling GET /api/v1/campaigns/{id} until it is finished. Reports campaigns per minute,
   p50/p95 of the campaign's own duration_s, and succeeded/failed counts.
2. direct: the same pipeline (sparklio.agents.pipeline.run_campaign) in this process, through
   LLMGatewayClient/MediaGatewayClient on an in-process app (as `sparklio campaign` does
   without --gateway), N campaigns with the same concurrency, no durable engine.

3. with `--workers N`: the durable run again on PostgreSQL (a fresh database made in the
   cluster of `--postgres`, dropped after), first the server alone, then the server and N
   `sparklio worker` processes sharing its queue. Reports the same figures, which process ran
   how many campaigns (DBOS's own record), and whether any campaign started twice or was lost.

The overhead per step is compared as (campaign time / its number of steps), durable vs
direct; a step is one call of the pipeline's StepRunner (brief, brand, strategist, one per
channel of copy, concepts, images, review, ...), the unit the durable engine checkpoints.
Traffic goes only to 127.0.0.1. Prints tables; not a test.

    .venv/bin/python bench/campaigns.py [--campaigns 20] [--concurrency 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_overhead import free_port, gateway, gateway_key, pin

T = TypeVar("T")
BRIEF = {
    "brief": "Launch Dawon green tea to office workers who want a calm afternoon, on "
    "Instagram and a newsletter. Never use 'miracle'.",
    "product_facts": {"origin": "Jeju", "sugar": "none"},
}
FINISHED = ("succeeded", "failed", "cancelled")
POLL = 0.05  # seconds between two looks at a campaign under way


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    at = (len(ordered) - 1) * q
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


# -- durable: over HTTP against `sparklio serve` --------------------------------------------


async def follow_one(client: httpx.AsyncClient, limit: asyncio.Semaphore) -> dict[str, Any]:
    async with limit:
        started = time.perf_counter()
        answer = await client.post("/api/v1/campaigns", json=BRIEF)
        if answer.status_code != 202:
            raise SystemExit(f"POST /api/v1/campaigns: {answer.status_code} {answer.text[:300]}")
        campaign_id = answer.json()["id"]
        while True:
            body = (await client.get(f"/api/v1/campaigns/{campaign_id}")).raise_for_status().json()
            if body["status"] in FINISHED:
                break
            await asyncio.sleep(POLL)
        return {
            "id": campaign_id,
            "status": body["status"],
            "duration_s": body["duration_s"],
            "steps": len(body["steps"]),
            "wall_s": time.perf_counter() - started,
            "error": body.get("error"),
        }


async def run_durable(port: int, key: str, campaigns: int, concurrency: int) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(120.0, connect=5.0),
    ) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(follow_one(client, limit) for _ in range(campaigns)))
        return {"elapsed_s": time.perf_counter() - started, "runs": results}


# -- direct: run_campaign in this process, no durable engine --------------------------------


async def run_direct(home: Path, campaigns: int, concurrency: int) -> dict[str, Any]:
    from sparklio.agents.pipeline import run_campaign
    from sparklio.api.deps import services_of
    from sparklio.core.config import Settings
    from sparklio.main import close_app, create_app
    from sparklio.services.clients.llm_client import LLMGatewayClient
    from sparklio.services.clients.media_client import MediaGatewayClient

    settings = Settings(_env_file=None, sparklio_home=home, generator_mode="mock")
    api = create_app(settings)
    limit = asyncio.Semaphore(concurrency)
    try:
        key = await services_of(api).auth.local_token()
        connection: dict[str, Any] = {
            "base_url": "http://sparklio.local",
            "api_key": key,
            "transport": httpx.ASGITransport(app=api),
            "timeout": httpx.Timeout(120.0, connect=5.0),
        }
        async with LLMGatewayClient(**connection) as llm, MediaGatewayClient(**connection) as media:

            async def one() -> dict[str, Any]:
                count = 0

                async def counting(name: str, call: Callable[[], Awaitable[T]]) -> T:
                    nonlocal count
                    count += 1
                    return await call()

                async with limit:
                    started = time.perf_counter()
                    try:
                        await run_campaign(llm, media, BRIEF["brief"], runner=counting,
                                           product_facts=BRIEF["product_facts"])  # fmt: skip
                        status, error = "succeeded", None
                    except Exception as exc:  # a failed campaign is counted, not fatal
                        status, error = "failed", f"{type(exc).__name__}: {exc}"
                    took = time.perf_counter() - started
                return {"status": status, "duration_s": took, "steps": count, "wall_s": took,
                        "error": error}  # fmt: skip

            started = time.perf_counter()
            results = await asyncio.gather(*(one() for _ in range(campaigns)))
            return {"elapsed_s": time.perf_counter() - started, "runs": results}
    finally:
        await close_app(api)


# -- scale-out: the server and `sparklio worker` processes on one PostgreSQL ----------------


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, migrated database in the cluster of `server_url`; dropped afterwards."""
    from sparklio.db.engine import migrate

    admin_url = sa.make_url(server_url.replace("+asyncpg", "+psycopg"))
    name = f"sparklio_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as db:
            db.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def workers(env: dict[str, str], count: int, home: Path) -> Iterator[list[str]]:
    """`count` worker processes (each its own home, as on its own machine); their executors."""
    procs, names = [], []
    try:
        for index in range(count):
            folder = home / f"worker-{index}"
            folder.mkdir()
            log = folder / "worker.log"
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "sparklio.cli", "worker"],
                    env={**env, "SPARKLIO_HOME": str(folder)}, stdout=out,
                    stderr=subprocess.STDOUT,
                ))  # fmt: skip
            deadline = time.monotonic() + 120
            while "runs queued campaigns" not in log.read_text(errors="replace"):
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"sparklio worker did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            names.append(log.read_text().split("Sparklio worker ", 1)[1].split()[0])
        yield names
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def who_ran(url: str) -> Counter[str]:
    """How many campaign workflows each executor ran (from DBOS's workflow_status)."""
    engine = sa.create_engine(url.replace("+asyncpg", "+psycopg"))
    try:
        with engine.connect() as db:
            rows = db.execute(sa.text(
                "SELECT executor_id FROM dbos.workflow_status WHERE name = 'sparklio.campaign'"
            ))  # fmt: skip
            return Counter(row[0] for row in rows)
    finally:
        engine.dispose()


async def started_twice(port: int, key: str, ids: list[str]) -> int:
    """How many campaigns have more than one `started` event (a campaign run twice)."""
    twice = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:  # fmt: skip
        for campaign_id in ids:
            text = (await client.get(f"/api/v1/campaigns/{campaign_id}/events")).text
            twice += text.count("event: started\n") > 1
    return twice


def run_scale_out(base_env: dict[str, str], tmp: Path, args: Any) -> list[tuple[str, Any]]:
    """The durable run on PostgreSQL: server alone, then server and N workers."""
    rows = []
    for count in (0, args.workers):
        with fresh_database(args.postgres) as url:
            env = {**base_env, "DATABASE_URL": url,
                   "CAMPAIGN_WORKER_CONCURRENCY": str(args.per_process),
                   "CAMPAIGN_CONCURRENCY": str(max(args.per_process * (count + 1), 1))}  # fmt: skip
            home = tmp / f"pg-{count}"
            home.mkdir()
            env["SPARKLIO_HOME"] = str(home / "server")
            port = free_port()
            with gateway(env, port), workers(env, count, home):
                key = gateway_key(env)
                run = asyncio.run(run_durable(port, key, args.campaigns, args.concurrency))
                twice = asyncio.run(started_twice(port, key, [r["id"] for r in run["runs"]]))
            ran = who_ran(url)
            label = "server alone" if count == 0 else f"server + {count} workers"
            rows.append((label, run, ran, twice))
    return rows


def print_scale_out(rows: list[Any], args: Any) -> None:
    print(
        f"\nscale-out on PostgreSQL: {args.campaigns} campaigns, {args.concurrency} submitted "
        f"at a time, at most {args.per_process} per process, mock mode, cpus={os.cpu_count()}"
    )
    print(f"{'run':<22} {'campaigns/min':>13} {'p50 s':>7} {'p95 s':>7} {'ok':>4} {'lost':>5} "
          f"{'twice':>5}  ran by (executor: campaigns)")  # fmt: skip
    for label, run, ran, twice in rows:
        s = summarize(run)
        lost = args.campaigns - sum(ran.values()) + s["failed"]
        spread = ", ".join(f"{name}: {n}" for name, n in sorted(ran.items()))
        print(f"{label:<22} {s['per_min']:>13.1f} {s['p50_s']:>7.3f} {s['p95_s']:>7.3f} "
              f"{s['succeeded']:>4} {lost:>5} {twice:>5}  {spread}")  # fmt: skip


# -- the report -----------------------------------------------------------------------------


def summarize(run: dict[str, Any]) -> dict[str, float]:
    runs = run["runs"]
    done = [r for r in runs if r["status"] == "succeeded"]
    durations = [r["duration_s"] for r in done if r["duration_s"] is not None]
    per_step = [r["duration_s"] / r["steps"] * 1000 for r in done if r["steps"] and r["duration_s"]]
    steps = sum(r["steps"] for r in done)
    return {
        "per_min": len(runs) / run["elapsed_s"] * 60,
        "p50_s": quantile(durations, 0.5),
        "p95_s": quantile(durations, 0.95),
        "succeeded": len(done),
        "failed": len(runs) - len(done),
        "steps": steps / len(done) if done else float("nan"),
        "step_p50_ms": quantile(per_step, 0.5),
        "step_mean_ms": statistics.fmean(per_step) if per_step else float("nan"),
        # the whole run's time over all its steps: the cost of a step at this concurrency
        "run_step_ms": run["elapsed_s"] / steps * 1000 if steps else float("nan"),
        "elapsed_s": run["elapsed_s"],
    }


def print_tables(durable: dict[str, float], direct: dict[str, float], args: Any) -> None:
    print(f"\ncampaigns: {args.campaigns} campaigns, concurrency {args.concurrency}, "
          f"mock mode, cpus={os.cpu_count()}")  # fmt: skip
    head = (f"{'run':<22} {'campaigns/min':>13} {'p50 s':>7} {'p95 s':>7} {'ok':>4} "
            f"{'failed':>6} {'steps':>6} {'elapsed s':>9}")  # fmt: skip
    print(head)
    for name, s in (("durable (HTTP, DBOS)", durable), ("direct (in-process)", direct)):
        print(f"{name:<22} {s['per_min']:>13.1f} {s['p50_s']:>7.3f} {s['p95_s']:>7.3f} "
              f"{s['succeeded']:>4} {s['failed']:>6} {s['steps']:>6.1f} "
              f"{s['elapsed_s']:>9.2f}")  # fmt: skip
    print(
        "  (durable p50/p95: the API's duration_s, started_at to finished_at; direct: the "
        "time of run_campaign)"
    )
    print("\nper step (campaign time / its steps)")
    print(f"{'measure':<34} {'durable ms':>10} {'direct ms':>10} {'added ms':>9} {'ratio':>6}")
    for label, field in (("p50 per campaign", "step_p50_ms"), ("mean per campaign", "step_mean_ms"),
                         ("whole run (elapsed / all steps)", "run_step_ms")):  # fmt: skip
        d, b = durable[field], direct[field]
        ratio = d / b if b else float("nan")
        print(f"{label:<34} {d:>10.2f} {b:>10.2f} {d - b:>9.2f} {ratio:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="also run on PostgreSQL: the server alone, then with N workers",
    )
    parser.add_argument(
        "--per-process",
        type=int,
        default=2,
        help="CAMPAIGN_WORKER_CONCURRENCY in the PostgreSQL runs",
    )
    parser.add_argument(
        "--postgres",
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL database whose cluster the runs make a database in",
    )
    args = parser.parse_args()
    if args.campaigns < 1 or args.concurrency < 1 or args.workers < 0 or args.per_process < 1:
        parser.error("--campaigns and --concurrency must be at least 1")

    env = {**os.environ, "GENERATOR_MODE": "mock", "LOG_LEVEL": "warning"}
    for name in ("DATABASE_URL", "LLM_ROUTING_FILE", "PROMPTS_DIR", "OPENAI_API_KEY",
                 "OPENAI_BASE_URL", "CAMPAIGN_CONCURRENCY", "CAMPAIGN_WORKER_CONCURRENCY",
                 "CAMPAIGNS_IN_SERVER"):  # fmt: skip
        env.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="sparklio-bench-") as tmp:
        served, local = Path(tmp) / "served", Path(tmp) / "direct"
        served.mkdir()
        local.mkdir()
        env["SPARKLIO_HOME"] = str(served)
        port = free_port()
        pin(1)  # the load generator; the server is pinned to CPU 0
        with gateway(env, port):
            key = gateway_key(env)
            durable_run = asyncio.run(run_durable(port, key, args.campaigns, args.concurrency))
        scaled = run_scale_out(env, Path(tmp), args) if args.workers else []
        pin(0)  # the server had CPU 0 to itself; the direct run (app and client) gets it too
        direct_run = asyncio.run(run_direct(local, args.campaigns, args.concurrency))
    durable, direct = summarize(durable_run), summarize(direct_run)
    print_tables(durable, direct, args)
    if scaled:
        print_scale_out(scaled, args)
    for name, run in (("durable", durable_run), ("direct", direct_run)):
        errors = {r["error"] for r in run["runs"] if r["status"] != "succeeded"}
        for error in sorted(map(str, errors)):
            print(f"{name} failure: {error[:300]}")


if __name__ == "__main__":
    main()

"""Scale-out: calls/s and p50/p99 latency with one and with two gateway processes sharing one
Redis and one PostgreSQL, through the mock and through a fake upstream.

Each process is a `sparklio serve` with its own SPARKLIO_HOME (as on its own machine), the
same JWT_SECRET, DATABASE_URL (a fresh database in the cluster of `--postgres`, dropped
after) and REDIS_URL (key prefixes of this run only); the load generator spreads its
keep-alive connections over the processes round-robin, as a load balancer would. With two
processes on this 2-core machine, the processes, the load generator and the fake upstream
share the cores: the figures say what sharing state costs more than what a second machine
gains.

    .venv/bin/python bench/scale_out.py [--calls 2000] [--concurrency 32]

Then the budget overspend under 50 concurrent calls (bench/budget_overspend.py), with the
counters in memory, in Redis for two apps in one process, and for two processes. Traffic
goes only to 127.0.0.1. Prints tables; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from campaigns import fresh_database
from gateway_overhead import (
    CALL,
    ROUTES,
    _install_uvloop,
    free_port,
    gateway_key,
    one_connection,
    process,
    request_bytes,
    serving,
)

WORKERS = (1, 2)


async def spread(ports: list[int], payloads: dict[int, bytes], calls: int,
                 concurrency: int) -> dict[str, float]:  # fmt: skip
    """`calls` over `concurrency` connections, connection i to ports[i % len(ports)]."""
    latencies: list[float] = []
    share = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(
        one_connection(ports[i % len(ports)], payloads[ports[i % len(ports)]], n, latencies)
        for i, n in enumerate(share)
    ))  # fmt: skip
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"calls_s": calls / elapsed, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000}


def run(env: dict[str, str], count: int, tmp: Path, args: Any) -> dict[str, float]:
    """`count` gateway processes on `env`; the load spread over them."""
    body = json.dumps(CALL).encode()
    with serving(count, env, tmp) as ports:
        key = gateway_key({**env, "SPARKLIO_HOME": str(tmp / "keys")})
        payloads = {p: request_bytes(p, "/api/v1/llm/generate", body, key) for p in ports}
        asyncio.run(spread(ports, payloads, 200, 8))  # warm up
        return asyncio.run(spread(ports, payloads, args.calls, args.concurrency))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--postgres", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    _install_uvloop()
    os.environ["JWT_SECRET"] = uuid.uuid4().hex * 2  # the processes' and this one's tokens
    prefix = f"sparklio-bench-{uuid.uuid4().hex[:8]}:"
    base = {**os.environ, "LOG_LEVEL": "warning", "REDIS_URL": args.redis,
            "CACHE_PREFIX": prefix + "cache:"}  # fmt: skip
    for name in ("LLM_ROUTING_FILE", "PROMPTS_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        base.pop(name, None)
    for name in list(base):
        if name.endswith("_PREFIX") and name != "CACHE_PREFIX":
            base[name] = prefix + name.lower().removesuffix("_prefix") + ":"
    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as folder, fresh_database(args.postgres) as url:
        tmp = Path(folder)
        base["DATABASE_URL"] = url
        (tmp / "keys").mkdir()
        for count in WORKERS:
            rows.append(("mock", count, run({**base, "GENERATOR_MODE": "mock"}, count, tmp, args)))
        upstream = free_port()
        fake = [sys.executable, str(Path(__file__).parent / "gateway_overhead.py"),
                "--fake-upstream", str(upstream)]  # fmt: skip
        routes = tmp / "routes.yaml"
        routes.write_text(ROUTES)
        live = {**base, "GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
                "OPENAI_API_KEY": "sk-bench"}  # fmt: skip
        with process(fake, base, upstream, b"/", cpu=1):
            for count in WORKERS:
                rows.append(("fake upstream", count, run(live, count, tmp, args)))
    print(f"\nscale-out: {args.calls} calls at concurrency {args.concurrency}, one Redis and one "
          f"PostgreSQL shared, cpus={os.cpu_count()}")  # fmt: skip
    print(f"{'through':<15} {'processes':>9} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for through, count, figures in rows:
        print(f"{through:<15} {count:>9} {figures['calls_s']:>9.0f} {figures['p50_ms']:>8.2f} "
              f"{figures['p99_ms']:>8.2f}")  # fmt: skip

    print("\nbudget overspend: 50 concurrent calls against a daily budget that allows 10")
    import budget_overspend

    budget_overspend.main(["--redis-url", args.redis, "--postgres", args.postgres])


if __name__ == "__main__":
    main()

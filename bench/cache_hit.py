"""Response cache: how long a cache hit takes through HTTP, in mock mode, with the in-memory
cache and with Redis (REDIS_URL, default redis://127.0.0.1:6379/0; skipped if it does not
answer).

The app runs in-process (httpx's ASGI transport: the whole HTTP stack of the app, auth,
middleware and JSON included, no sockets), one call at a time. For each backend: a call with
`options.cache: false` (what the mock costs without the cache), then the same call at
temperature 0, asked once to fill the cache and then `--calls` times; p50 and p99 of what the
client waited and of the gateway's own `meta.latency_ms`. Prints a table; not a test.

    .venv/bin/python bench/cache_hit.py [--calls 2000] [--redis-url redis://host:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway_overhead import redis_answers  # noqa: E402

from sparklio.core.config import Settings  # noqa: E402
from sparklio.main import close_app, create_app  # noqa: E402

CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {"product": "Dawon green tea", "channel": "instagram"},
    "output_schema": {
        "type": "object",
        "properties": {"headline": {"type": "string", "maxLength": 30}, "body": {"type": "string"}},
        "required": ["headline", "body"],
    },
    "options": {"temperature": 0},
}


def percentiles(values: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


async def run(label: str, home: Path, calls: int, **settings: Any) -> list[str]:
    app = create_app(Settings(_env_file=None, sparklio_home=home, log_level="warning",
                              **settings))  # type: ignore[call-arg]  # fmt: skip
    rows = []
    try:
        token = await app.state.services.auth.local_token()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", headers=headers
        ) as http:
            # each run its own payload: a Redis shared with earlier runs holds no answer yet
            call = {**CALL, "payload": {**CALL["payload"], "run": uuid.uuid4().hex}}
            for name, body, count in (
                ("uncached", {**call, "options": {"temperature": 0, "cache": False}}, calls // 4),
                ("hit", call, calls),
            ):
                first = (await http.post("/api/v1/llm/generate", json=body)).json()
                waited, inside = [], []
                for _ in range(count):
                    started = time.perf_counter()
                    response = await http.post("/api/v1/llm/generate", json=body)
                    waited.append((time.perf_counter() - started) * 1000)
                    meta = response.json()["meta"]
                    assert meta["cache"] == ("hit" if name == "hit" else "off"), meta
                    inside.append(meta["latency_ms"])
                assert name != "hit" or first["meta"]["cache"] == "miss", first["meta"]
                w50, w99 = percentiles(waited)
                i50, i99 = percentiles(inside)
                rows.append(f"{label:<8} {name:<9} {count:>6} {w50:>8.3f} {w99:>8.3f} "
                            f"{i50:>8.3f} {i99:>8.3f}")  # fmt: skip
    finally:
        await close_app(app)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    print("backend  call       calls  HTTP p50  HTTP p99  meta p50  meta p99   (ms)")
    with tempfile.TemporaryDirectory() as tmp:
        for row in await run("memory", Path(tmp) / "memory", args.calls):
            print(row)
        if await redis_answers(args.redis_url):
            prefix = f"sparklio-bench:{uuid.uuid4().hex}:"
            for row in await run("redis", Path(tmp) / "redis", args.calls,
                                 redis_url=args.redis_url, cache_prefix=prefix):  # fmt: skip
                print(row)
            from redis.asyncio import Redis

            client = Redis.from_url(args.redis_url)
            keys = [key async for key in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        else:
            print(f"redis    (skipped: nothing answers at {args.redis_url})")


if __name__ == "__main__":
    asyncio.run(main())

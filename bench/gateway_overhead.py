"""Gateway overhead: p50/p99 latency and calls/s of POST /api/v1/llm/generate in mock mode.

Starts `sparklio serve` (uvicorn, one process) on 127.0.0.1, pinned to CPU 0, and drives it
from this process, pinned to CPU 1, over keep-alive HTTP/1.1 connections with a minimal
client (so the load generator is not what is measured). Prints one table; not a test.

    .venv/bin/python bench/gateway_overhead.py [--calls 2000] [--concurrency 1 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {
        "product": "Dawon green tea",
        "audience": "office workers who want a calm afternoon",
        "channel": "instagram",
        "key_messages": ["first-flush leaves from Jeju", "no added sugar"],
    },
    "output_schema": {
        "type": "object",
        "properties": {
            "headline": {"type": "string", "maxLength": 30},
            "body": {"type": "string", "maxLength": 2200},
            "cta": {"type": "string"},
            "hashtags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        },
        "required": ["headline", "body", "cta", "hashtags"],
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > cpu:  # type: ignore[operator]
        os.sched_setaffinity(0, {cpu})


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request_bytes(port: int, body: bytes) -> bytes:
    head = (
        f"POST /api/v1/llm/generate HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def one_connection(port: int, payload: bytes, calls: int, out: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(calls):
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {body[:300]!r}")
            out.append(time.perf_counter() - started)
    finally:
        writer.close()


async def run_level(port: int, payload: bytes, calls: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    share = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    await asyncio.gather(*(one_connection(port, payload, n, latencies) for n in share))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "calls_s": calls / elapsed}


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the server did not become ready")


def in_process_figures(calls: int) -> dict[str, float]:
    """Time the mock provider and the whole gateway call without HTTP, in this process."""
    from sparklio.core.config import Settings
    from sparklio.services.llm.gateway import LLMGateway

    gateway = LLMGateway.from_settings(Settings(_env_file=None, generator_mode="mock"))
    provider = gateway.registry.get("mock")
    options = {"model": "mock-v1", "payload": CALL["payload"], "schema": CALL["output_schema"]}

    async def measure() -> dict[str, float]:
        figures = {}
        for name, make in (
            (
                "mock_provider_ms",
                lambda: provider.generate("p", "copywriter", "channel_copy", "json", options),
            ),
            (
                "gateway_call_ms",
                lambda: gateway.generate(
                    "copywriter",
                    "channel_copy",
                    CALL["payload"],
                    output_schema=CALL["output_schema"],
                ),
            ),
        ):
            for _ in range(50):
                await make()
            started = time.perf_counter()
            for _ in range(calls):
                await make()
            figures[name] = (time.perf_counter() - started) / calls * 1000
        return figures

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()

    port = free_port()
    env = {"LOG_LEVEL": "warning", **os.environ, "GENERATOR_MODE": "mock"}
    env.pop("LLM_ROUTING_FILE", None)
    # a pipe nobody reads would stall the server: its log goes to a file
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=log,
            preexec_fn=lambda: pin(0),
        )
        try:
            wait_ready(port, server)
            pin(1)
            try:
                import uvloop

                uvloop.install()
            except ImportError:
                pass
            payload = request_bytes(port, json.dumps(CALL).encode())
            asyncio.run(run_level(port, payload, 300, 8))  # warm up
            results = {
                c: asyncio.run(run_level(port, payload, args.calls, c)) for c in args.concurrency
            }
            memory = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(10)
    local = in_process_figures(args.calls)

    print(
        f"gateway overhead, mock mode, {args.calls} calls per level, server pinned to "
        f"1 core, LOG_LEVEL={env['LOG_LEVEL']}, cpus={os.cpu_count()}"
    )
    print(f"{'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    for level, r in results.items():
        print(f"{level:>11} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['calls_s']:>9.0f}")
    print(f"server RSS after the run: {memory:.0f} MB")
    print(
        f"in-process: mock provider {local['mock_provider_ms']:.3f} ms/call, "
        f"gateway.generate {local['gateway_call_ms']:.3f} ms/call"
    )
    print(
        "targets: p50 < 1 ms at concurrency 1; > 2,000 calls/s at concurrency 32; mock < 5 ms/call"
    )


if __name__ == "__main__":
    main()

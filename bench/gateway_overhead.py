"""Gateway overhead: latency and calls/s of POST /api/v1/llm/generate, in two runs.

1. mock: `sparklio serve` in mock mode.
2. live: `sparklio serve` in live mode, routed to a fast fake OpenAI upstream on 127.0.0.1;
   the same load is also sent to the fake directly, and the difference is what the gateway
   adds (prompt, routing, resilience, schema check, two HTTP hops). Measured three ways:
   the native API, the OpenAI-compatible `/v1/chat/completions` (non-streaming), and the
   time to the first token of a streamed call (native `stream: true`) against the fake
   streaming directly.

The server (`sparklio serve`: granian and its one worker process) is pinned to CPU 0; the
load generator (a minimal keep-alive HTTP/1.1 client, so it is not what is measured) and the
fake upstream share CPU 1.
Prints tables; not a test.

    .venv/bin/python bench/gateway_overhead.py [--calls 2000] [--concurrency 1 32]
                                               [--only mock|live]
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
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "headline": {"type": "string", "maxLength": 30},
        "body": {"type": "string", "maxLength": 2200},
        "cta": {"type": "string"},
        "hashtags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
    },
    "required": ["headline", "body", "cta", "hashtags"],
}
CALL: dict[str, Any] = {
    "role": "copywriter",
    "task": "channel_copy",
    "payload": {
        "product": "Dawon green tea",
        "audience": "office workers who want a calm afternoon",
        "channel": "instagram",
        "key_messages": ["first-flush leaves from Jeju", "no added sugar"],
    },
    "output_schema": SCHEMA,
}
ANSWER = {
    "headline": "Calm afternoons, Dawon tea",
    "body": "First-flush leaves from Jeju, no added sugar: a calm cup for busy office days.",
    "cta": "Try Dawon today",
    "hashtags": ["#DawonTea", "#CalmAfternoon"],
}
ROUTES = """version: 1
modes:
  live:
    default:
      - {provider: openai, model: bench-model}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(cpu: int) -> None:
    count = os.cpu_count() or 1
    if hasattr(os, "sched_setaffinity") and count > cpu:
        os.sched_setaffinity(0, {cpu})


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (granian serves from a worker process under `serve`)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid] + [p for child in children for p in _tree(int(child))]


def _status_mb(pid: int, field: str, name: str = "status") -> float:
    for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory(pid: int) -> str:
    """The largest process's RSS and the proportional set size of the server's processes
    (pages a forked worker shares with its parent are counted once)."""
    pids = _tree(pid)
    rss = max(_status_mb(p, "VmRSS:") for p in pids)
    pss = sum(_status_mb(p, "Pss:", "smaps_rollup") for p in pids)
    return f"RSS {rss:.0f} MB (largest of {len(pids)} processes), PSS {pss:.0f} MB in all"


def request_bytes(port: int, path: str, body: bytes, key: str = "sk-bench") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def gateway_key(env: dict[str, str]) -> str:
    """A token for the local user of the gateway's SPARKLIO_HOME (auth is always on)."""
    from sparklio.core.config import Settings
    from sparklio.services.auth import local_token_for

    settings = Settings(
        _env_file=None,
        sparklio_home=env.get("SPARKLIO_HOME", "~/.sparklio"),
        database_url=env.get("DATABASE_URL"),
    )
    return asyncio.run(local_token_for(settings))


# -- the fake upstream: a canned Chat Completions answer, as fast as asyncio allows ---------


class FakeOpenAI(asyncio.Protocol):
    """Answers every POST with one chat.completion whose content is ANSWER."""

    body = json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": json.dumps(ANSWER),
                                 "refusal": None}}],
        "usage": {"prompt_tokens": 180, "completion_tokens": 40, "total_tokens": 220},
    }).encode()  # fmt: skip
    reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            start = head.find(b"content-length:")
            stop = head.find(b"\r\n", start)  # -1: the last header line
            length = int(head[start + 15 : stop if stop >= 0 else None]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            request = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            streamed = b'"stream":true' in request or b'"stream": true' in request
            self.transport.write(STREAM_REPLY if streamed else self.reply)


def _stream_reply() -> bytes:
    """ANSWER as a Chat Completions stream: eight content chunks, usage, [DONE]."""
    text = json.dumps(ANSWER)
    step = -(-len(text) // 8)
    chunk = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0,
             "model": "bench-model", "system_fingerprint": None}  # fmt: skip
    events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}]}]  # fmt: skip
    events += [{**chunk, "choices": [{"index": 0, "delta": {"content": text[i : i + step]},
                                      "finish_reason": None}]}
               for i in range(0, len(text), step)]  # fmt: skip
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    events.append(
        {
            **chunk,
            "choices": [],
            "usage": {"prompt_tokens": 180, "completion_tokens": 40, "total_tokens": 220},
        }
    )
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    body += b"data: [DONE]\n\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip


STREAM_REPLY = _stream_reply()


def serve_fake(port: int) -> None:
    pin(1)
    _install_uvloop()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(FakeOpenAI, "127.0.0.1", port))
    loop.run_forever()  # until the benchmark terminates this process


# -- the load generator ---------------------------------------------------------------------


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


async def one_stream_connection(port: int, payload: bytes, calls: int, out: list[float]) -> None:
    """Like one_connection, for streamed answers (Content-Length or chunked): the time to the
    first piece of the answer (the first body bytes that hold one), read to the end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(calls):
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            if int(head.split(b" ", 2)[1]) != 200:
                raise RuntimeError(f"streamed call failed: {head[:200]!r}")
            first: float | None = None
            if b"chunked" in head.lower():
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                    data = await reader.readexactly(size + 2)
                    if first is None and (b"delta" in data or b'"content"' in data):
                        first = time.perf_counter()
                    if size == 0:
                        break
            else:
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                while length:
                    data = await reader.read(length)
                    length -= len(data)
                    if first is None and (b"delta" in data or b'"content"' in data):
                        first = time.perf_counter()
            out.append((first or time.perf_counter()) - started)
    finally:
        writer.close()


async def run_level(port: int, payload: bytes, calls: int, concurrency: int,
                    streamed: bool = False) -> dict[str, float]:  # fmt: skip
    latencies: list[float] = []
    share = [calls // concurrency + (i < calls % concurrency) for i in range(concurrency)]
    started = time.perf_counter()
    one = one_stream_connection if streamed else one_connection
    await asyncio.gather(*(one(port, payload, n, latencies) for n in share))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return {"p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "calls_s": calls / elapsed}


def measure(
    port: int, payload: bytes, calls: int, levels: list[int], streamed: bool = False
) -> dict[int, dict[str, float]]:
    asyncio.run(run_level(port, payload, 300, 8, streamed))  # warm up
    return {c: asyncio.run(run_level(port, payload, calls, c, streamed)) for c in levels}


def wait_ready(port: int, proc: subprocess.Popen[bytes], path: bytes, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("a server did not become ready")


@contextmanager
def process(args: list[str], env: dict[str, str], port: int, path: bytes,
            cpu: int) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    # a pipe nobody reads would stall the server: its log goes to a file
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=log, preexec_fn=lambda: pin(cpu)
        )
        try:
            wait_ready(port, proc, path)
            yield proc
        finally:
            proc.terminate()
            proc.wait(10)


def gateway(env: dict[str, str], port: int) -> Any:
    args = [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)]
    return process(args, env, port, b"/health", cpu=0)


def _install_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


Levels = dict[int, dict[str, float]]


def measure_compat(port: int, key: str, calls: int, levels: list[int]) -> Levels | None:
    """The OpenAI-compatible route with the same call (role/task as the model, the schema as
    response_format json_schema); None when this gateway has no such route."""
    body = json.dumps({
        "model": f"{CALL['role']}/{CALL['task']}",
        "messages": [{"role": "user", "content": json.dumps(CALL["payload"])}],
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "copy", "schema": SCHEMA}},
    }).encode()  # fmt: skip
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request_bytes(port, "/v1/chat/completions", body, key))
        if not sock.recv(64).startswith(b"HTTP/1.1 200"):
            return None
    return measure(port, request_bytes(port, "/v1/chat/completions", body, key), calls, levels)


def table(title: str, rows: Levels, base: Levels | None) -> None:
    print(f"\n{title}")
    extra = f" {'added p50':>10} {'added p99':>10}" if base else ""
    print(f"{'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}{extra}")
    for level, r in rows.items():
        line = f"{level:>11} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {r['calls_s']:>9.0f}"
        if base:
            b = base[level]
            line += f" {r['p50_ms'] - b['p50_ms']:>10.3f} {r['p99_ms'] - b['p99_ms']:>10.3f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--only", choices=["mock", "live"])
    parser.add_argument("--fake-upstream", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake_upstream:
        serve_fake(args.fake_upstream)
        return

    base_env = {"LOG_LEVEL": "info", **os.environ}  # the shipped default: a line per call
    for name in ("LLM_ROUTING_FILE", "PROMPTS_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        base_env.pop(name, None)
    print(f"gateway overhead: {args.calls} calls per level, gateway pinned to 1 core, "
          f"LOG_LEVEL={base_env['LOG_LEVEL']}, cpus={os.cpu_count()}")  # fmt: skip
    body = json.dumps(CALL).encode()
    pin(1)
    _install_uvloop()

    if args.only in (None, "mock"):
        port = free_port()
        with gateway({**base_env, "GENERATOR_MODE": "mock"}, port) as server:
            key = gateway_key(base_env)
            mock = measure(port, request_bytes(port, "/api/v1/llm/generate", body, key),
                           args.calls, args.concurrency)  # fmt: skip
            used = memory(server.pid)
        table("mock mode (targets: p50 < 1 ms at c=1, > 2,000 calls/s at c=32)", mock, None)
        print(f"gateway memory after the run: {used}")

    if args.only in (None, "live"):
        upstream = free_port()
        fake_args = [sys.executable, __file__, "--fake-upstream", str(upstream)]
        with tempfile.TemporaryDirectory() as tmp, process(fake_args, base_env, upstream, b"/",
                                                            cpu=1):  # fmt: skip
            routes = Path(tmp) / "routes.yaml"
            routes.write_text(ROUTES)
            env = {**base_env, "GENERATOR_MODE": "live", "LLM_ROUTING_FILE": str(routes),
                   "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream}/v1",
                   "OPENAI_API_KEY": "sk-bench"}  # fmt: skip
            direct_body = json.dumps({"model": "bench-model", "messages": [
                {"role": "user", "content": "x" * 900}]}).encode()  # fmt: skip
            direct_stream_body = json.dumps({
                "model": "bench-model", "stream": True, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "x" * 900}],
            }).encode()  # fmt: skip
            direct = measure(
                upstream,
                request_bytes(upstream, "/v1/chat/completions", direct_body),
                args.calls,
                args.concurrency,
            )
            direct_stream = measure(
                upstream,
                request_bytes(upstream, "/v1/chat/completions", direct_stream_body),
                args.calls,
                args.concurrency,
                streamed=True,
            )
            port = free_port()
            with gateway(env, port) as server:
                key = gateway_key(env)
                live = measure(port, request_bytes(port, "/api/v1/llm/generate", body, key),
                               args.calls, args.concurrency)  # fmt: skip
                compat = measure_compat(port, key, args.calls, args.concurrency)
                stream_body = json.dumps({**CALL, "stream": True}).encode()
                streamed = measure(port,
                                   request_bytes(port, "/api/v1/llm/generate", stream_body, key),
                                   args.calls, args.concurrency, streamed=True)  # fmt: skip
                used = memory(server.pid)
        table("fake OpenAI upstream, called directly", direct, None)
        table(
            "live mode through the gateway to that upstream (targets: added p50 <= 0.5 ms, "
            "p99 <= 1 ms at c=1; >= 3,000 calls/s at c=32; RSS <= 120 MB)",
            live,
            direct,
        )
        if compat is not None:
            title = ("POST /v1/chat/completions through the gateway (OpenAI-compatible, "
                     "json_schema, non-streaming), against the direct upstream")  # fmt: skip
            table(title, compat, direct)
        table("fake OpenAI upstream, streamed directly: time to the first token", direct_stream,
              None)  # fmt: skip
        table("streamed through the gateway (native stream: true): time to the first token",
              streamed, direct_stream)  # fmt: skip
        print(f"gateway memory after the run: {used}")


if __name__ == "__main__":
    main()


@contextmanager
def serving(count: int, env: dict[str, str], tmp: Path) -> Iterator[list[int]]:
    """`count` `sparklio serve` processes on `env`, each its own SPARKLIO_HOME (as on its own
    machine) and pinned to a CPU of its own (the first shares its core with nothing of the
    gateway's); their ports."""
    with ExitStack() as stack:
        ports = []
        for index in range(count):
            home = tmp / f"serve-{uuid.uuid4().hex[:6]}-{index}"
            home.mkdir()
            port = free_port()
            serve = [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)]
            stack.enter_context(process(serve, {**env, "SPARKLIO_HOME": str(home)}, port,
                                        b"/health", cpu=index % 2))  # fmt: skip
            ports.append(port)
        yield ports


async def redis_answers(url: str) -> bool:
    """Whether a Redis answers at `url` (a bench runs its Redis rows only then)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()

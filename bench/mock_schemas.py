"""Mock provider over the real-world schema corpus: coverage, latency, event-loop lag.

1. Coverage and latency: for every schema in tests/data/schemas/, the mock builds an answer
   (fresh per schema: nothing cached) and the independent `jsonschema` package judges it, with
   format checks. Coverage counts schemas answered schema-valid among the satisfiable ones
   (the UNSATISFIABLE schemas below must get a 422 instead). Each build runs under a 10 s
   alarm, so a generator that loops forever (the old one) shows as a timeout, not a hang.
2. Event-loop lag: `sparklio serve` runs in mock mode in its own process; while the slowest
   schemas (and a minItems 40000 one) are requested through POST /api/v1/llm/generate, two
   at a time, /health is polled every 10 ms from a thread and its latency is printed.

    .venv/bin/python bench/mock_schemas.py [--only coverage|lag] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.schema_corpus import load_corpus, valid  # noqa: E402

# the slowest to build on this corpus (measured), for --only lag
SLOWEST = [
    "schemastore/azure-pipelines", "schemastore/citation-file-format",
    "cloudformation/AWS-Batch-JobDefinition", "kubernetes/statefulset-apps-v1",
    "kubernetes/cronjob-batch-v1", "schemastore/github-issue-forms", "schemastore/gitlab-ci",
    "kubernetes/pod-v1", "schemastore/buildkite", "cloudformation/AWS-EventsV2-Subscriber",
]  # fmt: skip
PAYLOAD = {"product": "Dawon green tea", "brief": "A calm afternoon for office workers."}


def _obj(prop: Any, required: bool = True) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": prop}, "required": ["x"] if required else []}


# no real-world schema in the corpus is unsatisfiable; these are, or ask for more than the
# mock builds, and each must get a 422 (never a hang, a 500 or a 502)
UNSATISFIABLE: dict[str, Any] = {
    "false": _obj(False),
    "not {}": _obj({"not": {}}),
    "minimum > maximum": _obj({"type": "integer", "minimum": 5, "maximum": 1}),
    "minLength > maxLength": _obj({"type": "string", "minLength": 5, "maxLength": 2}),
    "no common type": _obj({"allOf": [{"type": "string"}, {"type": "integer"}]}),
    "disjoint enums": _obj({"allOf": [{"enum": [1, 2]}, {"enum": [3]}]}),
    "required self-reference": {"type": "object", "properties": {"next": {"$ref": "#"}},
                                "required": ["next"]},
    "minItems 10^9": _obj({"type": "array", "minItems": 10**9}),
    "minLength 10^9": _obj({"type": "string", "minLength": 10**9}),
    "minProperties 10^9": _obj({"type": "object", "minProperties": 10**9}),
    "no multiple in range": _obj({"type": "integer", "minimum": 1, "maximum": 4,
                                  "multipleOf": 5}),
}  # fmt: skip


def make_generator() -> Any:
    """A function schema -> value, for this checkout's mock (new API, or the old one)."""
    try:
        from sparklio.services.llm.mock import FULL_NODES, SchemaTools
        from sparklio.services.llm.providers.mock import build

        return lambda schema: build(PAYLOAD, 7, SchemaTools(schema), FULL_NODES)
    except ImportError:
        from sparklio.services.llm.mockdata import MockData
        from sparklio.services.llm.providers.mock import _checker  # type: ignore[attr-defined]

        def old(schema: Any) -> Any:
            data = MockData(PAYLOAD, 7, root_schema=schema, check=_checker(schema))  # type: ignore[call-arg]
            return data.from_schema(schema)

        return old


class Alarm(Exception):
    pass


def _ring(*_: Any) -> None:
    raise Alarm


def coverage(limit: int | None) -> list[tuple[float, str]]:
    from sparklio.exceptions import InvalidRequestError

    generate = make_generator()
    corpus = load_corpus()[:limit]
    known_bad = set(UNSATISFIABLE)
    corpus += list(UNSATISFIABLE.items())
    signal.signal(signal.SIGALRM, _ring)
    times: list[tuple[float, str]] = []
    outcome: dict[str, list[str]] = {"valid": [], "invalid": [], "422": [], "error": []}
    unsat_ok = unsat_bad = 0
    for entry_id, schema in corpus:
        signal.alarm(10)
        started = time.perf_counter()
        took: float | None = None
        try:
            value = generate(schema)
            took = (time.perf_counter() - started) * 1000
            kind = "valid" if valid(schema, value) else "invalid"
        except InvalidRequestError:
            kind = "422"
        except Alarm:
            kind = "error"
        except Exception as exc:
            kind = "error"
            entry_id += f" ({type(exc).__name__})"
        finally:
            signal.alarm(0)
        times.append((took or (time.perf_counter() - started) * 1000, entry_id))
        if entry_id in known_bad:
            unsat_ok += kind == "422"
            unsat_bad += kind != "422"
        else:
            outcome[kind].append(entry_id)
    satisfiable = len(corpus) - unsat_ok - unsat_bad
    ms = sorted(t for t, _ in times)
    print(f"schemas: {len(corpus)} ({satisfiable} satisfiable, {unsat_ok + unsat_bad} not)")
    print(f"coverage: {len(outcome['valid']) / max(satisfiable, 1):.2%} schema-valid "
          f"({len(outcome['valid'])}/{satisfiable}); invalid {len(outcome['invalid'])}, "
          f"422 {len(outcome['422'])}, error/timeout {len(outcome['error'])}")  # fmt: skip
    print(f"unsatisfiable answered 422: {unsat_ok}/{unsat_ok + unsat_bad}")
    p50, p90, p99 = statistics.median(ms), ms[int(len(ms) * 0.9)], ms[int(len(ms) * 0.99)]
    print(f"generation ms: p50 {p50:.2f}  p90 {p90:.2f}  p99 {p99:.2f}  max {ms[-1]:.2f}")
    for kind in ("invalid", "422", "error"):
        for entry_id in outcome[kind][:40]:
            print(f"  {kind}: {entry_id}")
    return sorted(times, reverse=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def lag(worst: list[str]) -> None:
    """`sparklio serve` in mock mode in its own process; /health polled from a thread while
    the slowest schemas are requested, two at a time, from a few others."""
    import httpx

    from sparklio.core.config import Settings
    from sparklio.services.auth import local_token_for

    corpus = dict(load_corpus())
    schemas = [corpus[i] for i in worst if isinstance(corpus.get(i), dict)]
    schemas = [s for s in schemas if s.get("type") in (None, "object")][:10]
    schemas.append(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "minItems": 40000, "items": {"type": "string"}}
            },
            "required": ["tags"],
        }
    )
    home = tempfile.mkdtemp(prefix="mock-bench-")
    env = {**os.environ, "GENERATOR_MODE": "mock", "SPARKLIO_HOME": home, "LOG_LEVEL": "warning"}
    for name in ("LLM_ROUTING_FILE", "PROMPTS_DIR", "DATABASE_URL"):
        env.pop(name, None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "sparklio.cli", "serve", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            token = asyncio.run(local_token_for(Settings(_env_file=None, sparklio_home=home)))
            bodies = [json.dumps({"role": "copywriter", "task": "channel_copy",
                                  "payload": PAYLOAD, "output_schema": s}).encode()
                      for s in schemas]  # fmt: skip
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            health_ms: list[float] = []
            done = threading.Event()

            def poll() -> None:
                with httpx.Client(base_url=base, timeout=120) as http:
                    while not done.is_set():
                        started = time.perf_counter()
                        http.get("/health")
                        health_ms.append((time.perf_counter() - started) * 1000)
                        time.sleep(0.01)

            def call(body: bytes) -> int:
                with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
                    return http.post("/api/v1/llm/generate", content=body).status_code

            poller = threading.Thread(target=poll)
            poller.start()
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=2) as pool:
                statuses = list(pool.map(call, bodies * 2))
            total = time.perf_counter() - started
            done.set()
            poller.join()
        finally:
            server.terminate()
            server.wait(10)
    print(
        f"lag: {len(statuses)} generate calls with the slowest schemas in {total:.2f} s "
        f"(sparklio serve, own process), statuses {sorted(set(statuses))}"
    )
    ms = sorted(health_ms)
    print(
        f"/health during them: {len(ms)} polls, p50 {statistics.median(ms):.1f} ms, "
        f"p99 {ms[int(len(ms) * 0.99)]:.1f} ms, max {ms[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=["coverage", "lag"])
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    times = coverage(args.limit) if args.only != "lag" else []
    if args.only != "coverage":
        worst = [i for _, i in times[:30]] or SLOWEST
        lag(worst)


if __name__ == "__main__":
    main()

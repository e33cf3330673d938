"""Mock provider over the real-world schema corpus: coverage, latency, event-loop lag.

1. Coverage and latency: for every schema in tests/data/schemas/, the mock builds an answer
   (fresh per schema: nothing cached) and the independent `jsonschema` package judges it, with
   format checks. Coverage counts schemas answered schema-valid among the satisfiable ones
   (those listed in unsatisfiable.json must get a 422 instead). Each build runs under a 10 s
   alarm, so a generator that loops forever (the old one) shows as a timeout, not a hang.
2. Event-loop lag: the real app runs in-process in mock mode; while the slowest schemas
   are requested through POST /api/v1/llm/generate, /health is polled every 10 ms and its
   worst latency is printed.

    .venv/bin/python bench/mock_schemas.py [--only coverage|lag] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT / "tests" / "data" / "schemas"
PAYLOAD = {"product": "Dawon green tea", "brief": "A calm afternoon for office workers."}


def load() -> list[tuple[str, Any]]:
    index = json.loads((CORPUS / "index.json").read_text())["entries"]
    out: list[tuple[str, Any]] = []
    for file in sorted({e["file"] for e in index.values()}):
        out += [(e["id"], e["schema"]) for e in json.loads((CORPUS / file).read_text())]
    return out


def unsatisfiable() -> set[str]:
    path = CORPUS / "unsatisfiable.json"
    return set(json.loads(path.read_text())) if path.exists() else set()


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


def _no_remote(uri: str) -> Any:
    raise referencing.exceptions.NoSuchResource(ref=uri)


def judge(schema: Any, value: Any) -> bool:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    registry: Any = referencing.Registry(retrieve=_no_remote)  # type: ignore[call-arg]
    return bool(cls(schema, registry=registry, format_checker=cls.FORMAT_CHECKER).is_valid(value))


def coverage(limit: int | None) -> list[tuple[float, str]]:
    from sparklio.exceptions import InvalidRequestError

    generate = make_generator()
    corpus = load()[:limit]
    known_bad = unsatisfiable()
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
            kind = "valid" if judge(schema, value) else "invalid"
        except InvalidRequestError:
            kind = "422"
        except Alarm:
            kind = "error"
        except Exception as exc:  # noqa: BLE001 - the bench reports every failure kind
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
    print("generation ms: p50 {:.2f}  p90 {:.2f}  p99 {:.2f}  max {:.2f}".format(
        statistics.median(ms), ms[int(len(ms) * 0.9)], ms[int(len(ms) * 0.99)], ms[-1]))  # fmt: skip
    for kind in ("invalid", "422", "error"):
        for entry_id in outcome[kind][:40]:
            print(f"  {kind}: {entry_id}")
    return sorted(times, reverse=True)


async def lag(worst: list[str]) -> None:
    import httpx

    from sparklio.core.config import Settings
    from sparklio.main import close_app, create_app

    corpus = dict(load())
    home = Path(tempfile.mkdtemp(prefix="mock-bench-"))
    app = create_app(Settings(_env_file=None, sparklio_home=home, generator_mode="mock"))
    token = await app.state.auth.local_token()
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {token}"}
    schemas = [corpus[i] for i in worst if isinstance(corpus.get(i), dict)]
    schemas = [s for s in schemas if s.get("type") in (None, "object")][:10]
    schemas.append({"type": "object", "properties": {"tags": {
        "type": "array", "minItems": 40000, "items": {"type": "string"}}}, "required": ["tags"]})
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway",
                                 headers=headers, timeout=60) as http:  # fmt: skip
        await http.get("/health")
        done = False
        health_ms: list[float] = []

        async def poll() -> None:
            while not done:
                started = time.perf_counter()
                await http.get("/health")
                health_ms.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.01)

        poller = asyncio.create_task(poll())
        statuses = []
        started = time.perf_counter()
        for _ in range(2):
            calls = [http.post("/api/v1/llm/generate", json={
                "role": "copywriter", "task": "channel_copy", "payload": PAYLOAD,
                "output_schema": s}) for s in schemas]  # fmt: skip
            statuses += [r.status_code for r in await asyncio.gather(*calls)]
        total = time.perf_counter() - started
        done = True
        await poller
    await close_app(app)
    print(f"lag: {len(statuses)} generate calls with the slowest schemas in {total:.2f} s, "
          f"statuses {sorted(set(statuses))}")
    print(f"/health during them: {len(health_ms)} polls, p50 {statistics.median(health_ms):.1f} "
          f"ms, max {max(health_ms):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=["coverage", "lag"])
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    times = coverage(args.limit) if args.only != "lag" else []
    if args.only != "coverage":
        worst = [i for _, i in times[:30]] or [i for i, _ in load()][:30]
        asyncio.run(lag(worst))


if __name__ == "__main__":
    main()

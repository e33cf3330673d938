"""Tokens/s of the embedded model through the gateway against llama-cpp-python called directly.

Both sides run the same model file with the same settings (n_ctx, n_threads, temperature 0,
seed, max_tokens) on the same prompt: the gateway renders it from (role, task, payload) and
the direct side sends that very text. Rounds alternate sides so drift hits both alike; the
medians and their ratio say what the gateway costs on top of inference (target: >= 0.95).
Prints a table; not a test. Needs the local extra (make test installs it).

    .venv/bin/python bench/local_model.py [--rounds 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from sparklio.core.config import Settings
from sparklio.main import close_app, create_app
from sparklio.services.clients.llm_client import LLMGatewayClient

MODEL = "smollm2-135m-instruct"
ROUTES = f"""version: 1
modes:
  live:
    default:
      - {{provider: llamacpp, model: {MODEL}}}
"""
ROLE, TASK = "copywriter", "channel_copy"
PAYLOAD = {
    "product": "Dawon green tea",
    "brief": "Write a long, warm story for office workers in Seoul about an afternoon cup "
    "of first-flush Jeju green tea, with many details.",
}


async def main(rounds: int, max_tokens: int) -> None:
    from llama_cpp import Llama

    with tempfile.TemporaryDirectory() as tmp:
        routes = Path(tmp) / "routes.yaml"
        routes.write_text(ROUTES)
        settings = Settings(
            _env_file=None, generator_mode="live", llm_routing_file=routes, log_level="warning"
        )
        app = create_app(settings)
        gateway = app.state.services.gateway
        provider = gateway.endpoints.get("llamacpp").provider
        entry = provider.catalogue[MODEL]
        threads = settings.llamacpp_threads or os.cpu_count() or 1
        n_ctx = entry.n_ctx or settings.llamacpp_n_ctx  # as the provider loads it
        options: dict[str, Any] = {"temperature": 0, "seed": 7, "max_tokens": max_tokens}
        prompt = gateway.prompts.render(ROLE, TASK, PAYLOAD, "text", None).text

        direct = Llama(model_path=str(entry.locate()), n_ctx=n_ctx,
                       n_threads=threads, verbose=False)  # fmt: skip
        transport = httpx.ASGITransport(app=app)
        client = LLMGatewayClient(base_url="http://gateway", transport=transport, timeout=600,
                                  api_key=await app.state.services.auth.local_token())  # fmt: skip

        def call_direct() -> tuple[int, float]:
            direct.reset()
            started = time.perf_counter()
            result = direct.create_chat_completion(
                messages=[{"role": "user", "content": prompt}], **options
            )
            return result["usage"]["completion_tokens"], time.perf_counter() - started

        async def call_gateway() -> tuple[int, float]:
            started = time.perf_counter()
            response = await client.generate(role=ROLE, task=TASK, payload=PAYLOAD, mode="text",
                                             options=options)  # fmt: skip
            return response.usage["completion_tokens"], time.perf_counter() - started

        load = await client.generate(role=ROLE, task=TASK, payload=PAYLOAD, mode="text",
                                     options={**options, "max_tokens": 4})  # fmt: skip
        call_direct()  # warm both sides up
        rates: dict[str, list[float]] = {"direct": [], "gateway": []}
        tokens: dict[str, set[int]] = {"direct": set(), "gateway": set()}
        for i in range(rounds):
            order = ("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")
            for side in order:
                count, seconds = call_direct() if side == "direct" else await call_gateway()
                rates[side].append(count / seconds)
                tokens[side].add(count)
        await client.aclose()
        await close_app(app)
        direct.close()

    d, g = statistics.median(rates["direct"]), statistics.median(rates["gateway"])
    print(f"embedded model {MODEL}: {rounds} rounds of {max_tokens} tokens, "
          f"n_threads={threads}, n_ctx={n_ctx}, temperature 0")  # fmt: skip
    print(f"load on first call: {load.meta.get('load_ms')} ms")
    print(f"{'path':>22} {'median tok/s':>13} {'min':>7} {'max':>7} {'tokens':>8}")
    for side, label in (("direct", "llama-cpp-python"), ("gateway", "through the gateway")):
        r = rates[side]
        print(f"{label:>22} {statistics.median(r):>13.1f} {min(r):>7.1f} {max(r):>7.1f} "
              f"{'/'.join(map(str, sorted(tokens[side]))):>8}")  # fmt: skip
    print(f"ratio gateway/direct: {g / d:.3f} (target >= 0.95)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: pip install -e '.[local]'")
    asyncio.run(main(args.rounds, args.max_tokens))

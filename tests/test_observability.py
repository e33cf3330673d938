"""Metrics and traces: `/metrics` parses with Prometheus' own parser and moves as calls are
made; a campaign's trace shows every step and attempt with the GenAI attributes and the
request id; without OTEL_EXPORTER_OTLP_ENDPOINT nothing is traced, with it spans reach the
collector over OTLP/HTTP."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from sparklio.main import close_app, create_app
from sparklio.services import telemetry
from tests.conftest import client_for, make_settings
from tests.gateway_process import ROOT, Server
from tests.test_campaigns import events_of, start

CALL = {"role": "copywriter", "task": "channel_copy", "payload": {"product": "Dawon green tea"},
        "mode": "text"}  # fmt: skip


async def scrape(http: httpx.AsyncClient) -> dict[str, list[Any]]:
    """The samples of `/metrics`, by sample name, as the Prometheus parser reads them."""
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.use_span_exporter(exporter)
    try:
        yield exporter
    finally:
        telemetry.use_span_exporter(None)


async def test_metrics_parse_and_move_as_calls_are_made(
    app: FastAPI, http: httpx.AsyncClient
) -> None:
    before = await scrape(http)
    for _ in range(3):
        response = await http.post("/api/v1/llm/generate", json=CALL)
        assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    after = await scrape(http)

    call = {"role": "copywriter", "task": "channel_copy", "provider": "mock", "outcome": "ok"}
    calls = "sparklio_gateway_calls_total"
    assert value(after, calls, **call) - value(before, calls, **call) == 3
    attempts = "sparklio_gateway_attempts_total"
    assert (
        value(after, attempts, provider="mock", outcome="ok")
        - value(before, attempts, provider="mock", outcome="ok")
        == 3
    )
    tokens = "gen_ai_client_token_usage"
    for kind, used in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        labels = {"gen_ai_token_type": kind, "gen_ai_system": "mock"}
        assert (
            value(after, f"{tokens}_count", **labels) - value(before, f"{tokens}_count", **labels)
            == 3
        )
        grew = value(after, f"{tokens}_sum", **labels) - value(before, f"{tokens}_sum", **labels)
        assert grew >= usage[used] > 0
    duration = "gen_ai_client_operation_duration_seconds_count"
    assert (
        value(after, duration, gen_ai_system="mock") - value(before, duration, gen_ai_system="mock")
        == 3
    )
    # requests by their route's template and status, the scrape itself included
    route = {"http_route": "/api/v1/llm/generate", "http_response_status_code": "200"}
    requests = "http_server_request_duration_seconds_count"
    assert value(after, requests, **route) - value(before, requests, **route) == 3
    # this process's live state: the mock endpoint's breaker is closed, nothing waits
    assert [s.value for s in after["sparklio_endpoint_breaker_state"]
            if s.labels["endpoint"] == "mock"] == [0]  # fmt: skip
    assert value(after, "sparklio_endpoint_queue_depth", endpoint="mock") == 0
    assert "sparklio_calllog_buffered_records" in after


async def test_metrics_need_an_admin_unless_public(app: FastAPI) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code == 401
    user = await app.state.services.auth.create_user("m@example.com", "a long enough password")
    key, _ = await app.state.services.auth.create_api_key(user.id, "test")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                 headers={"Authorization": f"Bearer {key}"}) as member:  # fmt: skip
        response = await member.get("/metrics")
    assert response.status_code == 403 and "admin" in response.text

    public = create_app(make_settings(sparklio_home=app.state.services.settings.home,
                                      metrics_public=True))  # fmt: skip
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=public),
                                     base_url="http://gw") as anonymous:  # fmt: skip
            assert (await anonymous.get("/metrics")).status_code == 200
    finally:
        await close_app(public)


async def test_a_campaigns_trace_shows_every_step_and_attempt_with_its_request_id(
    spans: InMemorySpanExporter, app: FastAPI, http: httpx.AsyncClient
) -> None:
    before = await scrape(http)
    campaign_id = await start(http, channels=["instagram"])
    events = await events_of(http, campaign_id)
    assert events[-1]["event"] == "done"
    finished = [e["data"]["step"] for e in events if e["event"] == "step_finished"]

    ended = spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in ended}
    steps = [s for s in ended if s.name.startswith("campaign step ")]
    assert {s.attributes["sparklio.step"] for s in steps} >= {*finished, "start", "finish"}
    assert all(s.attributes["sparklio.outcome"] == "ok" for s in steps)
    assert all(s.attributes["sparklio.campaign_id"] == campaign_id for s in steps)

    assert len({s.context.trace_id for s in steps}) == 1  # the campaign is one trace

    calls = [s for s in ended if s.name.startswith("gateway ")]
    # a model call per step that asks a model (images are jobs: attempts of their own)
    assert len(calls) == len(finished) - 1
    for call in calls:
        assert call.attributes["gen_ai.system"] == "mock"
        assert call.attributes["gen_ai.usage.input_tokens"] > 0
        assert call.attributes["gen_ai.usage.output_tokens"] > 0
        # its HTTP request and the campaign step above it, in the campaign's trace
        request = by_id[call.parent.span_id]
        step = by_id[request.parent.span_id]
        assert request.name == "HTTP POST /api/v1/llm/generate"
        assert step in steps and call.context.trace_id == step.context.trace_id
        request_id = request.attributes[telemetry.REQUEST_ID_ATTRIBUTE]
        assert call.attributes[telemetry.REQUEST_ID_ATTRIBUTE] == request_id
        attempts = [s for s in ended if s.parent and s.parent.span_id == call.context.span_id]
        assert [a.name for a in attempts] == ["attempt mock/mock-v1"]
        attempt = attempts[0]
        assert attempt.attributes["gen_ai.system"] == "mock"
        assert attempt.attributes["gen_ai.request.model"] == "mock-v1"
        assert attempt.attributes["sparklio.outcome"] == "ok"
        assert attempt.attributes[telemetry.REQUEST_ID_ATTRIBUTE] == request_id
        if "gen_ai.response.model" in attempt.attributes:  # not a stream: usage when it ends
            assert (
                attempt.attributes["gen_ai.usage.input_tokens"]
                == (call.attributes["gen_ai.usage.input_tokens"])
            )
    streamed = [c for c in calls if c.attributes["sparklio.task"] == "channel_copy"]
    assert streamed  # the copy streams; the others' attempts carry their usage
    # every span of a request carries its id: the request's own and those under it
    for span in ended:
        if span.name.startswith(("HTTP ", "gateway ")) or span in calls:
            assert span.attributes.get(telemetry.REQUEST_ID_ATTRIBUTE), span.name
    after = await scrape(http)
    for step in finished:
        counted = "sparklio_campaign_steps_total"
        assert (
            value(after, counted, step=step, outcome="ok")
            - value(before, counted, step=step, outcome="ok")
            == 1
        )


async def test_without_an_otlp_endpoint_nothing_is_traced(
    monkeypatch: pytest.MonkeyPatch, app: FastAPI, http: httpx.AsyncClient
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert app.state.services.settings.otel_exporter_otlp_endpoint is None
    assert not telemetry.tracing_exporting()
    assert (await http.post("/api/v1/llm/generate", json=CALL)).status_code == 200
    assert not telemetry.tracing_exporting()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_with_an_otlp_endpoint_spans_reach_the_collector(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    app = create_app(make_settings(sparklio_home=tmp_path / "home"))
    try:
        assert telemetry.tracing_exporting()
        async with await client_for(app) as client:
            response = await client.post("/api/v1/llm/generate", json=CALL,
                                         headers={"X-Request-ID": "otlp-test-1"})  # fmt: skip
            assert response.status_code == 200
    finally:
        await close_app(app)
        telemetry.stop_tracing()  # exports what the batch holds
        collector.shutdown()
        collector.server_close()
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces"}
    body = b"".join(data for _, data in _Collector.received)
    assert b"otlp-test-1" in body and b"gen_ai.request.model" in body


def test_sparklio_serve_adds_up_its_workers_metrics_from_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real server: its worker process writes metric files under SPARKLIO_HOME/metrics,
    which /metrics reads (an admin's key: METRICS_PUBLIC is false by default)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    home = tmp_path / "home"
    env = {**os.environ, "SPARKLIO_HOME": str(home)}
    made = subprocess.run([sys.executable, "-m", "sparklio.cli", "create-test-users"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    keys = {u["role"]: u["api_key"] for u in json.loads((home / "test-users.json").read_text())}
    server = Server(home)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            member = {"Authorization": f"Bearer {keys['member']}"}
            admin = {"Authorization": f"Bearer {keys['admin']}"}
            assert client.get("/metrics", headers=member).status_code == 403
            for _ in range(2):
                response = client.post("/api/v1/llm/generate", json=CALL, headers=member)
                assert response.status_code == 200, response.text
            scraped = client.get("/metrics", headers=admin)
            assert scraped.status_code == 200, scraped.text
    finally:
        server.stop()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    call = {"role": "copywriter", "task": "channel_copy", "provider": "mock", "outcome": "ok"}
    assert value(samples, "sparklio_gateway_calls_total", **call) == 2
    assert value(samples, "gen_ai_client_token_usage_count", gen_ai_token_type="output") == 2
    (directory,) = (home / "metrics").iterdir()  # the serve process's own
    assert directory.name == str(server.proc.pid) and any(directory.glob("*.db"))

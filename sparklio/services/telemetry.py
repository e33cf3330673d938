"""Metrics (Prometheus) and traces (OpenTelemetry): every instrumentation call the gateway
makes goes through this module, so the others carry one line each.

Metrics are process-wide by nature (Prometheus counts per process, and `sparklio serve`'s
workers each write their own files under PROMETHEUS_MULTIPROC_DIR, which `/metrics` adds up),
so they live here, not in the container. Names and labels follow the OpenTelemetry GenAI
conventions where they apply (`gen_ai_client_token_usage`, `gen_ai_client_operation_duration`,
`http_server_request_duration`); the rest are `sparklio_*`.

Traces are off unless OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test installs an exporter
with `use_span_exporter`): then every span function returns None after one attribute read,
and the OpenTelemetry SDK is never imported. Spans: one per HTTP request, per gateway call,
per attempt (GenAI attributes) and per campaign step, each with the request id.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from sparklio.services.container import Services
    from sparklio.services.gateway.endpoints import Endpoint

log = logging.getLogger("sparklio.telemetry")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REQUEST_ID_ATTRIBUTE = "sparklio.request_id"
#: the breaker's states as the gauge shows them
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: OpenTelemetry GenAI's recommended buckets
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip

#: the request being served: every span started under it carries its id
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "sparklio_request_id", default=None
)


# ---------------------------------------------------------------------------- metrics


def use_multiprocess(home: Path) -> Path:
    """Make this process and the workers it forks write metrics to files, for `/metrics` to
    add up (`sparklio serve`). The user's PROMETHEUS_MULTIPROC_DIR is used as is; otherwise
    a private one under SPARKLIO_HOME/metrics, named after this process (those of serve
    processes no longer running are removed). Call before any metric is made."""
    chosen = os.environ.get(MULTIPROC_ENV)
    if chosen:
        path = Path(chosen)
    else:
        root = home / "metrics"
        root.mkdir(parents=True, exist_ok=True)
        for old in root.iterdir():
            if old.name.isdigit() and not _alive(int(old.name)):
                shutil.rmtree(old, ignore_errors=True)
        path = root / str(os.getpid())
        shutil.rmtree(path, ignore_errors=True)  # a pid reused: stale counts
        os.environ[MULTIPROC_ENV] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # chosen at import from the environment
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Metrics:
    """Every metric, made once per process on first use (after `use_multiprocess`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = reg = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        #: what each endpoint's gauges show
        self.shown: dict[str, tuple[int, int, int]] = {}
        self.http = Histogram(
            "http_server_request_duration_seconds", "HTTP requests served, by route.",
            ["http_request_method", "http_route", "http_response_status_code"], registry=reg,
        )  # fmt: skip
        self.calls = Counter(
            "sparklio_gateway_calls", "Gateway calls, by how they ended.",
            ["role", "task", "provider", "model", "outcome"], registry=reg,
        )  # fmt: skip
        self.attempts = Counter(
            "sparklio_gateway_attempts", "Attempts on endpoints, by how they ended.",
            ["provider", "model", "outcome"], registry=reg,
        )  # fmt: skip
        self.tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens a call used (input or output).",
            ["gen_ai_token_type", "gen_ai_system", "provider", "gen_ai_request_model"],
            buckets=TOKEN_BUCKETS, registry=reg,
        )  # fmt: skip
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds", "Gateway calls' duration, all tries.",
            ["gen_ai_system", "provider", "gen_ai_request_model", "outcome"],
            buckets=DURATION_BUCKETS, registry=reg,
        )  # fmt: skip
        self.cost = Counter(
            "sparklio_gateway_cost_usd", "What calls cost, from the routing file's prices.",
            ["provider", "model"], registry=reg,
        )  # fmt: skip
        self.cache = Counter(
            "sparklio_gateway_cache", "Response cache lookups (hit or miss).", ["result"],
            registry=reg,
        )  # fmt: skip
        self.queue_wait = Histogram(
            "sparklio_endpoint_queue_wait_seconds", "Time an attempt waited for a slot.",
            ["endpoint"], buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120), registry=reg,
        )  # fmt: skip
        # live* gauges: each worker's own value, dead workers left out
        self.queue_depth = Gauge(
            "sparklio_endpoint_queue_depth", "Calls waiting for a slot.", ["endpoint"],
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.in_flight = Gauge(
            "sparklio_endpoint_in_flight", "Calls running on the endpoint.", ["endpoint"],
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.breaker = Gauge(
            "sparklio_endpoint_breaker_state", "Circuit: 0 closed, 1 half open, 2 open.",
            ["endpoint"], multiprocess_mode="livemax", registry=reg,
        )  # fmt: skip
        self.buffered = Gauge(
            "sparklio_calllog_buffered_records", "Call records waiting to be written.",
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.spill_pending = Gauge(
            "sparklio_calllog_spill_pending_records", "Spilled records not yet replayed.",
            multiprocess_mode="livesum", registry=reg,
        )  # fmt: skip
        self.spilled = Counter(
            "sparklio_calllog_spilled_records", "Call records written to the spill file.",
            registry=reg,
        )  # fmt: skip
        self.steps = Counter(
            "sparklio_campaign_steps", "Campaign steps, by name and how they ended.",
            ["step", "outcome"], registry=reg,
        )  # fmt: skip

    def of(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: prometheus-client's `labels()` takes ~4 us (a
        lock and checks), a dict lookup ~0.1 us, and the label sets are few."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


_metrics: _Metrics | None = None


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        _metrics = _Metrics()
    return _metrics


def render() -> tuple[bytes, str]:
    """The exposition text and its content type. Reads every worker's files in multiprocess
    mode: run it off the event loop."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = metrics().registry
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def sample(services: Services) -> None:
    """Set the gauges of this process's live state: each endpoint's queue, calls in flight
    and breaker, and the call log's buffer. On the event loop (it reads what the loop
    changes); microseconds. Other workers' gauges are as of their last sample."""
    m = metrics()
    gateways: list[Any] = [services.gateway, services.media]
    for gateway in gateways:
        for name, state in gateway.endpoints.snapshot().items():
            _endpoint_gauges(m, name, state)
    stats = services.call_log.stats()
    m.buffered.set(stats.get("buffered", 0))
    m.spill_pending.set(stats.get("spilled", 0))


def _endpoint_gauges(m: _Metrics, name: str, state: Mapping[str, Any]) -> None:
    """Set an endpoint's gauges, unless they already show this (the usual case: a write
    to the multiprocess files costs ~3 us each)."""
    shown = (state["waiting"], state["in_flight"], BREAKER_STATES.get(str(state["circuit"]), 2))
    if m.shown.get(name) == shown:
        return
    m.shown[name] = shown
    m.of(m.queue_depth, name).set(shown[0])
    m.of(m.in_flight, name).set(shown[1])
    m.of(m.breaker, name).set(shown[2])


def call_done(entry: dict[str, Any], span: trace.Span | None, system: str | None) -> dict[str, Any]:
    """Count a finished gateway call (its call-log record) and end its span; the record."""
    m = metrics()
    provider, model = entry["provider"] or "none", entry["model"] or "none"
    outcome, system = entry["outcome"], system or "none"
    m.of(m.calls, entry["role"], entry["task"], provider, model, outcome).inc()
    m.of(m.duration, system, provider, model, outcome).observe(entry["latency_ms"] / 1000)
    prompt, completion = entry["prompt_tokens"], entry["completion_tokens"]
    if prompt or completion:
        m.of(m.tokens, "input", system, provider, model).observe(prompt)
        m.of(m.tokens, "output", system, provider, model).observe(completion)
    if entry["cost_usd"]:
        m.of(m.cost, provider, model).inc(entry["cost_usd"])
    if entry["cache"]:
        m.of(m.cache, entry["cache"]).inc()
    if span is not None:
        span.set_attributes({
            "gen_ai.system": system, "gen_ai.request.model": model,
            "gen_ai.usage.input_tokens": prompt, "gen_ai.usage.output_tokens": completion,
            "sparklio.outcome": outcome, "sparklio.provider": provider,
            "sparklio.cost_usd": entry["cost_usd"] or 0.0,
            "sparklio.cache": entry["cache"] or "off",
        })  # fmt: skip
        if outcome != "ok":
            span.set_status(trace.StatusCode.ERROR, outcome)
        span.end()
    return entry


def attempt_done(
    started: tuple[trace.Span, object] | None,
    endpoint: Endpoint[Any],
    model: str,
    outcome: str,
    queued_ms: float,
) -> None:
    """Count an attempt (and its wait for a slot), end its span, and set its endpoint's
    gauges: each worker's stay current as it works, not only when it answers a scrape."""
    m = metrics()
    name = endpoint.name
    m.of(m.attempts, name, model, outcome).inc()
    m.of(m.queue_wait, name).observe(queued_ms / 1000)
    _endpoint_gauges(m, name, endpoint.guard.snapshot())
    if started is not None:
        span, token = started
        span.set_attribute("sparklio.outcome", outcome)
        if outcome != "ok":
            span.set_status(trace.StatusCode.ERROR, outcome)
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]


def spilled(count: int) -> None:
    metrics().spilled.inc(count)


# ---------------------------------------------------------------------------- traces


class _Tracing:
    provider: TracerProvider | None = None
    tracer: trace.Tracer | None = None


def configure_tracing(endpoint: str | None) -> None:
    """Export spans over OTLP/HTTP to `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT, the base
    URL: /v1/traces is added as the OpenTelemetry specification says); None: no tracing.
    Once per process: a later call with an endpoint while one is set changes nothing."""
    if not endpoint or _Tracing.tracer is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url = endpoint.rstrip("/") + "/v1/traces"
    _install(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))  # exports off the loop
    log.info("traces are exported over OTLP to %s", url)


def use_span_exporter(exporter: SpanExporter | None) -> None:
    """Test hook: send every span to `exporter` as it ends (e.g. OpenTelemetry's
    InMemorySpanExporter); None turns tracing off again."""
    stop_tracing()
    if exporter is not None:
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        _install(SimpleSpanProcessor(exporter))


def tracing_exporting() -> bool:
    """Whether spans are being made (an exporter is set up)."""
    return _Tracing.tracer is not None


def stop_tracing() -> None:
    """Export what is pending and stop making spans."""
    if _Tracing.provider is not None:
        _Tracing.provider.shutdown()
    _Tracing.provider = _Tracing.tracer = None


def _install(processor: Any) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    class RequestIdProcessor(SpanProcessor):
        """The id of the request being served on every span started while it is."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            request_id = _request_id.get()
            if request_id:
                span.set_attribute(REQUEST_ID_ATTRIBUTE, request_id)

    provider = TracerProvider(resource=Resource.create({"service.name": "sparklio"}))
    provider.add_span_processor(RequestIdProcessor())
    provider.add_span_processor(processor)
    _Tracing.provider = provider
    _Tracing.tracer = provider.get_tracer("sparklio")


def call_span(role: str, task: str, request_id: str) -> trace.Span | None:
    """The span of one gateway call (not made current: its attempts name it as parent)."""
    tracer = _Tracing.tracer
    if tracer is None:
        return None
    return tracer.start_span(f"gateway {role}.{task}", attributes={
        "gen_ai.operation.name": "chat", "sparklio.role": role, "sparklio.task": task,
        REQUEST_ID_ATTRIBUTE: request_id,
    })  # fmt: skip


def attempt_started(
    parent: trace.Span | None, system: str, endpoint: str, model: str
) -> tuple[trace.Span, object] | None:
    """The span of one attempt, current until `attempt_done` (so the provider's work can
    add its usage with `attempt_usage`)."""
    tracer = _Tracing.tracer
    if tracer is None:
        return None
    context = trace.set_span_in_context(parent) if parent is not None else None
    span = tracer.start_span(f"attempt {endpoint}/{model}", context=context, attributes={
        "gen_ai.system": system, "gen_ai.request.model": model, "sparklio.provider": endpoint,
    }, kind=trace.SpanKind.CLIENT)  # fmt: skip
    return span, otel_context.attach(trace.set_span_in_context(span))


def attempt_usage(model: str, usage: Mapping[str, int]) -> None:
    """The answer's model and tokens, on the current attempt's span."""
    if _Tracing.tracer is None:
        return
    trace.get_current_span().set_attributes({
        "gen_ai.response.model": model,
        "gen_ai.usage.input_tokens": usage.get("prompt_tokens", 0),
        "gen_ai.usage.output_tokens": usage.get("completion_tokens", 0),
    })  # fmt: skip


@contextlib.contextmanager
def campaign_step(campaign_id: str, step: str) -> Iterator[None]:
    """One campaign step: counted by how it ended, and a span when tracing."""
    tracer = _Tracing.tracer
    outcome = "failed"
    span = None
    try:
        if tracer is None:
            yield
        else:
            span = tracer.start_span(f"campaign step {step}", _campaign_context(campaign_id),
                                     attributes={"sparklio.campaign_id": campaign_id,
                                                 "sparklio.step": step})  # fmt: skip
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                yield
        outcome = "ok"
    finally:
        if span is not None:
            span.set_attribute("sparklio.outcome", outcome)
            if outcome != "ok":
                span.set_status(trace.StatusCode.ERROR, outcome)
            span.end()
        (m := metrics()).of(m.steps, step, outcome).inc()


def _campaign_context(campaign_id: str) -> otel_context.Context:
    """One trace per campaign, whichever process runs which step and however often it is
    resumed: its id is made from the campaign's id, under a parent no process records
    (tracing backends show the steps under a "missing" root, all in one trace)."""
    digest = hashlib.blake2b(campaign_id.encode(), digest_size=24).digest()
    parent = trace.SpanContext(
        trace_id=int.from_bytes(digest[:16]) or 1, span_id=int.from_bytes(digest[16:]) or 1,
        is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )  # fmt: skip
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


class TelemetryMiddleware:
    """Times every HTTP request by its route (the route's template, never the raw path),
    and makes its span (current while it is served) when tracing. Inside
    RequestContextMiddleware: it reads the request id that one set."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        request_id = scope.get("state", {}).get("request_id")
        token = _request_id.set(request_id)
        tracer = _Tracing.tracer
        span = None
        try:
            if tracer is None:
                await self.app(scope, receive, send_status)
            else:
                span = tracer.start_span(
                    f"HTTP {scope['method']}", kind=trace.SpanKind.SERVER,
                    attributes={"http.request.method": scope["method"],
                                "url.path": scope["path"]},
                )  # fmt: skip
                with trace.use_span(span):
                    await self.app(scope, receive, send_status)
        finally:
            _request_id.reset(token)
            route = _route_template(scope)
            (m := metrics()).of(m.http, scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )
            if span is not None:
                span.update_name(f"HTTP {scope['method']} {route}")
                span.set_attributes({"http.route": route, "http.response.status_code": status})
                if status >= 500:
                    span.set_status(trace.StatusCode.ERROR, str(status))
                span.end()


def _route_template(scope: Scope) -> str:
    """The matched route's full template ("/api/v1/campaigns/{campaign_id}"), never the raw
    path (which would make a series per id). The route an included router matched has only
    its own part of the path: the prefix is the request path's leading segments, which the
    routers' prefixes (static here) are."""
    route = getattr(scope.get("route"), "path", None)
    if route is None:
        return "unmatched"
    path: str = scope["path"]
    extra = path.count("/") - route.count("/")
    return "/".join(path.split("/")[: extra + 1]) + route if extra > 0 else route

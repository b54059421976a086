"""OpenTelemetry tracing (`--otlp-endpoint`): a server span per request, honouring W3C `traceparent`,
with `tokenization`, `queue` and `inference` children.

Off by default. Then the SDK is never imported and the hot path pays one `tracer is None` test. The
Engine knows its phase timings only once a request is done (the batcher runs on its own thread), so
the phase spans are written afterwards with their measured start and end times.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from typing import Iterable, Iterator

log = logging.getLogger(__name__)

tracer = None  # an opentelemetry Tracer once `setup` ran
_provider = None
_propagator = None
_epoch_offset_ns = 0

# The request being served, for JSON log lines (`span`/`spans`): set by the transport, read by the
# log formatter. Holds a small dict so logging never needs the SDK.
current_request: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tei_request", default=None)

DEFAULT_SERVICE_NAME = "text-embeddings-inference.server"


def setup(endpoint: str, service_name: str = DEFAULT_SERVICE_NAME) -> None:
    """Export spans over OTLP/gRPC, always sampled (TEI's AlwaysOn), batched in the background."""
    global tracer, _provider, _propagator, _epoch_offset_ns
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if "://" not in endpoint:
        endpoint = "http://" + endpoint  # TEI's examples give a URL; a bare host:port means plaintext
    _provider = TracerProvider(resource=Resource.create({"service.name": service_name}), sampler=ALWAYS_ON)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _propagator = TraceContextTextMapPropagator()
    tracer = _provider.get_tracer("tei")
    _epoch_offset_ns = time.time_ns() - time.perf_counter_ns()
    log.info("Exporting traces to %s as %s", endpoint, service_name)


def enabled() -> bool:
    return tracer is not None


def shutdown() -> None:
    """Flush the spans still buffered (called on the way out)."""
    global tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    tracer = _provider = None


@contextlib.contextmanager
def request_span(name: str, headers: Iterable[tuple[str, str]] = (), **attributes) -> Iterator[object]:
    """The server span of one request (any transport). `headers` may carry W3C `traceparent` /
    `tracestate`, which make the caller's span the parent. Yields the span, or None when off."""
    if tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    context = _propagator.extract({k.lower(): v for k, v in headers})
    with tracer.start_as_current_span(name, context=context, kind=SpanKind.SERVER, attributes=attributes) as span:
        yield span


def _ns(perf_seconds: float) -> int:
    return int(perf_seconds * 1e9) + _epoch_offset_ns


def record_phases(start: float, tokenized: float, usage) -> None:
    """Children of the current span for one Engine call. Times are `time.perf_counter()` values;
    queue and inference are the per-item means the Engine reports."""
    from opentelemetry import trace

    queued = tokenized + usage.queue_time
    end = start + usage.total_time
    inferred = min(end, queued + usage.inference_time)
    for name, a, b in (("tokenization", start, tokenized), ("queue", tokenized, queued), ("inference", queued, inferred)):
        tracer.start_span(name, start_time=_ns(a)).end(end_time=_ns(b))
    trace.get_current_span().set_attributes(
        {
            "compute_chars": usage.chars,
            "compute_tokens": usage.tokens,
            "total_time_ms": usage.total_time * 1e3,
            "tokenization_time_ms": usage.tokenization_time * 1e3,
            "queue_time_ms": usage.queue_time * 1e3,
            "inference_time_ms": usage.inference_time * 1e3,
        }
    )


def log_fields() -> dict | None:
    """The current request as TEI's JSON logs show it (`span`), with trace ids when exporting."""
    span = current_request.get()
    if span is None or tracer is None:
        return span
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        span = {**span, "trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}
    return span

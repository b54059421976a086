"""Prometheus metrics with TEI's `te_*` names, labels and buckets, shared by every transport.

The Engine records what TEI's core records (items, durations, input lengths, failures by cause) and
the Batcher reports each formed batch through its observer hook, so HTTP, gRPC and any new route are
counted without code of their own. prometheus-client keeps the values; `render` writes them the way
TEI's exporter does: counters without the `_total` suffix and no `_created` samples.
"""
from __future__ import annotations

import asyncio
import bisect
import functools
import http.server
import inspect
import threading
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from .engine.errors import BatchTooLarge, Overloaded, TokenizerError, ValidationError, WrongModelType

REGISTRY = CollectorRegistry(auto_describe=False)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# TEI: every `*duration` histogram has 35 geometric buckets from 15 µs (×1.5 each: up to ~15 s).
DURATION_BUCKETS = tuple(1e-5 * 1.5**i for i in range(1, 36))
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(13))
BATCH_TOKENS_BUCKETS = tuple(float(2**i) for i in range(21))


class Histogram:
    """A Prometheus histogram that takes one value many times in one call.

    prometheus-client's `observe` takes one value per call and walks the buckets: a 32-input
    request would pay ~160 calls for its per-item metrics. Here a value costs one bisect, and the
    per-item means of a request go in with `count=n`."""

    def __init__(self, name: str, documentation: str, buckets, registry=REGISTRY):
        self.name, self.documentation = name, documentation
        self._bounds = list(buckets)
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float, count: int = 1) -> None:
        i = bisect.bisect_left(self._bounds, value)  # the first bucket with value <= le
        with self._lock:
            self._counts[i] += count
            self._sum += value * count

    def observe_each(self, values) -> None:
        with self._lock:
            for value in values:
                self._counts[bisect.bisect_left(self._bounds, value)] += 1
                self._sum += value

    def collect(self):
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip([*map(floatToGoString, self._bounds), "+Inf"], counts):
            cumulative += n
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


def _duration(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, DURATION_BUCKETS)


REQUEST_COUNT = Counter("te_request_count", "Requests received", ["method"], registry=REGISTRY)
REQUEST_SUCCESS = Counter("te_request_success", "Requests answered successfully", ["method"], registry=REGISTRY)
REQUEST_FAILURE = Counter("te_request_failure", "Failed requests by cause", ["err"], registry=REGISTRY)
_METHODS = ("single", "batch")
# Label lookups cost more than the increments: the hot path uses these children directly.
_COUNT = {method: REQUEST_COUNT.labels(method) for method in _METHODS}
_SUCCESS = {method: REQUEST_SUCCESS.labels(method) for method in _METHODS}
REQUEST_DURATION = _duration("te_request_duration", "End-to-end request time in seconds")
REQUEST_TOKENIZATION = _duration("te_request_tokenization_duration", "Tokenization time per request (mean per item)")
REQUEST_QUEUE = _duration("te_request_queue_duration", "Queue time per request (mean per item)")
REQUEST_INFERENCE = _duration("te_request_inference_duration", "Inference time per request (mean per item)")

# Per item (one input of a request), as TEI's core counts them: embeddings and predictions apart.
_ITEM_FAMILIES = {}
for _family in ("embed", "predict"):
    _ITEM_FAMILIES[_family] = (
        Counter(f"te_{_family}_count", f"{_family} items received", registry=REGISTRY),
        Counter(f"te_{_family}_success", f"{_family} items answered", registry=REGISTRY),
        _duration(f"te_{_family}_duration", f"{_family} time per item in seconds"),
        _duration(f"te_{_family}_tokenization_duration", f"{_family} tokenization time per item"),
        _duration(f"te_{_family}_queue_duration", f"{_family} queue time per item"),
        _duration(f"te_{_family}_inference_duration", f"{_family} inference time per item"),
    )

BATCH_SIZE = Histogram("te_batch_next_size", "Sequences per formed batch", BATCH_SIZE_BUCKETS)
BATCH_TOKENS = Histogram("te_batch_next_tokens", "Tokens per formed batch (unpadded)", BATCH_TOKENS_BUCKETS)
QUEUE_SIZE = Gauge("te_queue_size", "Sequences waiting in the queue", registry=REGISTRY)
_input_length: Histogram | None = None


# ---- what the Engine calls --------------------------------------------------------------------


def configure(max_input_length: int, batcher) -> None:
    """Per served model: input-length buckets are powers of 2 up to its limit (TEI's), and the
    queue gauge reads the live queue at scrape time, which costs nothing per request."""
    global _input_length
    if _input_length is not None:
        REGISTRY.unregister(_input_length)
    buckets = [float(2**i) for i in range(20) if 2**i <= max_input_length] or [1.0]
    _input_length = Histogram("te_request_input_length", "Tokens per item after truncation", buckets)
    ref = weakref.ref(batcher)
    QUEUE_SIZE.set_function(lambda: float(b.queue_size) if (b := ref()) is not None else 0.0)


class BatchObserver:
    """The Batcher's `observer`: called on the inference thread as each batch is formed."""

    def batch(self, size: int, tokens: int, queue_len: int) -> None:
        BATCH_SIZE.observe(size)
        BATCH_TOKENS.observe(tokens)


def _family(kind: str) -> str:
    return "predict" if kind == "predict" else "embed"


def items_received(kind: str, n: int) -> None:
    _ITEM_FAMILIES[_family(kind)][0].inc(n)


def items_done(kind: str, lengths, usage) -> None:
    """Every item of a request succeeded. `usage` holds the request's per-item means."""
    _, success, total, tokenization, queue, inference = _ITEM_FAMILIES[_family(kind)]
    n = len(lengths)
    success.inc(n)
    total.observe(usage.total_time, n)
    tokenization.observe(usage.tokenization_time, n)
    queue.observe(usage.queue_time, n)
    inference.observe(usage.inference_time, n)
    if _input_length is not None:
        _input_length.observe_each(lengths)


# ---- request level: the Engine's public operations, whatever the transport ---------------------


def failure_label(exc: BaseException) -> str:
    """TEI's `err` label for an error: batch_size, validation, model_type, overloaded, tokenization,
    inference (anything the backend or an unexpected bug raised) or dropped (the caller went away)."""
    if isinstance(exc, BatchTooLarge):
        return "batch_size"
    if isinstance(exc, Overloaded):
        return "overloaded"
    if isinstance(exc, WrongModelType):
        return "model_type"
    if isinstance(exc, TokenizerError):
        return "tokenization"
    if isinstance(exc, ValidationError):
        return "validation"
    if isinstance(exc, asyncio.CancelledError):
        return "dropped"
    return "inference"


def request_received(method: str) -> None:
    _COUNT[method].inc()


def request_failed(exc: BaseException) -> None:
    REQUEST_FAILURE.labels(failure_label(exc)).inc()


def request_succeeded(method: str, usage) -> None:
    _SUCCESS[method].inc()
    REQUEST_DURATION.observe(usage.total_time)
    REQUEST_TOKENIZATION.observe(usage.tokenization_time)
    REQUEST_QUEUE.observe(usage.queue_time)
    REQUEST_INFERENCE.observe(usage.inference_time)


def metered(items: str | None):
    """Decorate an Engine operation: te_request_count / success / failure and request durations.

    `items` names the argument that holds the inputs: one input is a "single" request, more are a
    "batch" (TEI decides by the JSON shape, which the Engine never sees: a one-element list counts
    as single here). With None, only failures are counted, as TEI does for /tokenize and /decode.
    """

    def wrap(fn):
        position = list(inspect.signature(fn).parameters).index(items) - 1 if items else -1  # after self

        @functools.wraps(fn)
        async def call(self, *args, **kwargs):
            if items is None:
                try:
                    return await fn(self, *args, **kwargs)
                except BaseException as exc:
                    request_failed(exc)
                    raise
            given = kwargs[items] if items in kwargs else args[position]
            method = "single" if len(given) == 1 else "batch"
            request_received(method)
            try:
                result = await fn(self, *args, **kwargs)
            except BaseException as exc:
                request_failed(exc)
                raise
            request_succeeded(method, result.usage)
            return result

        return call

    return wrap


# ---- exposition -------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _labels(labels: dict) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render() -> bytes:
    """Prometheus text format as TEI's exporter writes it."""
    out: list[str] = []
    for family in REGISTRY.collect():
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        if not samples:
            continue  # a labelled metric nobody has recorded yet: TEI shows nothing either
        out.append(f"# HELP {family.name} {family.documentation}\n# TYPE {family.name} {family.type}\n")
        for s in samples:
            name = family.name if family.type == "counter" else s.name
            out.append(f"{name}{_labels(s.labels)} {floatToGoString(s.value)}\n")
    return "".join(out).encode()


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = render()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # scrapes are not worth a log line
        pass


def start_prometheus_listener(port: int, host: str = "0.0.0.0") -> http.server.ThreadingHTTPServer:
    """Serve the metrics on their own port from a daemon thread, as TEI's gRPC builds do with
    `--prometheus-port` (every path answers). Call `.shutdown()` on the result to stop it."""
    server = http.server.ThreadingHTTPServer((host, port), _MetricsHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="prometheus", daemon=True).start()
    return server

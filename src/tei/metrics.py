"""Prometheus metrics with TEI's `te_*` names, labels and buckets, shared by every transport.

Each Engine records what TEI's core records (items, durations, input lengths, failures by cause) in
its own `Metrics`, labelled with its served model's name, and its Batcher reports each formed batch,
so HTTP, gRPC and any new route are counted without code of their own. prometheus-client keeps the values; `render` writes them the way
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
    per-item means of a request go in with `count=n`. With `labelnames`, `labels(...)` gives each
    label set its own child (and, if asked, its own buckets: input lengths are per model)."""

    def __init__(self, name: str, documentation: str, buckets, registry=REGISTRY, labelnames=()):
        self.name, self.documentation = name, documentation
        self._buckets = tuple(buckets)
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple, _HistogramChild] = {}
        self._lock = threading.Lock()
        if not self._labelnames:
            self._children[()] = _HistogramChild(self._buckets)
        registry.register(self)

    def labels(self, *values: str, buckets=None) -> "_HistogramChild":
        """The child of these label values; new `buckets` replace it (a model served again)."""
        with self._lock:
            child = self._children.get(values)
            if child is None or (buckets is not None and child.bounds != list(buckets)):
                child = self._children[values] = _HistogramChild(buckets or self._buckets)
            return child

    def observe(self, value: float, count: int = 1) -> None:
        self._children[()].observe(value, count)

    def observe_each(self, values) -> None:
        self._children[()].observe_each(values)

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=self._labelnames)
        with self._lock:
            children = list(self._children.items())
        for values, child in children:
            buckets, total = child.snapshot()
            family.add_metric(list(values), buckets, total)
        yield family


class _HistogramChild:
    def __init__(self, buckets):
        self.bounds = list(buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float, count: int = 1) -> None:
        i = bisect.bisect_left(self.bounds, value)  # the first bucket with value <= le
        with self._lock:
            self._counts[i] += count
            self._sum += value * count

    def observe_each(self, values) -> None:
        with self._lock:
            for value in values:
                self._counts[bisect.bisect_left(self.bounds, value)] += 1
                self._sum += value

    def snapshot(self):
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, n in zip([*map(floatToGoString, self.bounds), "+Inf"], counts):
            cumulative += n
            buckets.append((bound, cumulative))
        return buckets, total


# Every te_* metric carries the served model's name as its last label.
MODEL = "model"


def _duration(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, DURATION_BUCKETS, labelnames=(MODEL,))


REQUEST_COUNT = Counter("te_request_count", "Requests received", ["method", MODEL], registry=REGISTRY)
REQUEST_SUCCESS = Counter("te_request_success", "Requests answered successfully", ["method", MODEL], registry=REGISTRY)
REQUEST_FAILURE = Counter("te_request_failure", "Failed requests by cause", ["err", MODEL], registry=REGISTRY)
_METHODS = ("single", "batch")
REQUEST_DURATION = _duration("te_request_duration", "End-to-end request time in seconds")
REQUEST_TOKENIZATION = _duration("te_request_tokenization_duration", "Tokenization time per request (mean per item)")
REQUEST_QUEUE = _duration("te_request_queue_duration", "Queue time per request (mean per item)")
REQUEST_INFERENCE = _duration("te_request_inference_duration", "Inference time per request (mean per item)")

# Per item (one input of a request), as TEI's core counts them: embeddings and predictions apart.
_ITEM_FAMILIES = {}
for _family in ("embed", "predict"):
    _ITEM_FAMILIES[_family] = (
        Counter(f"te_{_family}_count", f"{_family} items received", [MODEL], registry=REGISTRY),
        Counter(f"te_{_family}_success", f"{_family} items answered", [MODEL], registry=REGISTRY),
        _duration(f"te_{_family}_duration", f"{_family} time per item in seconds"),
        _duration(f"te_{_family}_tokenization_duration", f"{_family} tokenization time per item"),
        _duration(f"te_{_family}_queue_duration", f"{_family} queue time per item"),
        _duration(f"te_{_family}_inference_duration", f"{_family} inference time per item"),
    )

BATCH_SIZE = Histogram("te_batch_next_size", "Sequences per formed batch", BATCH_SIZE_BUCKETS, labelnames=(MODEL,))
BATCH_TOKENS = Histogram("te_batch_next_tokens", "Tokens per formed batch (unpadded)", BATCH_TOKENS_BUCKETS,
                         labelnames=(MODEL,))
QUEUE_SIZE = Gauge("te_queue_size", "Sequences waiting in the queue", [MODEL], registry=REGISTRY)
INPUT_LENGTH = Histogram("te_request_input_length", "Tokens per item after truncation", [1.0], labelnames=(MODEL,))


def _family(kind: str) -> str:
    return "predict" if kind == "predict" else "embed"


class Metrics:
    """One served model's te_* series. The Engine records requests and items through it, and the
    Batcher reports each formed batch (`batch`); label lookups happen once, here, not per request."""

    def __init__(self, model: str, max_input_length: int):
        self.model = model
        self._count = {m: REQUEST_COUNT.labels(m, model) for m in _METHODS}
        self._success = {m: REQUEST_SUCCESS.labels(m, model) for m in _METHODS}
        self._request = tuple(h.labels(model) for h in
                              (REQUEST_DURATION, REQUEST_TOKENIZATION, REQUEST_QUEUE, REQUEST_INFERENCE))
        self._items = {
            family: (count.labels(model), success.labels(model), *(h.labels(model) for h in histograms))
            for family, (count, success, *histograms) in _ITEM_FAMILIES.items()
        }
        self._batch_size, self._batch_tokens = BATCH_SIZE.labels(model), BATCH_TOKENS.labels(model)
        # TEI's input-length buckets: powers of 2 up to the model's limit.
        buckets = [float(2**i) for i in range(20) if 2**i <= max_input_length] or [1.0]
        self._input_length = INPUT_LENGTH.labels(model, buckets=buckets)

    def watch_queue(self, batcher) -> None:
        """The gauge reads the live queue at scrape time, which costs nothing per request."""
        ref = weakref.ref(batcher)
        QUEUE_SIZE.labels(self.model).set_function(lambda: float(b.queue_size) if (b := ref()) is not None else 0.0)

    def batch(self, size: int, tokens: int) -> None:
        """Called on the inference thread as each batch is formed."""
        self._batch_size.observe(size)
        self._batch_tokens.observe(tokens)

    def items_received(self, kind: str, n: int) -> None:
        self._items[_family(kind)][0].inc(n)

    def items_done(self, kind: str, lengths, usage) -> None:
        """Every item of a request succeeded. `usage` holds the request's per-item means."""
        _, success, total, tokenization, queue, inference = self._items[_family(kind)]
        n = len(lengths)
        success.inc(n)
        total.observe(usage.total_time, n)
        tokenization.observe(usage.tokenization_time, n)
        queue.observe(usage.queue_time, n)
        inference.observe(usage.inference_time, n)
        self._input_length.observe_each(lengths)

    def request_received(self, method: str) -> None:
        self._count[method].inc()

    def request_failed(self, exc: BaseException) -> None:
        REQUEST_FAILURE.labels(failure_label(exc), self.model).inc()

    def request_succeeded(self, method: str, usage) -> None:
        self._success[method].inc()
        for histogram, value in zip(self._request, (usage.total_time, usage.tokenization_time,
                                                    usage.queue_time, usage.inference_time)):
            histogram.observe(value)


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


def metered(items: str | None):
    """Decorate an Engine operation: te_request_count / success / failure and request durations,
    recorded in the Engine's own `metrics`.

    `items` names the argument that holds the inputs: one input is a "single" request, more are a
    "batch" (TEI decides by the JSON shape, which the Engine never sees: a one-element list counts
    as single here). With None, only failures are counted, as TEI does for /tokenize and /decode.
    """

    def wrap(fn):
        position = list(inspect.signature(fn).parameters).index(items) - 1 if items else -1  # after self

        @functools.wraps(fn)
        async def call(self, *args, **kwargs):
            recorder: Metrics = self.metrics
            if items is None:
                try:
                    return await fn(self, *args, **kwargs)
                except BaseException as exc:
                    recorder.request_failed(exc)
                    raise
            given = kwargs[items] if items in kwargs else args[position]
            method = "single" if len(given) == 1 else "batch"
            recorder.request_received(method)
            try:
                result = await fn(self, *args, **kwargs)
            except BaseException as exc:
                recorder.request_failed(exc)
                raise
            recorder.request_succeeded(method, result.usage)
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

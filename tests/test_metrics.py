"""Prometheus metrics: TEI's te_* names, types, labels and buckets, at /metrics and on a separate port."""
from __future__ import annotations

import re

import httpx
import pytest
from prod_util import tiny_embedder
from prometheus_client.parser import text_string_to_metric_families
from server_process import ServerProcess, free_port

from tei import metrics

MAX_LENGTH = 32


@pytest.fixture(scope="module")
def server(models_dir):
    folder = tiny_embedder(models_dir, MAX_LENGTH)
    with ServerProcess("--model-id", str(folder), "--max-concurrent-requests", "2", "--max-client-batch-size", "4",
                       "--max-batch-tokens", "1024", "--api-key", "k", "--served-model-name", "tiny") as proc:
        yield proc


MODEL_LABEL = re.compile(r',?model="([^"]*)"')


def _scrape(url: str, model: str | None = None) -> tuple[str, dict]:
    """The samples by name and labels, without the `model` label; every te_* sample must carry it
    (and name `model`, when given)."""
    r = httpx.get(url + "/metrics", timeout=10)  # no key: TEI leaves /metrics open
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    values = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            labels = MODEL_LABEL.findall(name)
            assert len(labels) == 1 and (model is None or labels == [model]), line
            name = _without_model(name)
            values[name] = float(value)
    return r.text, values


def test_requests_successes_and_failures_by_cause(server):
    http = httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": "Bearer k"})
    assert http.post("/embed", json={"inputs": "one"}).status_code == 200
    assert http.post("/embed", json={"inputs": ["one", "two"]}).status_code == 200
    assert http.post("/embed", json={"inputs": ["x"] * 5}).status_code == 413
    assert http.post("/embed", json={"inputs": ["x"] * 3}).status_code == 429
    assert http.post("/embed", json={"inputs": "word " * 100, "truncate": False}).status_code == 422
    assert http.post("/embed", json={"inputs": "hi", "dimensions": 0}).status_code == 422
    assert http.post("/decode", json={"ids": [10**9]}).status_code == 422
    text, v = _scrape(server.url, model="tiny")

    assert v['te_request_count{method="single"}'] == 3  # "one", the too-long text, dimensions
    assert v['te_request_count{method="batch"}'] == 3
    assert v['te_request_success{method="single"}'] == 1 and v['te_request_success{method="batch"}'] == 1
    assert v['te_request_failure{err="batch_size"}'] == 1
    assert v['te_request_failure{err="overloaded"}'] == 1
    assert v['te_request_failure{err="validation"}'] == 3
    for family in ("request", "embed"):
        successes = 2 if family == "request" else 3
        for phase in ("", "tokenization_", "queue_", "inference_"):
            assert v[f"te_{family}_{phase}duration_count"] == successes, (family, phase)
            assert v[f"te_{family}_{phase}duration_sum"] >= 0
    assert v["te_embed_success"] == 3
    assert v["te_embed_count"] >= 3 + 3  # the overloaded request's items were received too
    assert v["te_request_input_length_count"] == 3
    assert v["te_request_input_length_sum"] == 3 + 3 + 3  # [CLS] one [SEP], [CLS] two [SEP]
    assert v["te_batch_next_size_count"] >= 2 and v["te_batch_next_tokens_sum"] >= 9
    assert "te_queue_size" in v


def _without_model(text: str) -> str:
    return MODEL_LABEL.sub("", text).replace("{,", "{").replace("{}", "")


def test_exposition_is_teis(server):
    text, v = _scrape(server.url, model="tiny")
    assert 'le="+Inf",model="tiny"}' in text or 'model="tiny",le="+Inf"}' in text
    text = _without_model(text)
    # Counters carry no `_total` suffix and there are no `_created` samples, as with TEI's exporter.
    assert "_total" not in text and "_created" not in text
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name in ("te_request_count", "te_request_success", "te_request_failure", "te_embed_count",
                 "te_embed_success"):
        assert types[name] == "counter", name
    for name in ("te_request_duration", "te_request_tokenization_duration", "te_request_queue_duration",
                 "te_request_inference_duration", "te_embed_duration", "te_embed_tokenization_duration",
                 "te_embed_queue_duration", "te_embed_inference_duration", "te_request_input_length",
                 "te_batch_next_size", "te_batch_next_tokens"):
        assert types[name] == "histogram", name
    assert types["te_queue_size"] == "gauge"
    # Buckets: 35 geometric ones from 15 µs for durations, powers of 2 for sizes and lengths.
    bounds = [float(b) for b in re.findall(r'^te_request_duration_bucket\{le="([^"]+)"\}', text, re.M)]
    assert len(bounds) == 36 and bounds[-1] == float("inf")
    assert bounds[0] == pytest.approx(1.5e-5) and bounds[1] / bounds[0] == pytest.approx(1.5)
    lengths = [float(b) for b in re.findall(r'^te_request_input_length_bucket\{le="([^"]+)"\}', text, re.M)]
    assert lengths == [1, 2, 4, 8, 16, 32, float("inf")]
    sizes = [float(b) for b in re.findall(r'^te_batch_next_size_bucket\{le="([^"]+)"\}', text, re.M)]
    assert sizes[:-1] == [2.0**i for i in range(13)]
    tokens = [float(b) for b in re.findall(r'^te_batch_next_tokens_bucket\{le="([^"]+)"\}', text, re.M)]
    assert tokens[:-1] == [2.0**i for i in range(21)]
    # A standard parser reads it all.
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"te_request_duration", "te_queue_size", "te_batch_next_size"} <= families


def test_separate_prometheus_listener():
    """What the gRPC mode serves on --prometheus-port: the same text on every path."""
    from tei.engine.engine import Usage
    from tei.engine.errors import TokenizerError

    recorder = metrics.Metrics("m", MAX_LENGTH)
    recorder.request_failed(TokenizerError("x"))
    recorder.request_succeeded("single", Usage())
    port = free_port()
    listener = metrics.start_prometheus_listener(port, "127.0.0.1")
    try:
        for path in ("/metrics", "/"):
            r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
            assert r.status_code == 200 and r.headers["content-type"] == metrics.CONTENT_TYPE
            assert 'te_request_failure{err="tokenization",model="m"}' in r.text
            assert "# TYPE te_request_duration histogram" in r.text
    finally:
        listener.shutdown()
        listener.server_close()


def test_engine_counts_wrong_model_type_whatever_the_transport(models_dir):
    from engine_util import engine_for, run

    from tei.engine.errors import WrongModelType

    engine = engine_for(tiny_embedder(models_dir, MAX_LENGTH))

    def value(name, **labels):
        return metrics.REGISTRY.get_sample_value(name, {**labels, "model": engine.name}) or 0.0

    try:
        before = value("te_request_failure_total", err="model_type")
        count = value("te_request_count_total", method="batch")
        with pytest.raises(WrongModelType):
            run(engine.predict(["a", "b"]))
        assert value("te_request_failure_total", err="model_type") == before + 1
        assert value("te_request_count_total", method="batch") == count + 1
        success = value("te_embed_success_total")
        run(engine.embed(["a", "b"]))
        assert value("te_embed_success_total") == success + 2
    finally:
        engine.close()


def test_histogram_buckets_are_inclusive_and_take_counts():
    from prometheus_client import CollectorRegistry

    h = metrics.Histogram("te_test_duration", "test", metrics.DURATION_BUCKETS, registry=CollectorRegistry())
    h.observe(metrics.DURATION_BUCKETS[0])  # on a bound: counted in that bucket (le is inclusive)
    h.observe(0.004, count=3)
    h.observe_each([1e9, 0.0])
    (family,) = h.collect()
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("te_test_duration_bucket", "1.5000000000000002e-05")] == 2  # the bound and 0.0
    assert samples[("te_test_duration_bucket", "0.004378938903808594")] == 5
    assert samples[("te_test_duration_bucket", "+Inf")] == 6
    assert samples[("te_test_duration_count", None)] == 6
    assert samples[("te_test_duration_sum", None)] == pytest.approx(metrics.DURATION_BUCKETS[0] + 0.012 + 1e9)


def test_failure_labels_cover_every_engine_error():
    import asyncio

    from tei.engine import errors

    cases = {
        errors.BatchTooLarge(5, 4): "batch_size",
        errors.Overloaded(): "overloaded",
        errors.WrongModelType("x"): "model_type",
        errors.TokenizerError("x"): "tokenization",
        errors.ValidationError("x"): "validation",
        errors.EmptyInput("x"): "validation",
        errors.BackendError("x"): "inference",
        asyncio.CancelledError(): "dropped",
    }
    for exc, label in cases.items():
        assert metrics.failure_label(exc) == label, exc

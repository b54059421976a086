"""OpenTelemetry traces to a real OTLP/gRPC collector on 127.0.0.1, and JSON log lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import httpx
import pytest
from otlp_collector import collector  # noqa: F401 (fixture)
from prod_util import tiny_embedder
from server_process import ServerProcess

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SERVICE = "tei-under-test"


def test_spans_reach_the_collector_with_parent_links(models_dir, collector):
    folder = tiny_embedder(models_dir)
    server = ServerProcess("--model-id", str(folder), "--otlp-endpoint", collector.endpoint,
                           "--otlp-service-name", SERVICE, "--max-batch-tokens", "1024").start()
    try:
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        r = httpx.post(server.url + "/embed", json={"inputs": ["hello", "world"]},
                       headers={"traceparent": traceparent}, timeout=30)
        assert r.status_code == 200
        assert httpx.post(server.url + "/embed", json={"inputs": "no parent"}, timeout=30).status_code == 200
        assert httpx.post(server.url + "/embed", json={"inputs": ""}, timeout=30).status_code == 422
    finally:
        code = server.stop()  # a graceful stop flushes the spans still buffered
    assert code == 0, server.output()

    spans = [span for _, span in collector.spans]
    assert {attrs.get("service.name") for attrs, _ in collector.spans} == {SERVICE}
    requests = [s for s in spans if s.name == "POST /embed"]
    assert len(requests) == 3, [s.name for s in spans]
    assert not [s for s in spans if "health" in s.name]  # probes are not traced

    # The request with a traceparent continues the caller's trace...
    (root,) = [s for s in requests if s.trace_id.hex() == TRACE_ID]
    assert root.parent_span_id.hex() == PARENT_ID
    assert root.kind == root.SPAN_KIND_SERVER
    attrs = {a.key: a.value for a in root.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    assert attrs["compute_tokens"].int_value == 6
    # ... and its phases are its children, inside its time window, in order.
    children = {s.name: s for s in spans if s.parent_span_id == root.span_id}
    assert set(children) == {"tokenization", "queue", "inference"}
    slack = 5_000_000  # ns: the phase spans are written from perf_counter readings
    previous_end = root.start_time_unix_nano - slack
    for name in ("tokenization", "queue", "inference"):
        child = children[name]
        assert child.trace_id == root.trace_id
        assert previous_end - slack <= child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= root.end_time_unix_nano + slack
        previous_end = child.end_time_unix_nano

    # The request without one starts a trace of its own, with its own phases.
    (orphan,) = [s for s in requests if s.trace_id.hex() != TRACE_ID and not any(
        a.key == "http.response.status_code" and a.value.int_value == 422 for a in s.attributes)]
    assert orphan.parent_span_id == b""
    assert {s.name for s in spans if s.parent_span_id == orphan.span_id} == {"tokenization", "queue", "inference"}


def test_tracing_off_loads_no_sdk_and_adds_no_middleware(models_dir):
    code = f"""
import sys
from tei.app import build_engines
from tei.server.app import create_app
from tei.settings import ModelSettings, ServerSettings
from tei import tracing
settings = ServerSettings.single(ModelSettings.from_options(
    model_id={str(tiny_embedder(models_dir))!r}, device="cpu", max_batch_tokens=1024))
engines = build_engines(settings)
app = create_app(engines, settings)
names = [m.cls.__name__ for m in app.user_middleware]
print(tracing.tracer is None, "opentelemetry.sdk" in sys.modules, "RequestSpans" in names)
engines.close()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "False"]


@pytest.mark.parametrize("disable_spans", [False, True])
def test_json_logs(models_dir, disable_spans):
    args = ["--model-id", str(tiny_embedder(models_dir)), "--json-output", "--max-batch-tokens", "1024"]
    if disable_spans:
        args.append("--disable-spans")
    with ServerProcess(*args) as server:
        assert httpx.post(server.url + "/embed", json={"inputs": ""}, timeout=30).status_code == 422
        assert httpx.post(server.url + "/predict", json={"inputs": "a"}, timeout=30).status_code == 424
    lines = [line for line in server.output().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # nothing but JSON lines
    for record in records:
        assert {"timestamp", "level", "message", "target", "filename", "line_number"} <= set(record), record
        assert record["timestamp"].endswith("Z") and record["level"] in ("DEBUG", "INFO", "WARN", "ERROR")
    messages = [r["message"] for r in records]
    assert "Ready" in messages and any(m.startswith("Starting HTTP server") for m in messages)
    (refusal,) = [r for r in records if r["message"] == "Input validation error: `inputs` cannot be empty"]
    assert refusal["level"] == "WARN" and refusal["filename"] == os.path.join("tei", "server", "errors.py")
    (wrong_route,) = [r for r in records if r["message"] == "Backend error: Model is not a classifier model"]
    assert wrong_route["level"] == "WARN"  # the caller's mistake, not a failing backend
    if disable_spans:
        assert not any("span" in r or "spans" in r for r in records)
    else:
        assert refusal["span"] == {"name": "request", "method": "POST", "path": "/embed"}
        assert refusal["spans"] == [refusal["span"]]

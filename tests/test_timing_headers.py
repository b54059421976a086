"""TEI's x-* timing headers: present on success, consistent with each other, absent on errors.

TEI reports the request's wall time in x-compute-time and x-total-time, and the mean per item of
tokenization, queue and inference time, all in whole milliseconds.
"""
from __future__ import annotations

import httpx

TIMES = ("x-compute-time", "x-total-time", "x-tokenization-time", "x-queue-time", "x-inference-time")


def test_timing_headers_add_up(default_server):
    texts = ["a passage of some length about package managers and their summaries " * 20] * 8
    r = httpx.post(default_server.url + "/embed", json={"inputs": texts}, timeout=60)
    assert r.status_code == 200
    values = {name: int(r.headers[name]) for name in TIMES}
    assert all(v >= 0 for v in values.values())
    assert values["x-compute-time"] == values["x-total-time"]
    # Means per item can never exceed the whole request's time, nor can their sum.
    parts = values["x-tokenization-time"] + values["x-queue-time"] + values["x-inference-time"]
    assert parts <= values["x-total-time"] + 2  # each value is truncated to whole ms on its own
    assert values["x-inference-time"] >= 1  # eight 256-token passages take a measurable forward pass
    assert int(r.headers["x-compute-tokens"]) == 8 * 256  # each one cut at the model's 256 tokens
    assert int(r.headers["x-compute-characters"]) == sum(map(len, texts))


def test_openai_route_sends_them_too(default_server):
    r = httpx.post(default_server.url + "/v1/embeddings", json={"input": ["hello", "world"]}, timeout=30)
    assert r.status_code == 200
    assert all(name in r.headers for name in TIMES)
    assert r.headers["x-compute-tokens"] == str(r.json()["usage"]["prompt_tokens"])


def test_errors_carry_no_timing_headers(default_server):
    r = httpx.post(default_server.url + "/embed", json={"inputs": ""}, timeout=30)
    assert r.status_code == 422
    assert not any(name in r.headers for name in TIMES)

"""Graceful shutdown of a real server process, /health, and a model that fails mid-batch."""
from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from engine_util import engine_for
from prod_util import ThreadedServer, tiny_embedder
from server_process import ServerProcess

from tei import metrics
from tei.server.app import create_app
from tei.settings import ModelSettings, ServerSettings


def _queued(url: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("te_queue_size{"):  # one series per served model
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_sigterm_drains_in_flight_requests_and_exits_0():
    # The bundled MiniLM with a small token budget: each request below takes several forward passes.
    server = ServerProcess("--max-batch-tokens", "1024").start()
    texts = [f"document {i} " + "lorem ipsum dolor sit amet " * 40 for i in range(16)]
    finished: dict[int, float] = {}

    def send(i: int) -> httpx.Response:
        r = httpx.post(server.url + "/embed", json={"inputs": texts}, timeout=120)
        finished[i] = time.monotonic()
        return r

    pool = ThreadPoolExecutor(6)
    try:
        pending = [pool.submit(send, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while _queued(server.url) == 0:  # wait until work is really queued behind the model
            assert time.monotonic() < deadline and not any(f.done() for f in pending)
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections once shutdown began
            httpx.post(server.url + "/embed", json={"inputs": "late"}, timeout=5)
        responses = [f.result(timeout=120) for f in pending]
        code = server.proc.wait(60)
    finally:
        pool.shutdown(wait=False)
        server.stop()
    assert [r.status_code for r in responses] == [200] * 6
    assert all(len(r.json()) == 16 for r in responses)
    assert max(finished.values()) > signalled  # some of them really were in flight at SIGTERM
    assert code == 0, server.output()
    assert "Received SIGTERM" in server.output()


def test_sigint_exits_0(models_dir):
    server = ServerProcess("--model-id", str(tiny_embedder(models_dir)), "--max-batch-tokens", "1024").start()
    assert httpx.post(server.url + "/embed", json={"inputs": "hi"}, timeout=30).status_code == 200
    assert server.stop(signal.SIGINT) == 0, server.output()


# ---- a model that fails ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulty(models_dir):
    """A real HTTP server over a real Engine whose model raises on batches holding a marker token,
    returns garbage (a wrong output shape) for another, and raises on every batch while
    `state["broken"]` is set. One sequence per batch, so a failing batch holds exactly its request."""
    folder = tiny_embedder(models_dir)
    engine = engine_for(folder, max_batch_requests=1, max_batch_tokens=1024)
    marker = engine.tokenizers.main.token_to_id("explode")
    garbage = engine.tokenizers.main.token_to_id("garbage")
    assert marker is not None and garbage is not None
    state = {"broken": False}
    forward = engine.model.forward

    def failing_forward(batch, want_hidden=False):
        if state["broken"] or bool((batch.input_ids == marker).any()):
            raise RuntimeError("injected fault")
        out = forward(batch, want_hidden)
        if bool((batch.input_ids == garbage).any()):
            out.pooled = out.pooled[:, :3]
        return out

    engine.model.forward = failing_forward
    app = create_app(engine, ServerSettings.single(ModelSettings.from_options(model_id=str(folder))))
    try:
        with ThreadedServer(app) as server:
            yield server, state, engine.name
    finally:
        engine.close()


BACKEND_ERROR = {"error": "Backend error: inference failed: injected fault", "error_type": "Backend"}


def test_failing_batch_fails_only_its_requests(faulty):
    server, _, name = faulty
    failures = {"err": "inference", "model": name}
    before = metrics.REGISTRY.get_sample_value("te_request_failure_total", failures) or 0
    with httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post("/embed", json={"inputs": "please explode now"})
        assert r.status_code == 424 and r.json() == BACKEND_ERROR
        assert http.post("/embed", json={"inputs": "fine"}).status_code == 200

        def send(text):
            return text, http.post("/embed", json={"inputs": text})

        barrier = threading.Barrier(9)

        def together(text):
            barrier.wait()
            return send(text)

        with ThreadPoolExecutor(9) as pool:
            results = list(pool.map(together, [f"ordinary text {i}" for i in range(8)] + ["explode"]))
        for text, resp in results:
            if text == "explode":
                assert resp.status_code == 424 and resp.json() == BACKEND_ERROR
            else:
                assert resp.status_code == 200, (text, resp.text)
        assert http.get("/health").status_code == 200  # one bad batch does not make the server unhealthy
        assert http.post("/embed", json={"inputs": ["still", "serving"]}).status_code == 200
    after = metrics.REGISTRY.get_sample_value("te_request_failure_total", failures)
    assert after == before + 2


def test_health_is_503_while_the_backend_is_broken(faulty):
    server, state, _ = faulty
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.get("/health").status_code == 200
        state["broken"] = True
        try:
            for path in ("/health", "/ping", "/"):
                r = http.get(path)
                assert r.status_code == 503 and r.json() == {"error": "unhealthy", "error_type": "Unhealthy"}
            assert http.post("/embed", json={"inputs": "hi"}).status_code == 424
        finally:
            state["broken"] = False
        assert http.get("/health").status_code == 200 and http.get("/health").content == b""
        assert http.post("/embed", json={"inputs": "hi"}).status_code == 200


def test_a_model_answering_garbage_fails_its_batch_and_serving_goes_on(faulty):
    """The failure comes after the forward pass, where the inference thread hands out results."""
    server, _, _ = faulty
    with httpx.Client(base_url=server.url, timeout=60) as http:
        r = http.post("/embed", json={"inputs": "garbage"})
        assert r.status_code == 424 and r.json()["error_type"] == "Backend"
        assert r.json()["error"].startswith("Backend error: inference failed:")
        for _ in range(3):
            assert http.post("/embed", json={"inputs": "fine"}).status_code == 200

"""A fault in one served model leaves the others serving: a real HTTP server (in-process, so the test
can break one model's forward pass) over an embedder and a reranker that share one inference thread."""
from __future__ import annotations

import httpx
import pytest
from prod_util import ThreadedServer, tiny_embedder

from tei.app import build_engine
from tei.engine.engines import Engines
from tei.server.app import create_app
from tei.settings import ModelSettings, ServerSettings


@pytest.fixture(scope="module")
def broken_reranker(models_dir, reranker_path):
    models = (
        ModelSettings.from_options(model_id=str(tiny_embedder(models_dir)), served_model_name="embedder", device="cpu",
                                   max_batch_tokens=1024),
        ModelSettings.from_options(model_id=str(reranker_path), served_model_name="reranker", device="cpu",
                                   max_batch_tokens=1024),
    )
    engines = Engines([(m, build_engine(m)) for m in models])
    reranker = engines.get("reranker")
    assert reranker.model is not engines.get("embedder").model
    state = {"broken": False}
    forward = reranker.model.forward

    def failing_forward(batch, want_hidden=False):
        if state["broken"]:
            raise RuntimeError("injected fault")
        return forward(batch, want_hidden)

    reranker.model.forward = failing_forward  # this test's own fault hook: nothing in src/ knows of it
    try:
        with ThreadedServer(create_app(engines, ServerSettings(models=models))) as server:
            yield server, state
    finally:
        engines.close()


def test_a_failing_model_fails_its_requests_and_the_other_serves(broken_reranker):
    server, state = broken_reranker
    with httpx.Client(base_url=server.url, timeout=60) as http:
        rerank = {"query": "q", "texts": ["a", "b"]}
        assert http.post("/rerank", json=rerank).status_code == 200
        state["broken"] = True
        try:
            r = http.post("/rerank", json=rerank)
            assert r.status_code == 424 and r.json()["error"] == "Backend error: inference failed: injected fault"
            assert http.post("/embed", json={"inputs": ["still", "serving"]}).status_code == 200
            assert http.post("/v1/embeddings", json={"input": "x", "model": "embedder"}).status_code == 200
            # /health is every model; a prefix checks one
            assert http.get("/health").status_code == 503
            assert http.get("/models/reranker/health").status_code == 503
            assert http.get("/models/embedder/health").status_code == 200
        finally:
            state["broken"] = False
        assert http.post("/rerank", json=rerank).status_code == 200
        assert http.get("/health").status_code == 200

"""Through real servers: BGE-M3 (/embed_sparse, /embed_multi_vector, gRPC, POST / similarity bodies),
a ColBERT model (MaxSim /rerank in both dialects) under --root-path with TEI's accepted flags,
jina-colbert-v2's layout (Jina XLM-R encoder, [QueryMarker] / [DocumentMarker]) against its plain
reference, and the transformers fallback's start-up line."""
from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from server_process import ServerProcess, free_port
from tiny_fallback import build_fallback_embedding
from test_parity_jina_colbert import DOCS as JINA_DOCS
from test_parity_jina_colbert import QUERIES as JINA_QUERIES
from test_parity_jina_colbert import reference as jina_reference
from tiny_colbert import build_jina_colbert_v2
from tiny_late import build_bge_m3, build_stanford_colbert

TEXTS = ["What is Deep Learning?", "Paris is the capital of France.", "the the cat"]


@pytest.fixture(scope="module")
def m3(tmp_path_factory):
    folder = build_bge_m3(tmp_path_factory.mktemp("m3-api") / "bge-m3", seed=31)
    grpc_port = free_port()
    server = ServerProcess("--model-id", str(folder), "--grpc-port", str(grpc_port), "--auto-chunk")
    server.grpc_target = f"127.0.0.1:{grpc_port}"
    yield from _serving(server)


def _serving(server):
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            server.client = client
            yield server
    finally:
        server.stop()


def test_bge_m3_http(m3):
    c = m3.client
    dense = c.post("/embed", json={"inputs": TEXTS}).json()
    assert np.allclose(np.linalg.norm(dense, axis=1), 1, atol=1e-5)
    sparse = c.post("/embed_sparse", json={"inputs": TEXTS})
    assert sparse.status_code == 200, sparse.text
    for entries in sparse.json():
        indices = [e["index"] for e in entries]
        assert indices and indices == sorted(set(indices)) and all(e["value"] > 0 for e in entries)
    r = c.post("/embed_multi_vector", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    tokens = [len(t) for t in c.post("/tokenize", json={"inputs": TEXTS}).json()]
    for vectors, n in zip(r.json(), tokens):
        assert len(vectors) == n - 1  # every token but CLS
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert r.headers["x-compute-tokens"] == str(sum(tokens))
    openai = c.post("/v1/embeddings", json={"input": TEXTS[0]}).json()
    assert np.allclose(openai["data"][0]["embedding"], dense[0], atol=1e-5)
    # huggingface_hub's sentence_similarity body on POST /, whatever TASK says
    sim = c.post("/", json={"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}})
    assert sim.status_code == 200, sim.text
    assert np.allclose(sim.json(), np.asarray(dense[1:]) @ np.asarray(dense[0]), atol=1e-4)
    assert c.post("/embed_multi_vector", json={"inputs": []}).status_code == 422  # as /embed
    assert c.post("/embed_multi_vector", json={"inputs": "x", "is_query": "yes"}).status_code == 422


def test_bge_m3_grpc(m3):
    # tei-client's stubs (what TEI users have): our tei_pb2 defines the same tei.v1 symbols, so the two
    # cannot share this process's descriptor pool. EmbedMultiVectorRequest without `is_query` and
    # EmbedMultiVectorResponse are EmbedAllRequest / EmbedAllResponse on the wire (same field numbers
    # and types), so the new method is called through a plain channel method with those messages.
    from tei_client.stubs import tei_pb2 as pb
    from tei_client.stubs import tei_pb2_grpc as pb_grpc

    http = m3.client.post("/embed_multi_vector", json={"inputs": TEXTS[0]}).json()[0]
    sparse_http = m3.client.post("/embed_sparse", json={"inputs": TEXTS[0]}).json()[0]
    with grpc.insecure_channel(m3.grpc_target) as channel:
        multi = channel.unary_unary("/tei.v1.Embed/EmbedMultiVector",
                                    request_serializer=pb.EmbedAllRequest.SerializeToString,
                                    response_deserializer=pb.EmbedAllResponse.FromString)
        reply = multi(pb.EmbedAllRequest(inputs=TEXTS[0]), timeout=60)
        assert np.allclose([list(t.embeddings) for t in reply.token_embeddings], http, atol=1e-6)
        assert reply.metadata.compute_tokens == len(http) + 1
        sparse = pb_grpc.EmbedStub(channel).EmbedSparse(pb.EmbedSparseRequest(inputs=TEXTS[0]), timeout=60)
        assert [v.index for v in sparse.sparse_embeddings] == [e["index"] for e in sparse_http]


@pytest.fixture(scope="module")
def colbert(tmp_path_factory):
    folder = build_stanford_colbert(tmp_path_factory.mktemp("colbert-api") / "colbert", seed=33)
    args = ("--model-id", str(folder), "--root-path", "/tei", "--onnx-filename", "model.onnx", "--usage-stats",
            "on", "--warmup-tokens", "64", "--device-id", "0")

    class Prefixed(ServerProcess):
        def ready(self) -> bool:
            try:
                return httpx.get(self.url + "/tei/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

    yield from _serving(Prefixed(*args, env={"TASK": "sentence-similarity"}))


def test_colbert_rerank_by_maxsim_under_root_path(colbert):
    c = colbert.client
    assert c.get("/health").status_code == 404  # every route lives under the prefix
    query, docs = "capital of france", TEXTS
    q = np.asarray(c.post("/tei/embed_multi_vector", json={"inputs": query, "is_query": True}).json()[0])
    d = [np.asarray(v) for v in c.post("/tei/embed_multi_vector", json={"inputs": docs}).json()]
    assert len(q) == 16  # padded with [MASK] up to query_maxlen
    expected = np.asarray([(q @ v.T).max(1).sum() for v in d])
    tei = c.post("/tei/rerank", json={"query": query, "texts": docs})
    assert tei.status_code == 200, tei.text
    ranks = tei.json()
    assert [r["index"] for r in ranks] == list(np.argsort(-expected))
    assert np.allclose([r["score"] for r in ranks], np.sort(expected)[::-1], atol=1e-3)
    cohere = c.post("/tei/v1/rerank", json={"query": query, "documents": docs, "top_n": 2}).json()
    assert [r["index"] for r in cohere["results"]] == list(np.argsort(-expected)[:2])
    # TASK=sentence-similarity: POST / answers /similarity
    sim = c.post("/tei/", json={"inputs": {"source_sentence": query, "sentences": docs}})
    assert sim.status_code == 200 and len(sim.json()) == len(docs)
    assert c.get("/tei/info").json()["rerank"]["scoring"] == "maxsim"
    log = colbert.output()
    assert "--onnx-filename model.onnx ignored" in log and "always off" in log


def test_jina_colbert_v2_over_http(tmp_path):
    hub, native = build_jina_colbert_v2(tmp_path / "jina-colbert-v2", JINA_QUERIES + JINA_DOCS, seed=64)
    query, docs = JINA_QUERIES[0], JINA_DOCS
    ref_q = jina_reference(hub, native, [query], True)[0]
    ref_d = jina_reference(hub, native, docs, False)
    expected = np.asarray([(ref_q @ d.T).max(1).sum() for d in ref_d])
    with ServerProcess("--model-id", str(hub)) as server:
        c = httpx.Client(base_url=server.url, timeout=120)
        q = c.post("/embed_multi_vector", json={"inputs": query, "is_query": True})
        d = c.post("/embed_multi_vector", json={"inputs": docs, "is_query": False})
        assert q.status_code == 200 and d.status_code == 200, (q.text, d.text)
        assert np.abs(np.asarray(q.json()[0]) - ref_q).max() <= 1e-4
        for ours, ref in zip(d.json(), ref_d):
            assert np.asarray(ours).shape == ref.shape and np.abs(np.asarray(ours) - ref).max() <= 1e-4
        ranks = c.post("/rerank", json={"query": query, "texts": docs, "raw_scores": True}).json()
        assert [r["index"] for r in ranks] == list(np.argsort(-expected))
        assert np.allclose([r["score"] for r in ranks], np.sort(expected)[::-1], atol=1e-3)
        assert c.get("/info").json()["rerank"]["scoring"] == "maxsim"


def test_fallback_start_up_line(tmp_path):
    folder = build_fallback_embedding(tmp_path / "electra", "electra", seed=5)
    with ServerProcess("--model-id", str(folder)) as server:
        r = httpx.post(server.url + "/embed", json={"inputs": TEXTS}, timeout=60)
        assert r.status_code == 200 and len(r.json()) == len(TEXTS)
        assert "transformers fallback" in server.output()

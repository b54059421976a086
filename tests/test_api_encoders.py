"""MPNet, JinaBERT v2 and static-embedding models through real servers: HTTP (TEI routes, the OpenAI
route, both rerank dialects) and gRPC beside it, against each family's reference."""
from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from engine_util import cosine
from server_process import ServerProcess, free_port
from tei_client.stubs import tei_pb2 as pb
from tei_client.stubs import tei_pb2_grpc as pb_grpc
from texts import TEXTS
from test_parity_mpnet import _mpnet
from tiny_jina import build_jina_embedding, build_jina_reranker, reference_embeddings, reference_scores
from tiny_static import build_st_static

COS_BAR = 0.99999
TOL = 1e-4
QUERY = "What is deep learning?"
DOCS = ["Deep learning is a part of machine learning.", "Paris is the capital of France.", "short",
        "The quick brown fox jumps over the lazy dog."]


class Served:
    def __init__(self, folder, *args):
        self.folder = folder
        grpc_port = free_port()
        self.server = ServerProcess("--model-id", str(folder), "--grpc-port", str(grpc_port), *args)
        self.target = f"127.0.0.1:{grpc_port}"

    def __enter__(self):
        self.server.start()
        self.http = httpx.Client(base_url=self.server.url, timeout=120)
        self.channel = grpc.insecure_channel(self.target)
        return self

    def __exit__(self, *exc):
        self.channel.close()
        self.http.close()
        output = self.server.output()
        self.server.stop()
        assert "Traceback" not in output, output


def _serve(folder, *args):
    with Served(folder, *args) as served:
        yield served


@pytest.fixture(scope="module")
def mpnet(models_dir):
    yield from _serve(_mpnet(models_dir / "api-mpnet", pooling="mean", seed=61, prompts={"query": "query: "}))


@pytest.fixture(scope="module")
def jina(models_dir):
    yield from _serve(build_jina_embedding(models_dir / "api-jina", seed=62))


@pytest.fixture(scope="module")
def jina_rr(models_dir):
    yield from _serve(build_jina_reranker(models_dir / "api-jina-rr", seed=63), "--max-batch-tokens", "1024")


@pytest.fixture(scope="module")
def static(models_dir):
    yield from _serve(build_st_static(models_dir / "api-static", seed=64))


def _st(folder, texts, **kw):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True, **kw)


def _grpc_embed(served, text):
    return np.array(pb_grpc.EmbedStub(served.channel).Embed(pb.EmbedRequest(inputs=text), timeout=60).embeddings)


def test_mpnet_serves_like_bert(mpnet):
    ref = _st(mpnet.folder, TEXTS)
    http = np.array(mpnet.http.post("/embed", json={"inputs": TEXTS}).json())
    assert cosine(http, ref).min() >= COS_BAR and np.allclose(np.linalg.norm(http, axis=1), 1, atol=1e-5)
    prompted = mpnet.http.post("/embed", json={"inputs": TEXTS[:2], "prompt_name": "query"}).json()
    assert cosine(prompted, _st(mpnet.folder, TEXTS[:2], prompt_name="query")).min() >= COS_BAR
    cut = np.array(mpnet.http.post("/embed", json={"inputs": "hello", "dimensions": 16}).json()[0])
    assert cut.shape == (16,) and abs(np.linalg.norm(cut) - 1) < 1e-5
    oa = mpnet.http.post("/v1/embeddings", json={"input": TEXTS[:2]}).json()
    assert cosine([d["embedding"] for d in oa["data"]], ref[:2]).min() >= COS_BAR
    tokens = mpnet.http.post("/tokenize", json={"inputs": "hello world"}).json()[0]
    per_token = mpnet.http.post("/embed_all", json={"inputs": "hello world"}).json()[0]
    assert len(per_token) == len(tokens) and len(per_token[0]) == 64
    assert cosine([_grpc_embed(mpnet, TEXTS[1])], ref[1:2])[0] >= COS_BAR
    info = mpnet.http.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] == 128
    bad = mpnet.http.post("/embed", json={"inputs": ""})
    assert bad.status_code == 422 and bad.json()["error_type"] == "Validation"


def test_jina_embeddings_over_http_and_grpc(jina):
    ref = reference_embeddings(jina.folder, TEXTS).numpy()
    assert cosine(jina.http.post("/embed", json={"inputs": TEXTS}).json(), ref).min() >= COS_BAR
    assert cosine([_grpc_embed(jina, TEXTS[2])], ref[2:3])[0] >= COS_BAR


def test_jina_reranker_in_both_dialects_and_grpc(jina_rr):
    logits = reference_scores(jina_rr.folder, [(QUERY, d) for d in DOCS], 512)[:, 0].numpy()
    probs = 1 / (1 + np.exp(-logits))
    tei = jina_rr.http.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert [r["index"] for r in tei] == list(np.argsort(-probs))
    assert max(abs(r["score"] - probs[r["index"]]) for r in tei) <= TOL
    cohere = jina_rr.http.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}).json()
    assert [r["index"] for r in cohere["results"]] == list(np.argsort(-probs)[:2])
    assert max(abs(r["relevance_score"] - probs[r["index"]]) for r in cohere["results"]) <= TOL
    ranks = pb_grpc.RerankStub(jina_rr.channel).Rerank(pb.RerankRequest(query=QUERY, texts=DOCS, raw_scores=True),
                                                      timeout=60).ranks
    assert max(abs(r.score - logits[r.index]) for r in ranks) <= TOL


def test_static_model_serves_without_a_config(static):
    ref = _st(static.folder, TEXTS)
    assert cosine(static.http.post("/embed", json={"inputs": TEXTS}).json(), ref).min() >= COS_BAR
    oa = static.http.post("/v1/embeddings", json={"input": TEXTS[0]}).json()
    assert cosine([oa["data"][0]["embedding"]], ref[:1])[0] >= COS_BAR
    assert cosine([_grpc_embed(static, TEXTS[4])], ref[4:5])[0] >= COS_BAR
    tokens = static.http.post("/tokenize", json={"inputs": "hello world", "add_special_tokens": True}).json()[0]
    assert [t["special"] for t in tokens] == [False, False]
    assert static.http.get("/info").json()["max_input_length"] == 128
    # nothing left to average: TEI's 4xx body, as for an empty input
    blank = static.http.post("/embed", json={"inputs": "   "})
    assert blank.status_code == 422 and blank.json()["error_type"] == "Validation"

"""ModernBERT through real servers: HTTP routes, the OpenAI route, both rerank dialects and gRPC beside HTTP,
against sentence-transformers and CrossEncoder on the tiny models of tests/tiny_modernbert.py."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
import tiny_modernbert as tiny
from engine_util import cosine
from server_process import ServerProcess, free_port
from texts import TEXTS

COS_BAR = 0.99999
QUERY = "What is deep learning?"
PROMPTS = {"query": "search_query: ", "document": "search_document: "}


@pytest.fixture(scope="module")
def embedder(models_dir):
    return tiny.build_embedding(models_dir / "api-modernbert", pooling="mean", seed=8, prompts=PROMPTS)


@pytest.fixture(scope="module")
def st(embedder):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder), device="cpu")


def test_embedding_routes(embedder, st):
    import grpc
    from tei_client.stubs import tei_pb2 as pb
    from tei_client.stubs import tei_pb2_grpc as pb_grpc

    grpc_port = free_port()
    with ServerProcess("--model-id", str(embedder), "--grpc-port", str(grpc_port)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        ref = st.encode(TEXTS, normalize_embeddings=True)
        got = np.array(client.post("/embed", json={"inputs": TEXTS}).json())
        assert cosine(got, ref).min() >= COS_BAR

        ref_q = st.encode(TEXTS, prompt_name="query", normalize_embeddings=True)
        got_q = np.array(client.post("/embed", json={"inputs": TEXTS, "prompt_name": "query"}).json())
        assert cosine(got_q, ref_q).min() >= COS_BAR

        raw = np.array(client.post("/embed", json={"inputs": TEXTS[:2], "normalize": False}).json())
        assert cosine(raw, ref[:2]).min() >= COS_BAR and np.abs(np.linalg.norm(raw, axis=1) - 1).min() > 0.01
        short = np.array(client.post("/embed", json={"inputs": TEXTS[:2], "dimensions": 16}).json())
        assert short.shape == (2, 16) and np.allclose(np.linalg.norm(short, axis=1), 1, atol=1e-5)

        tokens = client.post("/tokenize", json={"inputs": TEXTS[2]}).json()[0]
        per_token = np.array(client.post("/embed_all", json={"inputs": TEXTS[2]}).json()[0])
        ref_tokens = st.encode(TEXTS[2], output_value="token_embeddings").numpy()
        assert per_token.shape == ref_tokens.shape and len(tokens) == len(per_token)
        assert cosine(per_token, ref_tokens).min() >= COS_BAR

        openai = client.post("/v1/embeddings", json={"input": TEXTS[:3], "model": "m"}).json()
        assert cosine(np.array([d["embedding"] for d in openai["data"]]), ref[:3]).min() >= COS_BAR

        # an embedding model ranks by cosine similarity
        ranked = client.post("/rerank", json={"query": QUERY, "texts": TEXTS}).json()
        q = st.encode(QUERY, normalize_embeddings=True)
        assert [r["index"] for r in ranked] == list(np.argsort(-(ref @ q), kind="stable"))

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = pb_grpc.EmbedStub(channel).Embed(pb.EmbedRequest(inputs=TEXTS[3]), timeout=60)
        assert cosine(np.array(reply.embeddings), ref[3]) >= COS_BAR

        bad = client.post("/embed", json={"inputs": TEXTS[:1], "prompt_name": "nope"})
        assert bad.status_code == 422 and "error" in bad.json()


def test_reranker_dialects(models_dir):
    from sentence_transformers import CrossEncoder
    from test_parity_modernbert import DOCS, _scored

    folder = _scored(models_dir / "api-modernbert-rr", 1, "mean", seed=9)
    ref = CrossEncoder(str(folder), device="cpu", model_kwargs={"attn_implementation": "sdpa"}).predict(
        [(QUERY, d) for d in DOCS])
    with ServerProcess("--model-id", str(folder)) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
        assert all(abs(r["score"] - ref[r["index"]]) <= 1e-4 for r in tei)
        assert [r["index"] for r in tei] == list(np.argsort(-ref, kind="stable"))
        cohere = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 3}).json()
        assert [r["index"] for r in cohere["results"]] == [r["index"] for r in tei[:3]]
        assert all(abs(r["relevance_score"] - ref[r["index"]]) <= 1e-4 for r in cohere["results"])

"""Decoder models through a real server: a Qwen3-Reranker (both rerank dialects, /v1 and /v2 paths,
`instruction`, raw scores, gRPC), an EmbeddingGemma-shaped embedder (prompts, OpenAI route,
dimensions, /embed_all, /tokenize), a Mistral embedder whose tokenizer_config.json asks for an </s>
its tokenizer.json does not add, and an EmbeddingGemma 2."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from engine_util import cosine
from server_process import ServerProcess, free_port
from texts import TEXTS
from tiny_decoders import (
    RERANK_DOCS, RERANK_QUERY, build_decoder_embedding, build_embedding_gemma2, build_qwen3_reranker,
    llama_tokenizer_writer, reference_embedding_gemma2, reference_embeddings, reference_rerank, tokenizer_vocab,
)

TOL = 1e-4
TASK = "Given a question, find the passage that answers it"


@pytest.fixture(scope="module")
def qwen_reranker(models_dir):
    return build_qwen3_reranker(models_dir / "api-Qwen3-Reranker", seed=9)


@pytest.fixture(scope="module")
def rerank_server(qwen_reranker):
    grpc_port = free_port()
    with ServerProcess("--model-id", str(qwen_reranker), "--dtype", "float32", "--grpc-port", str(grpc_port),
                       startup_timeout=600) as server:
        server.grpc_port = grpc_port
        yield server


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_rerank_dialects(rerank_server, qwen_reranker):
    limit = httpx.get(rerank_server.url + "/info").json()["max_input_length"]
    ref = np.asarray(reference_rerank(qwen_reranker, RERANK_QUERY, RERANK_DOCS, max_length=limit))
    ref_task = np.asarray(reference_rerank(qwen_reranker, RERANK_QUERY, RERANK_DOCS, instruction=TASK, max_length=limit))

    tei = httpx.post(rerank_server.url + "/rerank", json={"query": RERANK_QUERY, "texts": RERANK_DOCS}).json()
    scores = np.array([r["score"] for r in sorted(tei, key=lambda r: r["index"])])
    assert np.abs(scores - _sigmoid(ref)).max() <= TOL
    assert [r["index"] for r in tei] == list(np.argsort(-ref, kind="stable"))

    for path in ("/v1/rerank", "/v2/rerank"):
        body = {"query": RERANK_QUERY, "documents": RERANK_DOCS, "instruction": TASK, "top_n": 3, "model": "x"}
        cohere = httpx.post(rerank_server.url + path, json=body).json()
        assert len(cohere["results"]) == 3
        got = {r["index"]: r["relevance_score"] for r in cohere["results"]}
        for i, score in got.items():
            assert abs(score - _sigmoid(ref_task[i])) <= TOL

    raw = httpx.post(rerank_server.url + "/rerank",
                     json={"query": RERANK_QUERY, "texts": RERANK_DOCS, "raw_scores": True}).json()
    raw_scores = np.array([r["score"] for r in sorted(raw, key=lambda r: r["index"])])
    assert np.abs(raw_scores - ref).max() <= TOL


def test_rerank_bad_input(rerank_server):
    r = httpx.post(rerank_server.url + "/rerank", json={"query": RERANK_QUERY, "texts": [RERANK_DOCS[-1] * 5],
                                                       "truncate": False})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"  # TEI: over the limit, not cut
    r = httpx.post(rerank_server.url + "/rerank", json={"query": RERANK_QUERY, "texts": ["a"], "instruction": 3})
    assert r.status_code == 422
    r = httpx.post(rerank_server.url + "/embed", json={"inputs": "hello"})
    assert r.status_code == 424


def test_rerank_grpc(rerank_server, qwen_reranker):
    import grpc

    # tei-client's stubs (what TEI users have; our tei_pb2 defines the same tei.v1 symbols, so the two
    # cannot share this process's descriptor pool). Its RerankRequest has no `instruction`: the field
    # (7, a string) is appended to the serialized message as protobuf's wire format lays it out.
    from tei_client.stubs import tei_pb2 as pb
    from tei_client.stubs import tei_pb2_grpc

    def with_instruction(request) -> bytes:
        text = TASK.encode("utf-8")
        length, varint = len(text), b""
        while True:
            byte, length = length & 0x7F, length >> 7
            varint += bytes([byte | (0x80 if length else 0)])
            if not length:
                break
        return request.SerializeToString() + bytes([(7 << 3) | 2]) + varint + text

    limit = httpx.get(rerank_server.url + "/info").json()["max_input_length"]
    ref_task = np.asarray(reference_rerank(qwen_reranker, RERANK_QUERY, RERANK_DOCS, instruction=TASK, max_length=limit))
    with grpc.insecure_channel(f"127.0.0.1:{rerank_server.grpc_port}") as channel:
        stub = tei_pb2_grpc.RerankStub(channel)
        plain = stub.Rerank(pb.RerankRequest(query=RERANK_QUERY, texts=RERANK_DOCS, raw_scores=True), timeout=300)
        rerank = channel.unary_unary("/tei.v1.Rerank/Rerank", request_serializer=with_instruction,
                                     response_deserializer=pb.RerankResponse.FromString)
        task = rerank(pb.RerankRequest(query=RERANK_QUERY, texts=RERANK_DOCS, raw_scores=True), timeout=300)
    ref = np.asarray(reference_rerank(qwen_reranker, RERANK_QUERY, RERANK_DOCS, max_length=limit))
    assert max(abs(r.score - ref[r.index]) for r in plain.ranks) <= TOL
    assert max(abs(r.score - ref_task[r.index]) for r in task.ranks) <= TOL


# ---- EmbeddingGemma-shaped embedder ---------------------------------------------------------------

PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}


@pytest.fixture(scope="module")
def gemma(models_dir):
    return build_decoder_embedding(models_dir / "api-gemma3", "gemma3", pooling="mean", dense=True, prompts=PROMPTS,
                                   seed=13)


def test_gemma_through_the_api(gemma):
    ref_query = reference_embeddings(gemma, TEXTS, prompt_name="query")
    ref_plain = reference_embeddings(gemma, TEXTS)
    with ServerProcess("--model-id", str(gemma), startup_timeout=600) as server:
        info = httpx.get(server.url + "/info").json()
        assert info["model_dtype"] == "float32"
        emb = httpx.post(server.url + "/embed", json={"inputs": TEXTS, "prompt_name": "query",
                                                      "normalize": False}).json()
        assert cosine(emb, ref_query).min() >= 0.99999
        openai = httpx.post(server.url + "/v1/embeddings", json={"input": TEXTS, "model": "x"}).json()
        vectors = [d["embedding"] for d in openai["data"]]
        assert cosine(vectors, ref_plain).min() >= 0.99999  # no prompt unless a default is set
        cut = httpx.post(server.url + "/embed", json={"inputs": TEXTS[:2], "dimensions": 8}).json()
        assert np.asarray(cut).shape == (2, 8)
        states = httpx.post(server.url + "/embed_all", json={"inputs": "hello world"}).json()
        tokens = httpx.post(server.url + "/tokenize", json={"inputs": "hello world"}).json()
        assert len(states[0]) == len(tokens[0])
    with ServerProcess("--model-id", str(gemma), "--default-prompt-name", "query", startup_timeout=600) as server:
        openai = httpx.post(server.url + "/v1/embeddings", json={"input": TEXTS, "model": "x"}).json()
        assert cosine([d["embedding"] for d in openai["data"]], ref_query).min() >= 0.99999


# ---- Mistral with add_eos_token in tokenizer_config.json; EmbeddingGemma 2 ---------------------------------

def test_mistral_tokenizer_flags_through_the_api(models_dir):
    """/tokenize gives AutoTokenizer's ids (tokenizer.json decides, as in transformers 5) and last-token
    /embed matches sentence-transformers."""
    import transformers as tf

    write = llama_tokenizer_writer(add_bos=True, add_eos=True)
    folder = build_decoder_embedding(models_dir / "api-mistral-add-eos", "mistral", tokenizer=write,
                                     vocab=tokenizer_vocab(write), seed=21)
    ref = reference_embeddings(folder, TEXTS)
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    with ServerProcess("--model-id", str(folder), "--dtype", "float32", startup_timeout=600) as server:
        emb = httpx.post(server.url + "/embed", json={"inputs": TEXTS, "normalize": False}).json()
        tokens = httpx.post(server.url + "/tokenize", json={"inputs": TEXTS}).json()
    assert cosine(emb, ref).min() >= 0.99999
    assert [[t["id"] for t in seq] for seq in tokens] == [tok(t)["input_ids"] for t in TEXTS]


def test_embedding_gemma2_through_the_api(models_dir):
    folder = build_embedding_gemma2(models_dir / "api-eg2", seed=23, prompts=PROMPTS)
    ref = reference_embedding_gemma2(folder, TEXTS, prompt_name="query")
    with ServerProcess("--model-id", str(folder), startup_timeout=600) as server:
        info = httpx.get(server.url + "/info").json()
        emb = httpx.post(server.url + "/embed", json={"inputs": TEXTS, "prompt_name": "query",
                                                      "normalize": False}).json()
        states = httpx.post(server.url + "/embed_all", json={"inputs": "hello world"}).json()
        tokens = httpx.post(server.url + "/tokenize", json={"inputs": "hello world"}).json()
    assert info["model_dtype"] == "float32"
    assert cosine(emb, ref).min() >= 0.99999
    assert len(states[0]) == len(tokens[0]) and len(states[0][0]) == 40  # projected per token

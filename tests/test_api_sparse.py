"""A SPLADE model through HTTP (/embed_sparse, POST /, the routes TEI refuses) and gRPC (EmbedSparse)."""
from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from server_process import ServerProcess, free_port
from tei_client.stubs import tei_pb2 as pb
from tei_client.stubs import tei_pb2_grpc as pb_grpc
from tiny_models import build_splade_model

TEXTS = ["What is Deep Learning?", "Paris is the capital of France.", "sparse vectors for hybrid search"]
VOCAB = 30522


@pytest.fixture(scope="module")
def splade(tmp_path_factory):
    folder = build_splade_model(tmp_path_factory.mktemp("splade-api") / "splade", "bert", seed=21)
    grpc_port = free_port()
    server = ServerProcess("--model-id", str(folder), "--grpc-port", str(grpc_port)).start()
    server.grpc_target = f"127.0.0.1:{grpc_port}"
    server.folder = folder
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            server.client = client
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(splade):
    from sentence_transformers.sparse_encoder import SparseEncoder

    return SparseEncoder(str(splade.folder), device="cpu").encode(TEXTS, convert_to_tensor=True).to_dense().numpy()


def _dense(entries: list[dict]) -> np.ndarray:
    row = np.zeros(VOCAB, dtype=np.float32)
    for entry in entries:
        row[entry["index"]] = entry["value"]
    return row


def test_embed_sparse_matches_sentence_transformers(splade, reference):
    r = splade.client.post("/embed_sparse", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body) == len(TEXTS)
    for entries, ref in zip(body, reference):
        indices = [e["index"] for e in entries]
        assert indices == sorted(indices) and all(e["value"] > 0 for e in entries)
        assert np.abs(_dense(entries) - ref).max() <= 1e-4
    assert r.headers["x-compute-tokens"] and r.headers["x-compute-characters"] == str(sum(map(len, TEXTS)))


def test_one_input_and_the_default_task(splade, reference):
    single = splade.client.post("/embed_sparse", json={"inputs": TEXTS[0]}).json()
    default = splade.client.post("/", json={"inputs": TEXTS[0]}).json()
    assert single == default
    assert np.abs(_dense(single[0]) - reference[0]).max() <= 1e-4


def test_embed_without_normalize_is_the_dense_vocabulary_vector(splade, reference):
    r = splade.client.post("/embed", json={"inputs": TEXTS, "normalize": False})
    assert r.status_code == 200
    assert np.abs(np.asarray(r.json()) - reference).max() <= 1e-4


@pytest.mark.parametrize(
    "path, body, message",
    [
        ("/embed", {"inputs": "a"}, "`normalize` is not available for SPLADE models"),
        ("/v1/embeddings", {"input": "a", "model": "x"}, "`normalize` is not available for SPLADE models"),
        ("/embed_all", {"inputs": "a"}, "`embed_all` is not available for SPLADE models"),
    ],
)
def test_what_tei_refuses_a_splade_model_is_424(splade, path, body, message):
    r = splade.client.post(path, json=body)
    assert r.status_code == 424
    assert r.json()["error"] == f"Backend error: {message}" and r.json()["error_type"] == "Backend"


def test_info_says_splade(splade):
    assert splade.client.get("/info").json()["model_type"] == {"embedding": {"pooling": "splade"}}


def test_embed_sparse_on_a_dense_model_is_424(default_server):
    r = httpx.post(default_server.url + "/embed_sparse", json={"inputs": "a"}, timeout=60)
    assert r.status_code == 424
    assert r.json() == {"error": "Backend error: Model is not an embedding model with SPLADE pooling",
                        "error_type": "Backend"}


def test_grpc_embed_sparse_matches_http(splade):
    http = splade.client.post("/embed_sparse", json={"inputs": TEXTS}).json()
    with grpc.insecure_channel(splade.grpc_target) as channel:
        stub = pb_grpc.EmbedStub(channel)
        unary = stub.EmbedSparse(pb.EmbedSparseRequest(inputs=TEXTS[0], truncate=True), timeout=60)
        streamed = list(stub.EmbedSparseStream(iter(pb.EmbedSparseRequest(inputs=t) for t in TEXTS), timeout=60))
    assert unary.metadata.compute_tokens > 0
    for reply, entries in zip([unary, *streamed], [http[0], *http]):
        assert [v.index for v in reply.sparse_embeddings] == [e["index"] for e in entries]
        assert np.allclose([v.value for v in reply.sparse_embeddings], [e["value"] for e in entries], atol=1e-6)

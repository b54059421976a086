"""Several models in one real server process: routing by body `model`, by `/models/{name}/` prefix and by
task; /v1/models; /info; unknown names; shared weights; per-model metrics; start-up failures.

The server holds a tiny BERT embedder (twice: `embedder` and `embedder/v2`, one set of weights, and a
name that is a prefix of another), an XLM-RoBERTa reranker under a hub-style name with a `/`, and a
3-label classifier. Every answer is checked against sentence-transformers (embeddings) or
transformers (cross-encoder and classifier logits) run in the test process.
"""
from __future__ import annotations

import subprocess

import httpx
import numpy as np
import pytest
from classifier_models import load_reference, reference_logits
from engine_util import cosine
from prod_util import tiny_embedder
from server_process import ROUTER, ServerProcess, free_port

COS_BAR = 0.99999
TOL = 1e-4
RERANKER = "BAAI/bge-reranker"
QUERY = "What is deep learning?"
DOCS = [
    "Deep learning is a part of machine learning based on neural networks.",
    "Paris is the capital and largest city of France.",
    "The quick brown fox jumps over the lazy dog.",
]
TEXTS = ["The cat sat on the mat.", "Rerankers reorder retrieved passages.", "short"]
NAMES = ["embedder", RERANKER, "classifier", "embedder/v2"]


@pytest.fixture(scope="module")
def embedder_path(models_dir):
    return tiny_embedder(models_dir)


@pytest.fixture(scope="module")
def grpc_port():
    return free_port()


@pytest.fixture(scope="module")
def server(embedder_path, reranker_path, classifier_path, grpc_port):
    with ServerProcess(
        "--grpc-port", str(grpc_port),
        "--model-id", str(embedder_path), "--served-model-name", "embedder",
        "--model-id", str(reranker_path), "--served-model-name", RERANKER,
        "--model-id", str(classifier_path), "--served-model-name", "classifier",
        "--model-id", str(embedder_path), "--served-model-name", "embedder/v2",
        "--max-batch-tokens", "1024",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def st_embeddings(embedder_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embedder_path), device="cpu")
    return lambda texts: model.encode(texts, normalize_embeddings=True)


@pytest.fixture(scope="module")
def rerank_logits(reranker_path):
    reference = load_reference(reranker_path)
    return lambda query, docs: reference_logits(
        reranker_path, [(query, d) for d in docs], truncation="only_second", reference=reference)[:, 0]


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


def _by_index(ranks, key):
    out = np.empty(len(ranks))
    for rank in ranks:
        out[rank["index"]] = rank[key]
    return out


def test_embedding_routes_reach_the_embedder(http, st_embeddings):
    ref = st_embeddings(TEXTS)
    r = http.post("/embed", json={"inputs": TEXTS})
    assert r.status_code == 200 and cosine(np.array(r.json()), ref).min() >= COS_BAR
    for model, answered in ((None, "embedder"), ("", "embedder"), ("embedder/v2", "embedder/v2")):
        body = {"input": TEXTS, "encoding_format": "float", **({} if model is None else {"model": model})}
        r = http.post("/v1/embeddings", json=body)
        assert r.status_code == 200 and r.json()["model"] == answered
        vectors = np.array([d["embedding"] for d in r.json()["data"]])
        assert cosine(vectors, ref).min() >= COS_BAR
    similarity = http.post("/similarity", json={"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}})
    assert np.allclose(similarity.json(), ref[1:] @ ref[0], atol=TOL)


def test_rerank_without_model_reaches_the_reranker_and_with_one_the_named_model(http, rerank_logits, st_embeddings):
    expected = _sigmoid(rerank_logits(QUERY, DOCS))
    tei = http.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert tei.status_code == 200 and np.allclose(_by_index(tei.json(), "score"), expected, atol=TOL)
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        r = http.post(path, json={"model": RERANKER, "query": QUERY, "documents": DOCS})
        assert r.status_code == 200 and r.json()["model"] == RERANKER
        assert np.allclose(_by_index(r.json()["results"], "relevance_score"), expected, atol=TOL)
    # the embedding model named in the body ranks by cosine similarity
    vectors = st_embeddings([QUERY, *DOCS])
    r = http.post("/v2/rerank", json={"model": "embedder", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200 and r.json()["model"] == "embedder"
    assert np.allclose(_by_index(r.json()["results"], "relevance_score"), vectors[1:] @ vectors[0], atol=TOL)
    # a multi-label classifier cannot rank: TEI's 424, from the model the body named
    r = http.post("/v1/rerank", json={"model": "classifier", "query": QUERY, "documents": DOCS})
    assert r.status_code == 424 and r.json()["error_type"] == "Backend"


def test_predict_reaches_the_classifier(http, classifier_path):
    logits = reference_logits(classifier_path, TEXTS)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    r = http.post("/predict", json={"inputs": [[t] for t in TEXTS]})
    assert r.status_code == 200
    labels = http.get("/models/classifier/info").json()["model_type"]["classifier"]["label2id"]
    for row, expected in zip(r.json(), probabilities):
        got = np.array([next(s["score"] for s in row if s["label"] == label) for label in sorted(labels, key=labels.get)])
        assert np.allclose(got, expected, atol=TOL)


def test_every_route_is_served_under_each_models_prefix(http, rerank_logits, st_embeddings):
    for name in NAMES:
        info = http.get(f"/models/{name}/info").json()
        assert info["served_model_name"] == name and "models" not in info  # the longest name wins
        assert http.get(f"/models/{name}/health").status_code == 200
    assert next(iter(http.get(f"/models/{RERANKER}/info").json()["model_type"])) == "reranker"
    expected = _sigmoid(rerank_logits(QUERY, DOCS))
    r = http.post(f"/models/{RERANKER}/rerank", json={"query": QUERY, "texts": DOCS})
    assert r.status_code == 200 and np.allclose(_by_index(r.json(), "score"), expected, atol=TOL)
    # the prefix wins over the body's model (a client configured with a base URL sends any name)
    r = http.post(f"/models/{RERANKER}/v1/rerank", json={"model": "embedder", "query": QUERY, "documents": DOCS})
    assert r.json()["model"] == RERANKER
    r = http.post("/models/embedder/v2/v1/embeddings", json={"input": TEXTS, "encoding_format": "float"})
    assert r.json()["model"] == "embedder/v2"
    assert cosine(np.array([d["embedding"] for d in r.json()["data"]]), st_embeddings(TEXTS)).min() >= COS_BAR
    tokens = http.post(f"/models/{RERANKER}/tokenize", json={"inputs": "hello"}).json()
    assert tokens == http.post("/models/embedder/tokenize", json={"inputs": "hello"}).json()  # one vocabulary
    assert http.post("/models/classifier/", json={"inputs": "I like you."}).status_code == 200  # POST /: /predict
    # the wrong route for a model is TEI's 424, as on a one-model server
    assert http.post("/models/classifier/embed", json={"inputs": "x"}).status_code == 424


def test_v1_models_lists_every_served_model_with_its_kind(http):
    body = http.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["kind"], m["object"]) for m in body["data"]] == [
        ("embedder", "embedding", "model"), (RERANKER, "reranker", "model"), ("classifier", "classifier", "model"),
        ("embedder/v2", "embedding", "model")]
    one = http.get(f"/v1/models/{RERANKER}").json()
    assert one["id"] == RERANKER and one["kind"] == "reranker"


def test_info_describes_the_default_model_and_lists_them_all(http):
    info = http.get("/info").json()
    assert info["served_model_name"] == "embedder" and "embedding" in info["model_type"]
    assert [m["id"] for m in info["models"]] == NAMES


def test_unknown_names_are_404_naming_the_served_models(http):
    r = http.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
    error = r.json()["error"]
    assert r.status_code == 404 and error["code"] == "model_not_found" and error["param"] == "model"
    assert all(name in error["message"] for name in NAMES)
    r = http.post("/v1/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    for path, body in (("/rerank", {"model": "nope", "query": QUERY, "documents": DOCS}),
                       ("/models/nope/embed", {"inputs": "x"})):
        r = http.post(path, json=body)
        assert r.status_code == 404 and r.json()["error_type"] == "NotFound" and RERANKER in r.json()["error"]
    assert http.get("/v1/models/nope").status_code == 404


def test_the_openai_sdk_raises_not_found_for_an_unknown_model(server):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="embedder/v2"):
        client.embeddings.create(model="nope", input="x")


def test_one_model_served_twice_shares_its_weights_and_loads_in_order(server, http):
    log = server.output()
    assert log.count("Sharing the weights") == 1 and log.count("Starting model backend") == 3
    positions = [log.index(f"Loading model {i} of 4: {name}") for i, name in enumerate(NAMES, 1)]
    assert positions == sorted(positions)


def test_metrics_and_health_cover_every_model(http):
    import re

    def counts(text):
        found = re.findall(r'^te_request_count\{method="(\w+)",model="([^"]+)"\} (\S+)$', text, re.M)
        return {(method, name): float(v) for method, name, v in found}

    before = counts(http.get("/metrics").text)
    for name in NAMES:  # one single-input request each, on a task the model does
        body = {"query": QUERY, "texts": ["x"]} if name == RERANKER else {"inputs": "x"}
        path = {RERANKER: "rerank", "classifier": "predict"}.get(name, "embed")
        assert http.post(f"/models/{name}/{path}", json=body).status_code == 200
    text = http.get("/metrics").text
    after = counts(text)
    for name in NAMES:
        assert after[("single", name)] == before.get(("single", name), 0) + 1, name
        assert f'te_queue_size{{model="{name}"}}' in text
    assert http.get("/health").status_code == 200


def test_a_model_that_cannot_load_stops_start_up_naming_it(embedder_path, tmp_path):
    proc = subprocess.run(
        [str(ROUTER), "--hostname", "127.0.0.1", "--port", "0", "--model-id", str(embedder_path),
         "--model-id", str(tmp_path / "missing"), "--served-model-name", "broken"],
        capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "model `broken`" in errors[0] and "Traceback" not in proc.stderr


def test_two_models_with_one_name_are_refused(embedder_path):
    proc = subprocess.run(
        [str(ROUTER), "--hostname", "127.0.0.1", "--port", "0", "--model-id", str(embedder_path),
         "--model-id", str(embedder_path)],
        capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1 and "--served-model-name" in proc.stderr.splitlines()[-1]


def test_one_model_server_has_no_new_fields(embedder_path):
    with ServerProcess("--model-id", str(embedder_path)) as one:
        info = httpx.get(one.url + "/info", timeout=30).json()
        assert "models" not in info and info["served_model_name"] == str(embedder_path)
        # any `model` is the one model, as TEI's OpenAI route answers
        r = httpx.post(one.url + "/v1/embeddings", json={"input": "x", "model": "any-name"}, timeout=30)
        assert r.status_code == 200 and set(r.json()) == {"object", "data", "model", "usage"}
        assert r.json()["model"] == str(embedder_path)
        models = httpx.get(one.url + "/v1/models", timeout=30).json()["data"]
        assert [m["id"] for m in models] == [str(embedder_path)]
        assert 'te_request_count{method="single",model="' in httpx.get(one.url + "/metrics", timeout=30).text


def test_grpc_model_metadata_selects_the_model(server, grpc_port, st_embeddings, rerank_logits):
    import grpc
    from tei_client.stubs import tei_pb2 as pb
    from tei_client.stubs import tei_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        info = pb_grpc.InfoStub(channel).Info
        assert info(pb.InfoRequest()).model_type == pb.MODEL_TYPE_EMBEDDING  # the default model
        assert info(pb.InfoRequest(), metadata=(("model", "classifier"),)).model_type == pb.MODEL_TYPE_CLASSIFIER
        embed = pb_grpc.EmbedStub(channel).Embed
        ref = st_embeddings(TEXTS[:1])
        for metadata in ((), (("model", "embedder/v2"),)):
            vector = np.array(embed(pb.EmbedRequest(inputs=TEXTS[0]), metadata=metadata).embeddings)
            assert cosine(vector[None], ref).min() >= COS_BAR
        ranks = pb_grpc.RerankStub(channel).Rerank(pb.RerankRequest(query=QUERY, texts=DOCS)).ranks  # no metadata
        got = np.empty(len(DOCS))
        for rank in ranks:
            got[rank.index] = rank.score
        assert np.allclose(got, _sigmoid(rerank_logits(QUERY, DOCS)), atol=TOL)
        predictions = pb_grpc.PredictStub(channel).Predict(pb.PredictRequest(inputs="x")).predictions
        assert len(predictions) == 3  # the classifier's labels
        with pytest.raises(grpc.RpcError) as err:
            embed(pb.EmbedRequest(inputs="x"), metadata=(("model", "nope"),))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "embedder/v2" in err.value.details()


def test_with_an_api_key_only_a_models_health_checks_are_open():
    from tei.server.auth import is_public

    assert is_public("GET", f"/models/{RERANKER}/health") and is_public("GET", "/models/embedder/")
    assert not is_public("POST", f"/models/{RERANKER}/rerank") and not is_public("GET", "/models/embedder/info")

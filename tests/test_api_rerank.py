"""/rerank (both dialects, three paths), /predict and POST / against real server processes.

Servers: a tiny XLM-RoBERTa reranker (served as `tiny-reranker`), a tiny 3-label BERT classifier,
and the bundled MiniLM embedding model (rerank by cosine similarity). Scores are checked against
transformers run in the test process.
"""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from classifier_models import load_reference, reference_logits
from engine_util import cosine
from texts import TEXTS

TOL = 1e-4
QUERY = "What is deep learning?"
DOCS = [
    "Deep learning is a part of machine learning based on neural networks.",
    "Paris is the capital and largest city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé téxt 深度学习 with numbers 3.14159.",
    "short",
]
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(80))
TEI_INFO_KEYS = [
    "model_id", "model_sha", "model_dtype", "served_model_name", "model_type", "max_concurrent_requests",
    "max_input_length", "max_batch_tokens", "max_batch_requests", "max_client_batch_size", "auto_truncate",
    "tokenization_workers", "version", "sha", "docker_label",
]
RERANK_PATHS = ["/rerank", "/v1/rerank", "/v2/rerank"]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def _client(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def rr(reranker_server):
    yield from _client(reranker_server)


@pytest.fixture(scope="module")
def cls(classifier_server):
    yield from _client(classifier_server)


@pytest.fixture(scope="module")
def emb(default_server):
    yield from _client(default_server)


@pytest.fixture(scope="module")
def limit(rr):
    return rr.get("/info").json()["max_input_length"]


@pytest.fixture(scope="module")
def reranker_ref(reranker_path, limit):
    """(query, docs) → transformers' logits for each pair, cut as /rerank cuts (the document only)."""
    reference = load_reference(reranker_path)

    def logits(query, docs, side="right"):
        pairs = [(query, d) for d in docs]
        return reference_logits(reranker_path, pairs, limit, "only_second", side, reference=reference)[:, 0]

    return logits


def _assert_sorted(values):
    assert all(a >= b for a, b in zip(values, values[1:])), values


# ---- /info ----------------------------------------------------------------------------------


def test_info_keeps_tei_keys_and_adds_rerank_scoring(rr, cls, emb):
    info = rr.get("/info").json()
    assert list(info)[: len(TEI_INFO_KEYS)] == TEI_INFO_KEYS
    assert next(iter(info["model_type"])) == "reranker"  # Dify reads the first key
    assert info["model_type"]["reranker"] == {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    assert info["served_model_name"] == "tiny-reranker"
    assert info["rerank"] == {"scoring": "cross-encoder", "max_documents": 512}
    classifier = cls.get("/info").json()
    assert list(classifier["model_type"]) == ["classifier"]
    assert classifier["model_type"]["classifier"]["id2label"] == {"0": "label_a", "1": "label_b", "2": "label_c"}
    assert classifier["rerank"] is None
    assert emb.get("/info").json()["rerank"] == {"scoring": "cosine-similarity", "max_documents": 512}


def test_openapi_documents_the_routes(rr):
    spec = rr.get("/openapi.json")
    assert spec.status_code == 200
    assert {"/rerank", "/predict"} <= set(spec.json()["paths"])


# ---- TEI dialect ----------------------------------------------------------------------------


def test_tei_dialect_returns_a_bare_sorted_list(rr, reranker_ref):
    r = rr.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert isinstance(ranks, list) and len(ranks) == len(DOCS)
    assert all(set(rank) == {"index", "score"} for rank in ranks)  # `text` omitted, not null
    assert sorted(rank["index"] for rank in ranks) == list(range(len(DOCS)))
    _assert_sorted([rank["score"] for rank in ranks])
    expected = _sigmoid(reranker_ref(QUERY, DOCS))
    for rank in ranks:
        assert abs(rank["score"] - expected[rank["index"]]) <= TOL
    assert np.ptp(expected) > 0.1


def test_tei_dialect_return_text(rr):
    ranks = rr.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    assert all(rank["text"] == DOCS[rank["index"]] for rank in ranks)


# ---- Cohere / Jina dialect ------------------------------------------------------------------


@pytest.mark.parametrize("path", RERANK_PATHS)
def test_cohere_dialect_on_every_path(rr, reranker_ref, path):
    r = rr.post(path, json={"model": "bge-reranker-v2-m3", "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["id", "results", "model", "usage", "meta"]
    assert isinstance(body["id"], str) and body["id"]
    assert body["model"] == "tiny-reranker"  # the model that ranked, whatever the client named
    results = body["results"]
    assert all(set(item) == {"index", "relevance_score"} for item in results)  # return_documents defaults to false
    _assert_sorted([item["relevance_score"] for item in results])
    expected = _sigmoid(reranker_ref(QUERY, DOCS))
    assert [item["index"] for item in results] == list(np.argsort(-expected, kind="stable"))
    for item in results:
        assert abs(item["relevance_score"] - expected[item["index"]]) <= TOL
    tokens = int(r.headers["x-compute-tokens"])
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["meta"] == {"tokens": {"input_tokens": tokens, "output_tokens": 0}}


def test_return_documents_echoes_strings_and_objects(rr):
    docs = [DOCS[0], {"text": DOCS[1], "title": "France", "id": "doc-7"}, DOCS[2]]
    body = rr.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_documents": True}).json()
    for item in body["results"]:
        doc = docs[item["index"]]
        assert item["document"] == (doc if isinstance(doc, dict) else {"text": doc})
    plain = rr.post("/v1/rerank", json={"query": QUERY, "documents": docs, "return_documents": False}).json()
    assert all("document" not in item for item in plain["results"])
    # objects rank by their `text`: same scores as the plain strings
    strings = rr.post("/v1/rerank", json={"query": QUERY, "documents": [DOCS[0], DOCS[1], DOCS[2]]}).json()
    assert plain["results"] == strings["results"]


def test_rank_fields_rank_the_named_fields(rr):
    doc = {"title": "Deep learning", "body": "Neural networks with many layers.", "text": "unused"}
    body = rr.post(
        "/v1/rerank", json={"query": QUERY, "documents": [doc], "rank_fields": ["title", "body"], "return_documents": True}
    ).json()
    same = rr.post(
        "/v1/rerank", json={"query": QUERY, "documents": ["title: Deep learning\nbody: Neural networks with many layers."]}
    ).json()
    assert body["results"][0]["relevance_score"] == same["results"][0]["relevance_score"]
    assert body["results"][0]["document"] == doc


@pytest.mark.parametrize("top_n, expected", [(None, 5), (0, 5), (2, 2), (1, 1), (50, 5)])
def test_top_n(rr, top_n, expected):
    full = rr.post("/v2/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    results = rr.post("/v2/rerank", json={"query": QUERY, "documents": DOCS, "top_n": top_n}).json()["results"]
    assert results == full[:expected]
    ranks = rr.post("/rerank", json={"query": QUERY, "texts": DOCS, "top_n": top_n}).json()
    assert [r["index"] for r in ranks] == [r["index"] for r in full[:expected]]


def test_query_as_text_object(rr):
    as_string = rr.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    as_object = rr.post("/rerank", json={"query": {"text": QUERY}, "documents": DOCS}).json()["results"]
    assert as_object == as_string


def test_unknown_fields_are_ignored(rr):
    """FastGPT merges an admin's arbitrary `defaultConfig` into the body; Cohere SDKs add their own extras."""
    extra = {"instruction": "Rank by relevance", "max_chunks_per_doc": 10, "max_tokens_per_doc": 4096,
             "priority": 0, "options": {"a": [1, 2]}, "user": "u-1"}
    plain = rr.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    r = rr.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == plain
    ranks = rr.post("/rerank", json={"query": QUERY, "texts": DOCS, **extra})
    assert ranks.status_code == 200 and isinstance(ranks.json(), list)


def test_raw_scores_are_logits(rr, reranker_ref):
    ranks = rr.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    logits = reranker_ref(QUERY, DOCS)
    assert all(abs(rank["score"] - logits[rank["index"]]) <= TOL for rank in ranks)
    assert min(rank["score"] for rank in ranks) < 0 or max(rank["score"] for rank in ranks) > 1  # not probabilities
    _assert_sorted([rank["score"] for rank in ranks])
    results = rr.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "raw_scores": True}).json()["results"]
    assert [r["index"] for r in results] == [r["index"] for r in ranks]


# ---- truncation -----------------------------------------------------------------------------


def test_long_documents_are_truncated_by_default(rr, reranker_ref, limit):
    docs = [LONG_DOC, DOCS[0], LONG_DOC + " " + LONG_DOC]
    r = rr.post("/v1/rerank", json={"query": QUERY, "documents": docs})  # Dify and FastGPT never send `truncate`
    assert r.status_code == 200, r.text
    expected = _sigmoid(reranker_ref(QUERY, docs))
    for item in r.json()["results"]:
        assert abs(item["relevance_score"] - expected[item["index"]]) <= TOL
    single = rr.post("/rerank", json={"query": QUERY, "texts": [LONG_DOC]})
    assert single.headers["x-compute-tokens"] == str(limit)  # the pair was cut to the model's limit


def test_truncate_false_rejects_long_documents(rr, limit):
    r = rr.post("/rerank", json={"query": QUERY, "texts": [LONG_DOC], "truncate": False})
    assert r.status_code == 422
    assert r.json()["error_type"] == "Validation"
    assert f"{limit} tokens" in r.json()["error"]


@pytest.mark.parametrize("direction", ["right", "Right", "left", "Left"])
def test_truncation_direction(rr, reranker_ref, direction):
    ranks = rr.post(
        "/rerank", json={"query": QUERY, "texts": [LONG_DOC], "truncation_direction": direction, "raw_scores": True}
    ).json()
    expected = reranker_ref(QUERY, [LONG_DOC], side=direction.lower())
    assert abs(ranks[0]["score"] - expected[0]) <= TOL


def test_left_and_right_truncation_differ(rr):
    scores = [
        rr.post("/rerank", json={"query": QUERY, "texts": [LONG_DOC], "truncation_direction": d, "raw_scores": True})
        .json()[0]["score"]
        for d in ("right", "left")
    ]
    assert abs(scores[0] - scores[1]) > 10 * TOL


# ---- batching, limits, ordering -------------------------------------------------------------


def test_hundred_documents_in_one_request(rr, reranker_ref):
    """One request, 100 sequences: several forward passes under the server's 1024-token budget."""
    docs = [f"{TEXTS[i % len(TEXTS)]} (variant {i})" for i in range(100)]
    r = rr.post("/v1/rerank", json={"model": "m", "query": QUERY, "documents": docs, "return_documents": True})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 100 and sorted(item["index"] for item in results) == list(range(100))
    assert int(r.headers["x-compute-tokens"]) > 1024  # more than one batch's budget
    _assert_sorted([item["relevance_score"] for item in results])
    expected = _sigmoid(reranker_ref(QUERY, docs))
    for item in results:
        assert abs(item["relevance_score"] - expected[item["index"]]) <= TOL
        assert item["document"]["text"] == docs[item["index"]]
    # the same scores whether the documents come in one request or four
    parts = [rr.post("/rerank", json={"query": QUERY, "texts": docs[i : i + 25]}).json() for i in range(0, 100, 25)]
    apart = {25 * k + rank["index"]: rank["score"] for k, part in enumerate(parts) for rank in part}
    assert all(abs(item["relevance_score"] - apart[item["index"]]) <= 1e-6 for item in results)


def test_ordering_is_stable(rr):
    body = {"query": QUERY, "documents": DOCS * 4}
    first = rr.post("/v1/rerank", json=body).json()["results"]
    for _ in range(3):
        assert rr.post("/v1/rerank", json=body).json()["results"] == first
    # duplicates score the same and keep their input order
    for k in range(0, len(first), 4):
        group = first[k : k + 4]
        assert len({item["relevance_score"] for item in group}) == 1
        assert [item["index"] for item in group] == sorted(item["index"] for item in group)


def test_document_limit(rr):
    r = rr.post("/v1/rerank", json={"query": QUERY, "documents": ["doc"] * 513})
    assert r.status_code == 413
    assert r.json() == {"error": "batch size 513 > maximum allowed batch size 512", "error_type": "Validation"}
    assert rr.post("/v1/rerank", json={"query": QUERY, "documents": ["doc"] * 512}).status_code == 200


def test_compute_headers(rr):
    r = rr.post("/rerank", json={"query": QUERY, "texts": DOCS})
    for name in ("x-compute-type", "x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time",
                 "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert name in r.headers
    # TEI counts the query once per document
    assert int(r.headers["x-compute-characters"]) == len(QUERY) * len(DOCS) + sum(len(d) for d in DOCS)


@pytest.mark.parametrize("header", ["", "Bearer None", "Bearer some-key"])
def test_authorization_header_is_ignored_without_an_api_key(rr, header):
    headers = {"Authorization": header}
    assert rr.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}, headers=headers).status_code == 200
    assert rr.post("/rerank", json={"query": QUERY, "texts": DOCS}, headers=headers).status_code == 200
    assert rr.post("/predict", json={"inputs": "hello"}, headers=headers).status_code == 200
    assert rr.get("/info", headers=headers).status_code == 200


# ---- 4xx ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"query": QUERY}, "`documents` (Cohere/Jina) or `texts` (TEI) is required"),
        ({"query": QUERY, "texts": DOCS, "documents": DOCS}, "not both"),
        ({"texts": DOCS}, "query"),
        ({"query": QUERY, "documents": [DOCS[0], 7]}, "documents"),
        ({"query": QUERY, "documents": [{"title": "no text"}]}, "`documents[0]` must be a string or an object"),
        ({"query": QUERY, "documents": [{"a": "x"}], "rank_fields": ["b"]}, "none of the `rank_fields`"),
        ({"query": QUERY, "documents": DOCS, "top_n": -1}, "top_n"),
        ({"query": QUERY, "documents": DOCS, "top_n": "2"}, "top_n"),
        ({"query": QUERY, "texts": DOCS, "return_text": "true"}, "return_text"),
        ({"query": QUERY, "texts": DOCS, "truncation_direction": "middle"}, "truncation_direction"),
        ({"query": QUERY, "texts": DOCS, "truncation_direction": "LEFT"}, "truncation_direction"),
        ({"query": ["a"], "texts": DOCS}, "query"),
        ([QUERY, DOCS], "Failed to deserialize"),
    ],
)
def test_bad_rerank_bodies_are_422(rr, body, fragment):
    for path in RERANK_PATHS:
        r = rr.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error_type"] == "Validation"
        assert fragment in r.json()["error"]


@pytest.mark.parametrize("field", ["texts", "documents"])
def test_empty_documents_are_422(rr, field):
    r = rr.post("/v1/rerank", json={"query": QUERY, field: []})
    assert r.status_code == 422
    assert r.json() == {"error": f"Input validation error: `{field}` cannot be empty", "error_type": "Validation"}


def test_not_json_is_400(rr):
    r = rr.post("/v1/rerank", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error_type"] == "Validation"


# ---- /predict -------------------------------------------------------------------------------


def test_predict_shapes_on_a_classifier(cls, classifier_path):
    limit = cls.get("/info").json()["max_input_length"]
    reference = load_reference(classifier_path)

    def probs(items):
        logits = reference_logits(classifier_path, items, limit, reference=reference)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    labels = ["label_a", "label_b", "label_c"]

    def check(predictions, expected_row):
        assert sorted(p["label"] for p in predictions) == labels
        _assert_sorted([p["score"] for p in predictions])
        for p in predictions:
            assert abs(p["score"] - expected_row[labels.index(p["label"])]) <= TOL

    single = cls.post("/predict", json={"inputs": "I love this!"})
    assert single.status_code == 200, single.text
    check(single.json(), probs(["I love this!"])[0])  # one input → one flat list
    pair = cls.post("/predict", json={"inputs": ["I love this!", "So do I."]}).json()
    check(pair, probs([("I love this!", "So do I.")])[0])  # ["a", "b"] is one pair, not a batch
    check(cls.post("/predict", json={"inputs": ["I love this!"]}).json(), probs(["I love this!"])[0])
    batch_items = [["I love this!"], ["I love this!", "So do I."], [LONG_DOC]]
    batch = cls.post("/predict", json={"inputs": batch_items}).json()
    expected = probs(["I love this!", ("I love this!", "So do I."), LONG_DOC])
    assert len(batch) == 3
    for predictions, row in zip(batch, expected):
        check(predictions, row)
    raw = cls.post("/predict", json={"inputs": [["I love this!"]], "raw_scores": True}).json()[0]
    logits = reference_logits(classifier_path, ["I love this!"], limit, reference=reference)[0]
    assert all(abs(p["score"] - logits[labels.index(p["label"])]) <= TOL for p in raw)


def test_predict_token_ids_equal_text(cls):
    ids = [t["id"] for t in cls.post("/tokenize", json={"inputs": "I love this!"}).json()[0]]
    from_ids = cls.post("/predict", json={"inputs": ids}).json()
    from_text = cls.post("/predict", json={"inputs": "I love this!"}).json()
    assert [p["label"] for p in from_ids] == [p["label"] for p in from_text]
    assert all(abs(a["score"] - b["score"]) <= TOL for a, b in zip(from_ids, from_text))


@pytest.mark.parametrize(
    "inputs",
    [["a", "b", "c"], [["a", "b", "c"]], [], [["a"], []], ["a", ["b"]], [["a"], "b"], {"text": "a"}, 3, [True], None],
)
def test_bad_predict_inputs_are_422(cls, inputs):
    r = cls.post("/predict", json={"inputs": inputs})
    assert r.status_code == 422, r.text
    assert r.json()["error_type"] == "Validation"


def test_predict_limits_and_empty_text(cls):
    r = cls.post("/predict", json={"inputs": [["x"]] * 33})
    assert r.status_code == 413
    assert r.json()["error"] == "batch size 33 > maximum allowed batch size 32"
    empty = cls.post("/predict", json={"inputs": ""})
    assert empty.status_code == 422
    assert "cannot be empty" in empty.json()["error"]
    assert cls.post("/predict", json={"inputs": [["x"]] * 32}).status_code == 200


def test_predict_on_a_reranker(rr, reranker_ref):
    single = rr.post("/predict", json={"inputs": [QUERY, DOCS[0]]}).json()
    assert [p["label"] for p in single] == ["LABEL_0"]
    assert abs(single[0]["score"] - _sigmoid(reranker_ref(QUERY, [DOCS[0]]))[0]) <= TOL
    ranked = rr.post("/rerank", json={"query": QUERY, "texts": [DOCS[0]]}).json()
    assert ranked[0]["score"] == single[0]["score"]


# ---- wrong model, wrong route ---------------------------------------------------------------


@pytest.mark.parametrize("body", [{"query": QUERY, "texts": DOCS}, {"query": QUERY, "documents": DOCS}])
def test_rerank_on_a_classifier_is_424(cls, body):
    for path in RERANK_PATHS:
        r = cls.post(path, json=body)
        assert r.status_code == 424
        assert r.json() == {"error": "Backend error: model is not a re-ranker model", "error_type": "Backend"}


@pytest.mark.parametrize("client_name", ["cls", "rr"])
def test_embed_on_a_classifier_or_reranker_is_424(request, client_name):
    client = request.getfixturevalue(client_name)
    for path, body in (("/embed", {"inputs": "hello"}), ("/v1/embeddings", {"input": "hello"})):
        r = client.post(path, json=body)
        assert r.status_code == 424
        assert r.json()["error"] == "Backend error: Model is not an embedding model"


def test_predict_on_an_embedding_model_is_424(emb):
    r = emb.post("/predict", json={"inputs": "hello"})
    assert r.status_code == 424
    assert r.json() == {"error": "Backend error: Model is not a classifier model", "error_type": "Backend"}


def test_rerank_on_an_embedding_model_ranks_by_cosine_similarity(emb, minilm_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    expected = cosine(st.encode([QUERY])[0][None, :], st.encode(DOCS))
    ranks = emb.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    results = emb.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    assert [r["index"] for r in ranks] == [r["index"] for r in results] == list(np.argsort(-expected))
    for rank in ranks:
        assert abs(rank["score"] - expected[rank["index"]]) <= TOL
    assert ranks[0]["index"] == 0  # the deep-learning sentence wins with a real embedding model


# ---- POST / and /invocations ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/invocations"])
def test_default_task_by_model_type(rr, cls, emb, path):
    tei = rr.post(path, json={"query": QUERY, "texts": DOCS})
    assert tei.status_code == 200 and tei.json() == rr.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    cohere = rr.post(path, json={"query": QUERY, "documents": DOCS}).json()
    assert cohere["results"] == rr.post("/rerank", json={"query": QUERY, "documents": DOCS}).json()["results"]
    # huggingface_hub's text_classification sends `inputs` to a reranker URL
    assert rr.post(path, json={"inputs": [QUERY, DOCS[0]]}).json() == rr.post(
        "/predict", json={"inputs": [QUERY, DOCS[0]]}
    ).json()
    assert cls.post(path, json={"inputs": "I love this!"}).json() == cls.post(
        "/predict", json={"inputs": "I love this!"}
    ).json()
    embedded = emb.post(path, json={"inputs": "hello"}).json()
    assert len(embedded) == 1 and len(embedded[0]) == 384
    bad = rr.post(path, json={"query": QUERY})
    assert bad.status_code == 422

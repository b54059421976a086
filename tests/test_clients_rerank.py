"""Real clients against a real server: what Dify, FastGPT, the cohere SDK and tei-client send and parse.

Dify and FastGPT are replayed from their source (request bodies, headers, URL building and the way
they read the answer); the cohere SDK (v1 `Client`, v2 `ClientV2`) and tei-client run as installed.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import requests

QUERY = "What is the capital of the United States?"
# Dify's credential check for rerank models (OpenAI-compatible provider)
DIFY_DOCS = [
    "Carson City is the capital city of the American state of Nevada. At the 2010 United States Census, "
    "Carson City had a population of 55,274.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean that are a "
    "political division controlled by the United States. Its capital is Saipan.",
    "Washington, D.C., formally the District of Columbia, is the capital city and federal district of the "
    "United States. It is located on the east bank of the Potomac River.",
]
KASUMI = [
    'Kasumi is a girl\'s name of Japanese origin meaning "mist".',
    "Her music is a kawaii bass, a mix of future bass, pop, and kawaii music ",
    "and she leads a team named PopiParty.",
]
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(80))


def _descending(scores):
    return all(a >= b for a, b in zip(scores, scores[1:]))


@pytest.fixture(scope="module")
def url(reranker_server):
    return reranker_server.url


@pytest.fixture(scope="module")
def truth(url):
    """Every document's score, in input order, from the plain TEI route."""

    def scores(query, docs):
        ranks = requests.post(f"{url}/rerank", json={"query": query, "texts": docs}, timeout=60).json()
        out = np.empty(len(docs))
        for rank in ranks:
            out[rank["index"]] = rank["score"]
        return out

    return scores


# ---- Dify: "Text Embedding Inference" provider ----------------------------------------------


def _dify_tei_rerank(server_url, query, docs, score_threshold=None, top_n=None):
    """Dify's TEI provider: /info decides the model type; /rerank with `texts` and `return_text`;
    the list is walked in server order, filtered by threshold, stopped at top_n."""
    server_url = server_url.rstrip("/")
    info = requests.get(f"{server_url}/info", timeout=10).json()
    model_type = next(iter(info.get("model_type", {})))
    if model_type != "reranker":
        raise RuntimeError("Current model is not a rerank model")
    context_size = info.get("max_input_length", 512)
    batch_size = info.get("max_client_batch_size", 1)
    ranks = requests.post(
        f"{server_url}/rerank", json={"query": query, "texts": docs, "return_text": True}, timeout=60
    )
    ranks.raise_for_status()
    kept = []
    for rank in ranks.json():
        doc = {"index": rank["index"], "text": rank["text"], "score": rank["score"]}
        if score_threshold is None or rank["score"] >= score_threshold:
            kept.append(doc)
        if top_n is not None and len(kept) >= top_n:
            break
    return context_size, batch_size, kept


def test_dify_tei_provider(url, truth):
    context_size, batch_size, docs = _dify_tei_rerank(url + "/", QUERY, DIFY_DOCS + [LONG_DOC])
    assert isinstance(context_size, int) and context_size > 0 and batch_size >= 1
    expected = truth(QUERY, DIFY_DOCS + [LONG_DOC])
    assert [d["index"] for d in docs] == list(np.argsort(-expected, kind="stable"))
    assert all(d["text"] == (DIFY_DOCS + [LONG_DOC])[d["index"]] for d in docs)
    _, _, top = _dify_tei_rerank(url, QUERY, DIFY_DOCS, top_n=2)
    assert [d["index"] for d in top] == [d["index"] for d in docs if d["index"] < 3][:2]
    threshold = float(np.median(expected[:3]))
    _, _, kept = _dify_tei_rerank(url, QUERY, DIFY_DOCS, score_threshold=threshold)
    assert kept and all(d["score"] >= threshold for d in kept)
    _dify_tei_rerank(url, "Whose kasumi", KASUMI, score_threshold=0.8)  # the credential check


# ---- Dify: "OpenAI-API-compatible" provider -------------------------------------------------


def _dify_openai_compatible_rerank(endpoint_url, model, query, docs, top_n=None, score_threshold=None, api_key=""):
    endpoint_url = endpoint_url.rstrip("/")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}" if api_key else ""}
    payload = {"model": model, "query": query, "documents": docs, "top_n": top_n if top_n is not None else len(docs)}
    response = requests.post(f"{endpoint_url}/rerank", headers=headers, json=payload, timeout=60)
    response.raise_for_status()
    ranked = [
        {"index": item.get("index", 0), "score": item.get("relevance_score", 0.0), "text": docs[item.get("index", 0)]}
        for item in response.json().get("results", [])
        if item.get("index", 0) < len(docs)
    ]
    ranked.sort(key=lambda d: d["score"], reverse=True)
    if top_n:
        ranked = ranked[:top_n]
    if score_threshold is not None:
        ranked = [d for d in ranked if d["score"] >= score_threshold]
    return ranked


@pytest.mark.parametrize("suffix", ["/v1", "", "/v1/"])  # users enter base URLs with and without /v1
def test_dify_openai_compatible_provider(url, truth, suffix):
    expected = truth(QUERY, DIFY_DOCS)
    ranked = _dify_openai_compatible_rerank(url + suffix, "bge-reranker-v2-m3", QUERY, DIFY_DOCS, top_n=3)
    assert [d["index"] for d in ranked] == list(np.argsort(-expected, kind="stable"))
    assert all(abs(d["score"] - expected[d["index"]]) <= 1e-6 for d in ranked)
    assert len(_dify_openai_compatible_rerank(url + suffix, "m", QUERY, DIFY_DOCS, top_n=1)) == 1
    # the credential check: threshold 0.8 and top_n 3, with an empty Authorization header
    _dify_openai_compatible_rerank(url + suffix, "m", QUERY, DIFY_DOCS, top_n=3, score_threshold=0.8)
    _dify_openai_compatible_rerank(url + suffix, "m", QUERY, DIFY_DOCS, api_key="sk-anything")


# ---- Dify plugin SDK: OAICompatRerankModel base class ---------------------------------------


def test_dify_plugin_sdk_base_class(url, truth):
    """`top_n: null`, `return_documents: true`, `Authorization: Bearer None` when no key is configured;
    reads `document.text` (or a bare string) and falls back to the text it sent."""
    credentials = {"endpoint_url": url + "/v1", "api_key": None}
    headers = {"Authorization": f"Bearer {credentials.get('api_key')}", "Content-Type": "application/json"}
    data = {"model": "tiny", "query": QUERY, "documents": DIFY_DOCS, "top_n": None, "return_documents": True}
    response = requests.post(credentials["endpoint_url"] + "/rerank", headers=headers, data=json.dumps(data), timeout=60)
    response.raise_for_status()
    results = response.json()["results"]
    assert len(results) == len(DIFY_DOCS)
    for result in results:
        document = result.get("document", {})
        text = document.get("text", DIFY_DOCS[result["index"]]) if isinstance(document, dict) else document
        assert isinstance(document, dict) and text == DIFY_DOCS[result["index"]]
        assert 0.0 <= result["relevance_score"] <= 1.0
    expected = truth(QUERY, DIFY_DOCS)
    assert [r["index"] for r in results] == list(np.argsort(-expected, kind="stable"))


# ---- FastGPT ---------------------------------------------------------------------------------


def _fastgpt_rerank(request_url, model, query, documents, default_config, token="fastgpt-token"):
    """reRankRecall: long documents split client-side into `{id}__chunk_{i}`; no top_n; the first
    result per document is kept because results come "from high to low"."""
    expanded = []
    chunk_to_doc = {}
    for doc in documents:
        text = doc["text"].strip()
        if not text:
            continue
        chunks = [text] if len(text) <= 400 else [text[i : i + 400] for i in range(0, len(text), 400)]
        for i, chunk in enumerate(chunks):
            chunk_id = doc["id"] if len(chunks) == 1 else f"{doc['id']}__chunk_{i}"
            chunk_to_doc[chunk_id] = doc["id"]
            expanded.append({"id": chunk_id, "text": chunk})
    body = {"model": model, "query": query, "documents": [d["text"] for d in expanded], **default_config}
    response = requests.post(request_url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    response.raise_for_status()
    data = response.json()
    seen, results = set(), []
    for item in data["results"]:
        doc_id = chunk_to_doc[expanded[item["index"]]["id"]]
        if doc_id in seen:
            continue
        seen.add(doc_id)
        results.append({"id": doc_id, "score": item["relevance_score"]})
    return results, data.get("meta", {}).get("tokens", {}).get("input_tokens"), expanded


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])  # custom requestUrl, or `${baseUrl}/rerank`
def test_fastgpt(url, truth, path):
    documents = [{"id": f"d{i}", "text": text} for i, text in enumerate(DIFY_DOCS)]
    documents.append({"id": "long", "text": LONG_DOC})  # split into chunks client-side
    documents.append({"id": "blank", "text": "   "})  # dropped client-side
    default_config = {"instruction": "Given a query, rank the passages", "temperature": 0, "extra": {"k": [1]}}
    results, input_tokens, expanded = _fastgpt_rerank(url + path, "bge-reranker-v2-m3", QUERY, documents, default_config)
    assert input_tokens and input_tokens > 0
    chunk_scores = truth(QUERY, [d["text"] for d in expanded])
    best = {}
    for chunk, score in zip(expanded, chunk_scores):
        doc_id = chunk["id"].split("__chunk_")[0]
        best[doc_id] = max(best.get(doc_id, -1.0), score)
    assert sum(1 for d in expanded if d["id"].startswith("long__chunk_")) > 1
    # the first result seen per document is its best chunk only because results are sorted
    assert {r["id"]: r["score"] for r in results} == pytest.approx(best, abs=1e-6)
    assert _descending([r["score"] for r in results])
    assert all(0.0 <= r["score"] <= 1.0 for r in results)  # FastGPT's score filter needs probabilities


# ---- cohere SDK -------------------------------------------------------------------------------


def test_cohere_v1_client(url, truth):
    import cohere

    client = cohere.Client(base_url=url, api_key="unused")  # POST {base_url}/v1/rerank
    response = client.rerank(
        query=QUERY, documents=DIFY_DOCS, top_n=2, return_documents=True, model="rerank-english-v3.0"
    )
    expected = truth(QUERY, DIFY_DOCS)
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable"))[:2]
    for r in response.results:
        assert r.document.text == DIFY_DOCS[r.index]  # Dify's Cohere provider reads this
        assert abs(r.relevance_score - expected[r.index]) <= 1e-6
    assert response.id and response.meta.tokens.input_tokens > 0
    # object documents keep their fields; rank_fields chooses what is ranked
    docs = [{"title": "Nevada", "text": DIFY_DOCS[0]}, {"title": "USA", "text": DIFY_DOCS[2]}]
    by_text = client.rerank(query=QUERY, documents=docs, return_documents=True)
    assert {r.document.text for r in by_text.results} == {DIFY_DOCS[0], DIFY_DOCS[2]}
    assert all(getattr(r.document, "title") == docs[r.index]["title"] for r in by_text.results)
    by_fields = client.rerank(query=QUERY, documents=docs, rank_fields=["title", "text"], max_chunks_per_doc=10)
    assert len(by_fields.results) == 2 and all(r.document is None for r in by_fields.results)


def test_cohere_v2_client(url, truth):
    import cohere

    client = cohere.ClientV2(base_url=url, api_key="unused")  # POST {base_url}/v2/rerank
    docs = DIFY_DOCS + [LONG_DOC]
    response = client.rerank(model="rerank-v3.5", query=QUERY, documents=docs, top_n=3, max_tokens_per_doc=4096)
    expected = truth(QUERY, docs)
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable"))[:3]
    assert all(abs(r.relevance_score - expected[r.index]) <= 1e-6 for r in response.results)
    everything = client.rerank(model="rerank-v3.5", query=QUERY, documents=docs)
    assert len(everything.results) == len(docs)
    assert _descending([r.relevance_score for r in everything.results])


def test_cohere_async_v2_client(url, truth):
    import asyncio

    import cohere

    async def call():
        client = cohere.AsyncClientV2(base_url=url, api_key="unused")
        return await client.rerank(model="m", query=QUERY, documents=DIFY_DOCS)

    response = asyncio.run(call())
    expected = truth(QUERY, DIFY_DOCS)
    assert [r.index for r in response.results] == list(np.argsort(-expected, kind="stable"))


# ---- tei-client -------------------------------------------------------------------------------


def test_tei_client_rerank(url, truth):
    from tei_client import HttpClient, ModelType
    from tei_client.models import TruncationDirection

    client = HttpClient(url)
    assert client.health()
    info = client.info()
    assert info.server_model_type == ModelType.Reranker
    assert info.server_model_metadata.id2label == {"0": "LABEL_0"}
    result = client.rerank(QUERY, DIFY_DOCS, return_text=True)
    expected = truth(QUERY, DIFY_DOCS)
    assert [r.index for r in result.ranks] == list(np.argsort(-expected, kind="stable"))
    assert all(r.text == DIFY_DOCS[r.index] and abs(r.score - expected[r.index]) <= 1e-6 for r in result.ranks)
    bare = client.rerank(QUERY, DIFY_DOCS)
    assert all(r.text is None for r in bare.ranks)
    # tei-client sends truncate=false unless told: a long document needs truncate=True
    cut = client.rerank(QUERY, [LONG_DOC, DIFY_DOCS[0]], truncate=True, raw_scores=True,
                        truncation_direction=TruncationDirection.Left)
    assert len(cut.ranks) == 2 and _descending([r.score for r in cut.ranks])
    import asyncio

    async_result = asyncio.run(client.async_rerank(QUERY, DIFY_DOCS))
    assert [r.index for r in async_result.ranks] == [r.index for r in result.ranks]


def test_tei_client_classify(classifier_server):
    from tei_client import HttpClient, ModelType

    client = HttpClient(classifier_server.url)
    assert client.info().server_model_type == ModelType.Classifier
    labels = {"label_a", "label_b", "label_c"}
    single = client.classify("I love this!")
    assert len(single) == 1 and {s.label for s in single[0].scores} == labels
    assert abs(sum(s.score for s in single[0].scores) - 1.0) < 1e-5
    pair = client.classify(("I love this!", "So do I."))
    assert len(pair) == 1
    batch = client.classify(["I love this!", "I hate this.", "Meh."])
    assert len(batch) == 3
    assert [s.label for s in batch[0].scores] == [s.label for s in single[0].scores]
    mixed = client.classify([("a", "b"), ("c", "d")], raw_scores=True, truncate=True)
    assert len(mixed) == 2 and all(len(r.scores) == 3 for r in mixed)
    for r in batch + mixed:
        assert _descending([s.score for s in r.scores])

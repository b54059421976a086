"""Real clients against one server with an embedder and a reranker (from a models file), each picking
its model the way it normally does: the OpenAI and Cohere SDKs by `model`, tei-client and Dify's TEI
provider by a per-model base URL, Dify's OpenAI-compatible provider and FastGPT by the body's `model`.
Also: per-model options from the file (prompts, max_concurrent_requests → 429 per model)."""
from __future__ import annotations

import httpx
import numpy as np
import pytest
from classifier_models import load_reference, reference_logits
from engine_util import cosine
from prod_util import tiny_embedder
from server_process import ServerProcess
from test_clients_rerank import DIFY_DOCS, LONG_DOC, QUERY, _dify_openai_compatible_rerank, _dify_tei_rerank, _fastgpt_rerank

COS_BAR = 0.99999
TOL = 1e-5
EMBEDDER, RERANKER = "acme/embedder", "acme/reranker"
TEXTS = ["The cat sat on the mat.", "Rerankers reorder retrieved passages."]
PROMPT = "query: "


@pytest.fixture(scope="module")
def embedder_path(models_dir):
    return tiny_embedder(models_dir)


@pytest.fixture(scope="module")
def server(tmp_path_factory, embedder_path, reranker_path):
    path = tmp_path_factory.mktemp("multi") / "models.yaml"
    path.write_text(f"""
models:
  - model_id: {embedder_path}
    served_model_name: {EMBEDDER}
    max_concurrent_requests: 2
    prompts:
      query: "{PROMPT}"
  - model-id: {reranker_path}
    served-model-name: {RERANKER}
""")
    with ServerProcess("--models", str(path), "--max-batch-tokens", "1024") as proc:
        yield proc


@pytest.fixture(scope="module")
def st(embedder_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embedder_path), device="cpu")


@pytest.fixture(scope="module")
def truth(reranker_path):
    reference = load_reference(reranker_path)

    def scores(query, docs):
        logits = reference_logits(reranker_path, [(query, d) for d in docs], truncation="only_second",
                                  reference=reference)[:, 0]
        return 1 / (1 + np.exp(-logits))

    return scores


def test_openai_sdk_selects_by_model(server, st):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key="unused")
    answer = client.embeddings.create(model=EMBEDDER, input=TEXTS, encoding_format="float")
    assert answer.model == EMBEDDER
    assert cosine(np.array([d.embedding for d in answer.data]), st.encode(TEXTS)).min() >= COS_BAR
    assert [m.id for m in client.models.list().data] == [EMBEDDER, RERANKER]


def test_cohere_sdks_select_by_model(server, truth):
    import cohere

    expected = truth(QUERY, DIFY_DOCS)
    for client in (cohere.Client(base_url=server.url, api_key="unused"),
                   cohere.ClientV2(base_url=server.url, api_key="unused")):
        answer = client.rerank(model=RERANKER, query=QUERY, documents=DIFY_DOCS)
        got = {r.index: r.relevance_score for r in answer.results}
        assert [r.index for r in answer.results] == list(np.argsort(-expected, kind="stable"))
        assert all(abs(got[i] - expected[i]) <= TOL for i in range(len(DIFY_DOCS)))


def test_tei_client_selects_by_base_url(server, st, truth):
    from tei_client import HttpClient, ModelType

    embedder = HttpClient(f"{server.url}/models/{EMBEDDER}")
    assert embedder.info().server_model_type == ModelType.Embedding
    assert cosine(np.array(embedder.embed(TEXTS)), st.encode(TEXTS)).min() >= COS_BAR
    reranker = HttpClient(f"{server.url}/models/{RERANKER}")
    assert reranker.info().server_model_type == ModelType.Reranker and reranker.health()
    ranks = reranker.rerank(QUERY, DIFY_DOCS).ranks
    expected = truth(QUERY, DIFY_DOCS)
    assert all(abs(r.score - expected[r.index]) <= TOL for r in ranks)


def test_dify_tei_provider_with_a_per_model_server_url(server, truth):
    _, _, docs = _dify_tei_rerank(f"{server.url}/models/{RERANKER}/", QUERY, DIFY_DOCS)
    expected = truth(QUERY, DIFY_DOCS)
    assert [d["index"] for d in docs] == list(np.argsort(-expected, kind="stable"))
    with pytest.raises(RuntimeError, match="not a rerank model"):  # Dify's own check, on the embedder
        _dify_tei_rerank(f"{server.url}/models/{EMBEDDER}", QUERY, DIFY_DOCS)


@pytest.mark.parametrize("model", [RERANKER, ""])  # an empty name gets the first reranker
def test_dify_openai_compatible_provider_and_fastgpt_by_model(server, truth, model):
    expected = truth(QUERY, DIFY_DOCS)
    ranked = _dify_openai_compatible_rerank(server.url + "/v1", model, QUERY, DIFY_DOCS, top_n=3)
    assert [d["index"] for d in ranked] == list(np.argsort(-expected, kind="stable"))
    assert all(abs(d["score"] - expected[d["index"]]) <= TOL for d in ranked)
    documents = [{"id": f"d{i}", "text": text} for i, text in enumerate(DIFY_DOCS)] + [{"id": "long", "text": LONG_DOC}]
    results, input_tokens, expanded = _fastgpt_rerank(server.url + "/v1/rerank", model, QUERY, documents,
                                                      {"temperature": 0})
    chunk_scores = truth(QUERY, [d["text"] for d in expanded])
    best: dict = {}
    for chunk, score in zip(expanded, chunk_scores):
        doc_id = chunk["id"].split("__chunk_")[0]
        best[doc_id] = max(best.get(doc_id, -1.0), score)
    assert input_tokens > 0 and {r["id"]: r["score"] for r in results} == pytest.approx(best, abs=TOL)


def test_per_model_prompts_from_the_models_file(server, st):
    r = httpx.post(f"{server.url}/embed", json={"inputs": TEXTS, "prompt_name": "query"}, timeout=60)
    assert r.status_code == 200
    assert cosine(np.array(r.json()), st.encode(TEXTS, prompt=PROMPT)).min() >= COS_BAR
    bad = httpx.post(f"{server.url}/embed", json={"inputs": "x", "prompt_name": "nope"}, timeout=60)
    assert bad.status_code == 422 and "query" in bad.json()["error"]


def test_max_concurrent_requests_is_per_model(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        over = http.post("/embed", json={"inputs": ["a", "b", "c"]})  # 3 items, the embedder admits 2
        assert over.status_code == 429 and over.json() == {"error": "Model is overloaded", "error_type": "Overloaded"}
        assert http.post("/embed", json={"inputs": ["a", "b"]}).status_code == 200
        # the reranker has its own permits (512): the same three items are fine there
        assert http.post("/rerank", json={"query": "q", "texts": ["a", "b", "c"]}).status_code == 200
        info = {m: http.get(f"/models/{m}/info").json()["max_concurrent_requests"] for m in (EMBEDDER, RERANKER)}
        assert info == {EMBEDDER: 2, RERANKER: 512}
        metrics = http.get("/metrics").text
        assert f'te_request_failure{{err="overloaded",model="{EMBEDDER}"}} 1.0' in metrics
        assert f'te_request_failure{{err="overloaded",model="{RERANKER}"}}' not in metrics

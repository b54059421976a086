"""The rotary families through a real server, in their hub layouts: NomicBERT embeddings (prompts,
dimensions, /embed_all, /tokenize, the OpenAI route), a GTE "new" reranker (both rerank dialects),
and Jina v3 with a task adapter merged at load (another task's prompt_name is TEI's 422 body)."""
from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from classifier_models import build_scored_classifier
from engine_util import cosine, engine_for, run
from server_process import ServerProcess
from test_parity_rope import _embedding_folders
from texts import TEXTS
from tiny_rope import build_native, write_hub, write_lora_hub

QUERY = "What is deep learning?"
DOCS = TEXTS[:5]


def _serve(folder, *args):
    # started by `with`; kernel building for 76 batch sizes can take minutes on a loaded 2-core box
    return ServerProcess("--model-id", str(folder), *args, startup_timeout=300.0)


@pytest.fixture(scope="module")
def nomic(models_dir):
    native, hub = _embedding_folders(models_dir, "nomic", 61)
    (hub / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"search_query": "search_query: "}}))
    with _serve(hub) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        yield native, client


def test_nomic_embed_prompts_dimensions_and_openai(nomic):
    from sentence_transformers import SentenceTransformer

    native, client = nomic
    st = SentenceTransformer(str(native), device="cpu", prompts={"search_query": "search_query: "})
    ref = st.encode(TEXTS[:4], prompt_name="search_query")
    r = client.post("/embed", json={"inputs": TEXTS[:4], "prompt_name": "search_query"})
    assert r.status_code == 200, r.text
    assert cosine(np.array(r.json()), ref).min() >= 0.99999
    short = client.post("/embed", json={"inputs": TEXTS[:2], "dimensions": 16, "normalize": False}).json()
    assert np.array(short).shape == (2, 16)
    openai = client.post("/v1/embeddings", json={"input": TEXTS[:2], "model": "x"}).json()
    assert cosine(np.array([d["embedding"] for d in openai["data"]]), st.encode(TEXTS[:2])).min() >= 0.99999
    tokens = client.post("/embed_all", json={"inputs": ["hello world"]}).json()
    ids = client.post("/tokenize", json={"inputs": ["hello world"]}).json()
    assert len(tokens[0]) == len(ids[0]) == 4  # [CLS] hello world [SEP]


@pytest.fixture(scope="module")
def gte_reranker(models_dir):
    native = build_scored_classifier(models_dir / "api-rr-gte", "xlm-roberta", 1, seed=62,
                                     build=lambda folder, arch, num_labels, seed: build_native(folder, "gte", seed, classifier=True))
    hub = write_hub(native, models_dir / "api-rr-gte-hub", "gte", native_prefix="gte.", hub_prefix="new.",
                    architectures=["NewForSequenceClassification"], id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    with _serve(hub) as server, httpx.Client(base_url=server.url, timeout=120) as client:
        yield native, client


def test_gte_reranker_both_dialects(gte_reranker):
    from sentence_transformers import CrossEncoder

    native, client = gte_reranker
    limit = client.get("/info").json()["max_input_length"]
    ref = CrossEncoder(str(native), device="cpu", max_length=limit).predict([(QUERY, d) for d in DOCS])
    tei = client.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert max(abs(item["score"] - ref[item["index"]]) for item in tei) <= 1e-4
    cohere = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 2}).json()
    assert [item["index"] for item in cohere["results"]] == list(np.argsort(-ref, kind="stable")[:2])


@pytest.fixture(scope="module")
def jina(models_dir):
    native, _ = _embedding_folders(models_dir, "jina", 63)
    hub, _, _ = write_lora_hub(native, models_dir / "api-jina-lora", seed=64)
    with _serve(hub, "--default-prompt-name", "retrieval.query") as server, \
            httpx.Client(base_url=server.url, timeout=120) as client:
        yield hub, client


def test_jina_task_prompt_and_refused_task(jina):
    """The in-process parity tests prove the merged adapter against transformers; this proves the
    server runs the same path, and answers a request for another task with TEI's 422 body."""
    hub, client = jina
    ok = client.post("/embed", json={"inputs": TEXTS[:2], "prompt_name": "retrieval.query"})
    assert ok.status_code == 200, ok.text
    engine = engine_for(hub, default_prompt_name="retrieval.query")
    try:
        ref = run(engine.embed(TEXTS[:2], prompt_name="retrieval.query")).values
    finally:
        engine.close()
    assert cosine(np.array(ok.json()), ref).min() >= 0.99999
    r = client.post("/embed", json={"inputs": TEXTS[:2], "prompt_name": "text-matching"})
    assert r.status_code == 422
    assert r.json()["error_type"] == "Validation" and "--default-prompt-name text-matching" in r.json()["error"]

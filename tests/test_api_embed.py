"""TEI embedding routes against a real `text-embeddings-router` serving the bundled MiniLM."""
from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from engine_util import cosine
from texts import TEXTS

COS_BAR = 0.99999


@pytest.fixture(scope="module")
def st_model(minilm_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path, device="cpu")


@pytest.fixture(scope="module")
def client(default_server):
    with httpx.Client(base_url=default_server.url, timeout=60) as c:
        yield c


def test_embed_matches_sentence_transformers(client, st_model):
    r = client.post("/embed", json={"inputs": TEXTS})
    assert r.status_code == 200, r.text
    ours = np.array(r.json())
    ref = st_model.encode(TEXTS)
    assert ours.shape == ref.shape == (len(TEXTS), 384)
    assert cosine(ours, ref).min() >= COS_BAR


def test_embed_single_string_is_wrapped_in_a_list(client, st_model):
    r = client.post("/embed", json={"inputs": "What is Deep Learning?"})
    vectors = r.json()
    assert len(vectors) == 1 and len(vectors[0]) == 384
    assert cosine(vectors[0], st_model.encode("What is Deep Learning?")) >= COS_BAR


def test_embed_token_ids_equal_text(client):
    ids = client.post("/tokenize", json={"inputs": "hello world"}).json()[0]
    token_ids = [t["id"] for t in ids]
    from_ids = client.post("/embed", json={"inputs": token_ids}).json()
    from_text = client.post("/embed", json={"inputs": "hello world"}).json()
    assert len(from_ids) == 1
    assert cosine(from_ids[0], from_text[0]) >= COS_BAR
    mixed = client.post("/embed", json={"inputs": ["hello world", token_ids]}).json()
    assert cosine(mixed[0], mixed[1]) >= COS_BAR


def test_normalize_false_and_dimensions(client, st_model):
    raw = np.array(client.post("/embed", json={"inputs": ["hello"], "normalize": False}).json()[0])
    ref = st_model.encode("hello", normalize_embeddings=False)
    assert cosine(raw, ref) >= COS_BAR
    cut = np.array(client.post("/embed", json={"inputs": ["hello"], "dimensions": 64}).json()[0])
    assert cut.shape == (64,)
    assert abs(np.linalg.norm(cut) - 1) < 1e-5
    assert cosine(cut, raw[:64]) >= COS_BAR


@pytest.mark.parametrize("dims", [0, 385])
def test_bad_dimensions_are_422(client, dims):
    r = client.post("/embed", json={"inputs": "hello", "dimensions": dims})
    assert r.status_code == 422
    assert r.json()["error_type"] == "Validation"
    assert "dimensions" in r.json()["error"]


def test_compute_headers(client):
    r = client.post("/embed", json={"inputs": ["hello", "world"]})
    for name in ("x-compute-time", "x-compute-characters", "x-compute-tokens", "x-total-time",
                 "x-tokenization-time", "x-queue-time", "x-inference-time"):
        assert name in r.headers
    assert r.headers["x-compute-characters"] == "10"
    assert r.headers["x-compute-tokens"] == "6"  # [CLS] hello [SEP] + [CLS] world [SEP]


@pytest.mark.parametrize("body", [{"inputs": ""}, {"inputs": []}, {"inputs": ["ok", ""]}])
def test_empty_input_is_422(client, body):
    r = client.post("/embed", json=body)
    assert r.status_code == 422
    assert r.json() == {"error": "Input validation error: `inputs` cannot be empty", "error_type": "Validation"}


def test_too_many_tokens_without_truncation_names_the_limit(client):
    long = "word " * 600
    r = client.post("/embed", json={"inputs": long, "truncate": False})
    assert r.status_code == 422
    assert "256 tokens" in r.json()["error"]
    # truncation is the default (--auto-truncate), and cuts to the model's 256 tokens
    ok = client.post("/embed", json={"inputs": long})
    assert ok.status_code == 200 and ok.headers["x-compute-tokens"] == "256"


def test_too_many_characters_without_truncation(client):
    r = client.post("/embed", json={"inputs": "a" * (256 * 250 + 1), "truncate": False})
    assert r.status_code == 422
    assert "characters" in r.json()["error"]


def test_truncation_direction(client, st_model):
    words = [f"w{i}" for i in range(400)]
    text = " ".join(words)
    right = client.post("/embed", json={"inputs": text, "truncation_direction": "right"}).json()[0]
    left = client.post("/embed", json={"inputs": text, "truncation_direction": "Left"}).json()[0]
    assert cosine(right, st_model.encode(text)) >= COS_BAR  # ST cuts on the right
    assert cosine(left, right) < 0.999


def test_batch_larger_than_max_client_batch_size_is_413(client):
    r = client.post("/embed", json={"inputs": ["x"] * 33})
    assert r.status_code == 413
    assert r.json()["error"] == "batch size 33 > maximum allowed batch size 32"
    assert r.json()["error_type"] == "Validation"


@pytest.mark.parametrize(
    "body, status",
    [
        (b"{not json", 400),
        (b'{"inputs": 5}', 422),
        (b'{"inputs": [1.5, "a"]}', 422),
        (b'{"nothing": true}', 422),
        (b'{"inputs": "a", "truncation_direction": "up"}', 422),
        (b'{"inputs": [-1]}', 422),
        (b'{"inputs": [999999999]}', 422),
        (b'{"inputs": "a", "prompt_name": "nope"}', 422),
        (b"[]", 422),
        # types are strict, as TEI's serde is: no guessing at strings or numbers
        (b'{"inputs": "a", "normalize": "yes"}', 422),
        (b'{"inputs": "a", "truncate": 1}', 422),
        (b'{"inputs": "a", "dimensions": "8"}', 422),
        (b'{"inputs": [1.0, 2.0]}', 422),
    ],
)
def test_bad_bodies_get_tei_errors(client, body, status):
    r = client.post("/embed", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    payload = r.json()
    assert set(payload) == {"error", "error_type"} and payload["error"]


def test_unknown_fields_are_ignored(client):
    r = client.post("/embed", json={"inputs": "hello", "model": "x", "whatever": [1, 2]})
    assert r.status_code == 200


def test_embed_all(client, st_model):
    r = client.post("/embed_all", json={"inputs": ["hello world", "hi"]})
    assert r.status_code == 200
    out = r.json()
    assert [len(x) for x in out] == [4, 3]  # per token, special tokens included
    ref = st_model.encode("hello world", output_value="token_embeddings")
    assert cosine(np.array(out[0]), ref.numpy()).min() >= COS_BAR


def test_similarity(client, st_model):
    body = {"inputs": {"source_sentence": "What is Deep Learning?", "sentences": ["Deep learning is AI", "Paris"]}}
    r = client.post("/similarity", json=body)
    assert r.status_code == 200
    emb = st_model.encode(["What is Deep Learning?", "Deep learning is AI", "Paris"])
    assert np.allclose(r.json(), emb[1:] @ emb[0], atol=1e-4)
    assert client.post("/similarity", json={"inputs": {"source_sentence": "a", "sentences": []}}).status_code == 422


def test_default_task_post_root(client, st_model):
    r = client.post("/", json={"inputs": "hello"})
    assert r.status_code == 200
    assert cosine(r.json()[0], st_model.encode("hello")) >= COS_BAR
    assert client.post("/", content=b"{oops", headers={"content-type": "application/json"}).status_code == 400


def test_tokenize_and_decode_round_trip(client):
    text = "Hello, naïve wörld!"
    tokens = client.post("/tokenize", json={"inputs": text}).json()
    assert len(tokens) == 1
    first, last = tokens[0][0], tokens[0][-1]
    assert first == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert last["special"] and last["text"] == "[SEP]"
    raw = text.encode()
    for tok in tokens[0][1:-1]:
        assert not tok["special"]
        assert raw[tok["start"] : tok["stop"]].decode() == tok["text"]
    ids = [t["id"] for t in tokens[0]]
    decoded = client.post("/decode", json={"ids": ids}).json()
    assert decoded == ["hello, naive world!"]  # the uncased tokenizer lowercases and strips accents
    assert client.post("/decode", json={"ids": ids, "skip_special_tokens": False}).json()[0].startswith("[CLS]")
    batch = client.post("/decode", json={"ids": [ids, ids[:3]]}).json()
    assert len(batch) == 2
    no_special = client.post("/tokenize", json={"inputs": ["a b"], "add_special_tokens": False}).json()
    assert [t["text"] for t in no_special[0]] == ["a", "b"]


@pytest.mark.parametrize("body", [{"ids": []}, {"ids": [[]]}, {"ids": [-5]}])
def test_bad_decode_is_4xx(client, body):
    r = client.post("/decode", json=body)
    assert 400 <= r.status_code < 500 and "error" in r.json()


def test_info_health_docs(client):
    info = client.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_input_length"] == 256
    assert info["max_client_batch_size"] == 32 and info["max_batch_tokens"] == 16384
    assert info["model_dtype"] == "float32"
    assert list(info)[:5] == ["model_id", "model_sha", "model_dtype", "served_model_name", "model_type"]
    assert client.get("/health").status_code == 200
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/embed" in spec["paths"] and "/v1/embeddings" in spec["paths"]


def test_openai_client_float_and_base64(default_server, st_model):
    from openai import OpenAI

    oa = OpenAI(base_url=default_server.url + "/v1", api_key="unused")
    texts = ["The cat sat on the mat.", "Rerankers reorder retrieved passages."]
    ref = st_model.encode(texts)
    as_float = oa.embeddings.create(model="whatever", input=texts, encoding_format="float")
    assert [d.index for d in as_float.data] == [0, 1]
    assert cosine(np.array([d.embedding for d in as_float.data]), ref).min() >= COS_BAR
    assert as_float.usage.prompt_tokens == as_float.usage.total_tokens > 0
    as_b64 = oa.embeddings.create(model="whatever", input=texts)  # the client asks for base64 by default
    assert cosine(np.array([d.embedding for d in as_b64.data]), ref).min() >= COS_BAR
    cut = oa.embeddings.create(model="m", input="hello", dimensions=100, encoding_format="float")
    assert len(cut.data[0].embedding) == 100
    assert abs(np.linalg.norm(cut.data[0].embedding) - 1) < 1e-5


def test_openai_raw_http_shapes(client):
    r = client.post("/embeddings", json={"input": "hello"})  # no model at all
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "list" and body["model"] and body["usage"]["total_tokens"] == 3
    r = client.post("/v1/embeddings", json={"input": ["hello"], "encoding_format": "base64"})
    vec = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (384,)
    bad = client.post("/v1/embeddings", json={"input": ""})
    assert bad.status_code == 422
    assert bad.json()["error_type"] == "Validation" and bad.json()["message"]

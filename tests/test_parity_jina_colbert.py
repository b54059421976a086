"""jina-colbert-v2 (tiny, laid out as jinaai/jina-colbert-v2: see tiny_colbert) against a plain
reference written here from stanford-nlp ColBERT's Checkpoint, which the model card names, over
transformers' native JinaEmbeddingsV3Model for the encoder:

- queries: `". " + text` tokenized to query_maxlen with padding, the placeholder (position 1)
  replaced by `[QueryMarker]`, padding replaced by `<mask>`, which attention sees when
  `attend_to_mask_tokens`; every position is a query vector;
- documents: `". " + text` cut to doc_maxlen, position 1 replaced by `[DocumentMarker]`; the vectors
  of padding and of skiplist ids (`encode(symbol)[0]` for each punctuation symbol) dropped;
- vectors: normalize(linear(h)), linear bias-free; MaxSim = sum over query vectors of the best dot product.
"""
from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
from engine_util import engine_for, late_outputs, run
from texts import TEXTS
from tiny_colbert import build_jina_colbert_v2

TOL = 1e-4
COS_BAR = 0.99999
QUERIES = ["what is the capital of France?", "deep learning", "a", " ".join(["retrieval"] * 30)]
DOCS = [*TEXTS[:6], "Paris is the capital, and largest city, of France.", "odd (symbols) | here: a|b ~ c"]


@pytest.fixture(scope="module", params=[True, False], ids=["attend", "no-attend"])
def jina(models_dir, request):
    hub, native = build_jina_colbert_v2(models_dir / f"jina-colbert-v2-{request.param}", QUERIES + DOCS,
                                        seed=61 if request.param else 62, attend=request.param)
    return hub, native


def reference(hub, native, texts, is_query):
    """stanford ColBERT's QueryTokenizer / DocTokenizer and ColBERT.query / ColBERT.doc, in one padded batch."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    meta = json.loads((hub / "artifact.metadata").read_text())
    tok = AutoTokenizer.from_pretrained(str(hub))
    model = AutoModel.from_pretrained(str(native), dtype=torch.float32).eval()
    linear = load_file(str(hub / "model.safetensors"))["linear.weight"].double()
    marker = tok.convert_tokens_to_ids(meta["query_token_id" if is_query else "doc_token_id"])
    assert marker != tok.unk_token_id
    enc = tok([". " + t for t in texts], padding="max_length" if is_query else "longest", truncation=True,
              max_length=meta["query_maxlen" if is_query else "doc_maxlen"], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    ids[:, 1] = marker
    if is_query:
        ids[ids == tok.pad_token_id] = tok.mask_token_id
        if meta["attend_to_mask_tokens"]:
            mask[ids == tok.mask_token_id] = 1
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state.double()
    vectors = torch.nn.functional.normalize(hidden @ linear.T, dim=-1)
    skip = {tok.encode(s, add_special_tokens=False)[0] for s in string.punctuation}
    out = []
    for v, row in zip(vectors, ids.tolist()):
        keep = [True] * len(row) if is_query else [t not in skip and t != tok.pad_token_id for t in row]
        out.append(v[torch.tensor(keep)].numpy())
    return out


def _close(ours, ref):
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape
        cos = (o * r).sum(-1) / np.linalg.norm(o, axis=-1) / np.linalg.norm(r, axis=-1)
        assert cos.min() >= COS_BAR
        assert np.abs(o - r).max() <= TOL


def test_registry_and_markers(jina):
    from tei.models.spec import read_spec

    hub, _ = jina
    spec = read_spec(hub)
    assert spec.family.name == "jina_v3" and spec.multi_vector.source == "stanford"
    mv = spec.multi_vector
    vocab = json.loads((hub / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in vocab["added_tokens"]}
    assert (mv.query_marker, mv.document_marker) == (added["[QueryMarker]"], added["[DocumentMarker]"])
    assert mv.expansion_id == added["<mask>"] and mv.query_length == 16 and mv.document_length == 40
    assert spec.max_input_length == 8194  # max_position_embeddings, no position offset with rotary


def test_queries_documents_and_maxsim(jina):
    hub, native = jina
    ref_q, ref_d = reference(hub, native, QUERIES, True), reference(hub, native, DOCS, False)
    q, d, alone, scores = late_outputs(hub, QUERIES, DOCS)
    _close(q, ref_q)
    assert all(len(v) == 16 for v in q[:3])  # padded with <mask> to query_maxlen
    _close(d, ref_d)
    _close(alone, ref_d[-2:])
    expected = np.asarray([(ref_q[0] @ r.T).max(1).sum() for r in ref_d])
    assert np.abs(scores - expected).max() <= TOL * 16
    assert list(np.argsort(-scores)) == list(np.argsort(-expected))


def test_attention_to_mask_tokens_matters(models_dir):
    """The two settings of attend_to_mask_tokens give different query vectors (the reference and
    the server agree on each, above): the flag is really applied, not read and ignored."""
    outs = []
    for attend in (True, False):
        hub, _ = build_jina_colbert_v2(models_dir / f"jina-colbert-flag-{attend}", QUERIES + DOCS, seed=63,
                                       attend=attend)
        engine = engine_for(hub)
        try:
            outs.append(run(engine.embed_multi_vector(QUERIES[:1], is_query=True)).values[0])
        finally:
            engine.close()
    assert np.abs(outs[0] - outs[1]).max() > 1e-3


def test_rotary_base_the_config_does_not_name(models_dir):
    """A config.json without `rotary_emb_base` gets Jina's XLMRobertaFlashConfig default, 10000
    (not jina-embeddings-v3's written-out 20000)."""
    hub, native = build_jina_colbert_v2(models_dir / "jina-colbert-v2-no-base", QUERIES + DOCS, seed=65,
                                        rotary_base=None)
    assert "rotary_emb_base" not in json.loads((hub / "config.json").read_text())
    engine = engine_for(hub)
    try:
        d = run(engine.embed_multi_vector(DOCS)).values
    finally:
        engine.close()
    _close(d, reference(hub, native, DOCS, False))

"""MPNet against transformers' MPNetModel / MPNetForSequenceClassification, through sentence-transformers
and CrossEncoder, on tiny random-weight models (tiny_models.build_embedding_model with arch "mpnet")."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from classifier_models import build_scored_classifier, reference_logits
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_models import build_embedding_model

from tei.models.layers import RelativePositionBias
from tei.models.registry import detect

COS_BAR = 0.99999
BARS = {"bfloat16": 0.999, "int8": 0.99}
TOL = 1e-4
QUERY = "What is deep learning?"
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(80))  # cut at 128 tokens
DOCS = [*TEXTS, LONG_DOC]


def sharpen_relative_bias(folder, gain: float = 50.0):
    """transformers initializes the shared bias table with std 0.02, too faint for a wrong bucket or
    a bias left out to move the cos bar: scale it to std ~1."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("relative_attention_bias.weight"))
    state[key] = state[key] * gain
    save_file(state, str(path), metadata={"format": "pt"})
    return folder


def _mpnet(folder, **kw):
    return sharpen_relative_bias(build_embedding_model(folder, "mpnet", **kw))


@pytest.fixture(scope="module")
def mpnet(models_dir):
    return _mpnet(models_dir / "mpnet-mean", pooling="mean", seed=31, prompts={"query": "query: "})


def _st(folder, texts, **kw):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False, **kw)


def _ours(folder, requests, dtype="float32", **kw):
    """Each request in flight at once, so the batcher packs texts of different lengths together."""
    import asyncio

    engine = engine_for(folder, dtype=dtype)

    async def all_of():
        return await asyncio.gather(*(engine.embed(r, normalize=False, **kw) for r in requests))

    try:
        return np.concatenate([r.values for r in run(all_of())])
    finally:
        engine.close()


def test_relative_bias_matches_transformers_for_long_distances():
    """Past the exact buckets and past max_distance (128), every head, both directions."""
    from transformers import MPNetConfig
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    torch.manual_seed(0)
    enc = MPNetEncoder(MPNetConfig(hidden_size=16, num_attention_heads=4, num_hidden_layers=1, intermediate_size=8))
    torch.nn.init.normal_(enc.relative_attention_bias.weight)
    length = 300
    ref = enc.compute_position_bias(torch.zeros(1, length, 16))[0]
    ours = RelativePositionBias(enc.relative_attention_bias.weight.detach())(length, torch.device("cpu"), torch.float32)
    assert torch.equal(ours, ref)


def test_registry_places_mpnet_with_positions_after_the_padding_index():
    family = detect({"model_type": "mpnet", "pad_token_id": 0})
    assert family.name == "mpnet" and family.position_offset({"pad_token_id": 0}) == 2


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embeddings_match_sentence_transformers_batched_and_alone(models_dir, mpnet, pooling):
    folder = mpnet if pooling == "mean" else _mpnet(models_dir / "mpnet-cls", pooling="cls", dense_out=24, seed=32)
    ref = _st(folder, TEXTS)
    batched = _ours(folder, [TEXTS])
    alone = _ours(folder, [[t] for t in TEXTS])
    assert batched.shape == ref.shape
    assert cosine(batched, ref).min() >= COS_BAR
    assert cosine(alone, ref).min() >= COS_BAR


def test_prompts_match_sentence_transformers(mpnet):
    ref = _st(mpnet, TEXTS, prompt_name="query")
    assert cosine(_ours(mpnet, [TEXTS], prompt_name="query"), ref).min() >= COS_BAR


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_stays_close(mpnet, dtype):
    ref = _st(mpnet, TEXTS)
    assert cosine(_ours(mpnet, [TEXTS[:3], TEXTS[3:]], dtype=dtype), ref).min() >= BARS[dtype]


def test_reranker_matches_cross_encoder(models_dir):
    from sentence_transformers import CrossEncoder

    folder = build_scored_classifier(models_dir / "mpnet-rr", "mpnet", 1, seed=33)
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        limit = engine.max_input_length
        ranked = run(engine.rerank(QUERY, DOCS)).values
        raw = run(engine.rerank(QUERY, DOCS, raw_scores=True)).values
    finally:
        engine.close()
    ref = CrossEncoder(str(folder), device="cpu", max_length=limit).predict([(QUERY, d) for d in DOCS], batch_size=4)
    assert np.ptp(ref) > 0.1  # scores depend on the input, so the bar below means something
    assert np.abs(ranked - ref).max() <= TOL
    logits = reference_logits(folder, [(QUERY, d) for d in DOCS], max_length=limit)[:, 0]
    assert np.abs(raw - logits).max() <= TOL


def test_classifier_matches_transformers(models_dir):
    folder = build_scored_classifier(models_dir / "mpnet-cls3", "mpnet", 3, seed=34)
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        limit = engine.max_input_length
        raw = run(engine.predict(DOCS, raw_scores=True)).values
    finally:
        engine.close()
    ref = reference_logits(folder, DOCS, limit)
    assert np.ptp(ref[:, 0]) > 0.1
    assert np.abs(raw - ref).max() <= TOL


def test_an_unverifiable_bucket_count_is_refused_in_one_line(models_dir):
    import json

    from tei.app import StartupError, build_engine
    from tei.settings import ModelSettings

    folder = build_embedding_model(models_dir / "mpnet-64", "mpnet", seed=35)
    hf = folder.parent / (folder.name + "-hf")
    for f in (folder, hf):
        if (f / "config.json").is_file():
            cfg = json.loads((f / "config.json").read_text())
            cfg["relative_attention_num_buckets"] = 64
            (f / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StartupError, match="relative_attention_num_buckets=64 is not supported") as err:
        build_engine(ModelSettings.from_options(model_id=str(folder), device="cpu", dtype="float32"))
    assert "\n" not in str(err.value)

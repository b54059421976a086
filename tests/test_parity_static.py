"""Static embeddings against sentence-transformers' StaticEmbedding and the model2vec package, on tiny
random folders (tiny_static): texts cut without special tokens, the mean of their rows."""
from __future__ import annotations

import json

import numpy as np
import pytest
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_static import as_module_folder, build_model2vec, build_st_static

COS_BAR = 0.99999
BARS = {"bfloat16": 0.999, "int8": 0.99}
EMOJI = 3  # TEXTS[3] has an emoji: [UNK] in the WordPiece vocabulary


@pytest.fixture(scope="module")
def st_static(models_dir):
    return build_st_static(models_dir / "static-st", seed=41)


@pytest.fixture(scope="module")
def m2v(models_dir):
    return build_model2vec(models_dir / "static-m2v", seed=42)


def _st(folder, texts):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(texts, batch_size=4, convert_to_numpy=True)


def _ours(folder, requests, dtype="float32", **settings):
    import asyncio

    engine = engine_for(folder, dtype=dtype, **settings)

    async def all_of():
        return await asyncio.gather(*(engine.embed(r) for r in requests))

    try:
        return np.concatenate([r.values for r in run(all_of())]), engine
    finally:
        engine.close()


def test_st_static_matches_sentence_transformers_batched_and_alone(st_static):
    ref = _st(st_static, TEXTS)
    batched, engine = _ours(st_static, [TEXTS])
    alone, _ = _ours(st_static, [[t] for t in TEXTS])
    assert engine.spec.family.name == "static" and engine.max_input_length == 128  # the tokenizer's truncation
    assert cosine(batched, ref).min() >= COS_BAR
    assert cosine(alone, ref).min() >= COS_BAR
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_no_special_tokens_reach_the_model(st_static):
    """/tokenize shows what the model sees; the embedding is the mean of exactly those rows."""
    from safetensors.torch import load_file

    engine = engine_for(st_static)
    try:
        tokens = run(engine.tokenize(["hello world"]))[0]
        pooled = run(engine.embed(["hello world"], normalize=False)).values[0]
    finally:
        engine.close()
    ids = [t["id"] for t in tokens]
    assert not any(t["special"] for t in tokens) and len(ids) == 2
    rows = load_file(str(st_static / "model.safetensors"))["embedding.weight"].numpy()
    assert np.allclose(pooled, rows[ids].mean(0), atol=1e-6)


def test_hub_layout_with_a_module_folder_and_no_truncation(models_dir):
    """0_StaticEmbedding/ holding weights and tokenizer; a tokenizer without truncation means no
    limit but the batch budget, as sentence-transformers never cuts such texts."""
    base = build_st_static(models_dir / "static-st-untruncated", seed=43, max_length=None)
    folder = as_module_folder(base, models_dir / "static-st-hub")
    long_text = " ".join(["retrieval"] * 700)
    ref = _st(base, [*TEXTS, long_text])
    ours, engine = _ours(folder, [TEXTS, [long_text]], max_batch_tokens=2048)
    assert engine.max_input_length == 2048
    assert cosine(ours, ref).min() >= COS_BAR


@pytest.mark.parametrize("which", ["st", "m2v"])
def test_fused_mean_is_the_mean_of_the_rows_embed_all_returns(st_static, m2v, which):
    """/embed takes one fused embedding_bag; /embed_all still builds each token's row. They agree
    (model2vec: the unknown token's row is zero and the others rescaled, so the mean matches too)."""
    folder = st_static if which == "st" else m2v
    engine = engine_for(folder)
    try:
        pooled = run(engine.embed(TEXTS, normalize=False)).values
        rows = run(engine.embed_all(TEXTS)).values
    finally:
        engine.close()
    assert engine.model._fused_mean
    means = np.stack([np.asarray(r).mean(axis=0) for r in rows])
    assert np.allclose(pooled, means, atol=1e-5)
    assert np.abs(pooled).max() > 0


def test_model2vec_matches_model2vec_and_drops_the_unknown_token(m2v):
    from model2vec import StaticModel

    ref = StaticModel.from_pretrained(str(m2v)).encode(TEXTS)
    ours, engine = _ours(m2v, [TEXTS[:2], TEXTS[2:]])
    assert engine.max_input_length == 512
    assert cosine(ours, ref).min() >= COS_BAR
    # sentence-transformers loads the same folder keeping [UNK]: it agrees wherever there is none
    st = _st(m2v, TEXTS)
    others = [i for i in range(len(TEXTS)) if i != EMOJI]
    assert cosine(ours[others], st[others]).min() >= COS_BAR
    assert cosine(ours[EMOJI:EMOJI + 1], st[EMOJI:EMOJI + 1])[0] < COS_BAR


def test_a_text_of_unknown_tokens_embeds_to_zero_as_in_model2vec(m2v):
    from model2vec import StaticModel

    ref = StaticModel.from_pretrained(str(m2v)).encode(["🙂", "hello"])
    engine = engine_for(m2v)
    try:
        ours = run(engine.embed(["🙂", "hello"], normalize=False)).values
    finally:
        engine.close()
    assert np.abs(ours[0]).max() == 0 and np.abs(ref[0]).max() == 0
    assert cosine(ours[1:], ref[1:]).min() >= COS_BAR


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_runs_and_stays_close(st_static, dtype):
    ref = _st(st_static, TEXTS)
    ours, _ = _ours(st_static, [TEXTS[:3], TEXTS[3:]], dtype=dtype)
    assert cosine(ours, ref).min() >= BARS[dtype]


def test_a_pooling_other_than_mean_is_refused(st_static):
    from tei.app import StartupError, build_engine
    from tei.settings import ModelSettings

    with pytest.raises(StartupError, match="--pooling cls` is not supported"):
        build_engine(ModelSettings.from_options(model_id=str(st_static), device="cpu", pooling="cls"))


def test_registry_and_info(st_static, m2v):
    from tei.models.spec import read_spec

    st_spec, m2v_spec = read_spec(st_static), read_spec(m2v)
    assert not (st_static / "config.json").exists()
    assert (st_spec.family.name, st_spec.pooling, st_spec.special_tokens) == ("static", "mean", False)
    assert (m2v_spec.family.name, m2v_spec.model_type) == ("static", "model2vec")
    assert json.loads((m2v / "config.json").read_text())["model_type"] == "model2vec"

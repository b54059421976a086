"""Our packed models against sentence-transformers, on tiny random-weight models of each architecture."""
from __future__ import annotations

import numpy as np
import pytest
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_models import ARCHS, build_embedding_model

COS_BAR = 0.99999


def _reference(folder, texts, **kw):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False, **kw)


def _ours(folder, texts, **kw):
    engine = engine_for(folder, **kw.pop("settings", {}))
    try:
        return run(engine.embed(texts, normalize=False, **kw)).values
    finally:
        engine.close()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken"])
def test_architecture_pooling_parity(models_dir, arch, pooling):
    folder = build_embedding_model(models_dir / f"emb-{arch}-{pooling}", arch, pooling=pooling, seed=len(arch))
    ref = _reference(folder, TEXTS)
    ours = _ours(folder, TEXTS)
    assert ours.shape == ref.shape
    assert cosine(ours, ref).min() >= COS_BAR


def test_dense_layer_parity(models_dir):
    folder = build_embedding_model(models_dir / "emb-dense", "bert", pooling="mean", dense_out=24, seed=7)
    ref = _reference(folder, TEXTS)
    ours = _ours(folder, TEXTS)
    assert ours.shape == (len(TEXTS), 24)
    assert cosine(ours, ref).min() >= COS_BAR


def test_max_seq_length_truncation_parity(models_dir):
    """sentence_bert_config.json's max_seq_length sets the limit; long inputs are cut like ST cuts them."""
    folder = build_embedding_model(models_dir / "emb-maxlen", "bert", max_seq_length=16, seed=3)
    ref = _reference(folder, TEXTS)
    ours = _ours(folder, TEXTS)
    assert cosine(ours, ref).min() >= COS_BAR


def test_prompt_parity(models_dir):
    prompts = {"query": "query: ", "passage": "passage: "}
    folder = build_embedding_model(models_dir / "emb-prompts", "bert", prompts=prompts, seed=5)
    ref = _reference(folder, TEXTS, prompt_name="query")
    ours = _ours(folder, TEXTS, prompt_name="query")
    assert cosine(ours, ref).min() >= COS_BAR
    # --default-prompt-name applies the same prompt when the request names none
    default = _ours(folder, TEXTS, settings={"default_prompt_name": "query"})
    assert cosine(default, ref).min() >= COS_BAR


def test_bundled_minilm_parity(minilm_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    ref = st.encode(TEXTS, batch_size=4)  # ST's pipeline includes Normalize
    engine = engine_for(minilm_path)
    try:
        ours = run(engine.embed(TEXTS)).values
    finally:
        engine.close()
    assert cosine(ours, ref).min() >= COS_BAR
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(minilm_path):
    """One request of many texts, many single requests at once, and a tiny token budget agree."""
    import asyncio

    engine = engine_for(minilm_path, max_batch_tokens=300, max_client_batch_size=64)
    try:
        together = run(engine.embed(TEXTS)).values

        async def singles():
            return await asyncio.gather(*(engine.embed([t]) for t in TEXTS))

        apart = np.concatenate([r.values for r in run(singles())])
    finally:
        engine.close()
    assert cosine(together, apart).min() >= COS_BAR

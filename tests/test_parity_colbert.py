"""ColBERT models against sentence-transformers 6 MultiVectorEncoder (which loads the stanford-nlp
HF_ColBERT layout and its own saves, on a WordPiece and a sentencepiece vocabulary): query markers
and expansion, document markers and skiplist, and /rerank by MaxSim."""
from __future__ import annotations

import numpy as np
import pytest
from engine_util import engine_for, run
from texts import TEXTS
from tiny_late import build_st_multi_vector, build_stanford_colbert

TOL = 1e-4
QUERIES = ["what is the capital of france?", "deep learning", "a"]
DOCS = [*TEXTS[:5], "Paris is the capital, and largest city, of France."]


def _reference(folder, docs=DOCS):
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(str(folder), device="cpu")
    q = model.encode_query(QUERIES, batch_size=2)
    d = model.encode_document(docs, batch_size=4)
    scores = model.similarity(q[:1], d)[0].numpy()
    return [t.numpy() for t in q], [t.numpy() for t in d], scores


def _ours(folder, docs=DOCS):
    engine = engine_for(folder)
    try:
        q = run(engine.embed_multi_vector(QUERIES, is_query=True)).values
        d = run(engine.embed_multi_vector(docs)).values
        alone = run(engine.embed_multi_vector(docs[:1])).values
        scores = run(engine.rerank(QUERIES[0], docs)).values
    finally:
        engine.close()
    return q, d, alone, scores


def _check(folder, docs=DOCS):
    ref_q, ref_d, ref_scores = _reference(folder, docs)
    q, d, alone, scores = _ours(folder, docs)
    for ours, ref in zip(q + d, ref_q + ref_d):
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= TOL
    assert np.abs(alone[0] - ref_d[0]).max() <= TOL
    assert np.abs(scores - ref_scores).max() <= TOL * 10  # a sum over query vectors
    assert list(np.argsort(-scores)) == list(np.argsort(-ref_scores))


@pytest.mark.parametrize("attend", [False, True])
def test_stanford_layout(models_dir, attend):
    _check(build_stanford_colbert(models_dir / f"colbert-stanford-{attend}", seed=17, attend_to_mask_tokens=attend))


@pytest.mark.parametrize("attend", [False, True])
def test_sentence_transformers_multi_vector_encoder(models_dir, attend):
    _check(build_st_multi_vector(models_dir / f"colbert-st6-{attend}", seed=19, attend=attend))


def test_multi_vector_encoder_on_a_sentencepiece_vocabulary(models_dir):
    """XLM-R with a sentencepiece vocabulary: MultiVectorMask looks each skiplist word up as one
    token (`▁,` is not `,`) and drops the words that are none (`|` here), rather than skipping
    [UNK]; the query expansion token is `<mask>`."""
    from tiny_colbert import build_xlmr_encoder

    # `|` is left out of the vocabulary (write_xlmr_tokenizer's leave_out)
    hf = build_xlmr_encoder(models_dir / "colbert-st6-xlmr-hf", QUERIES + DOCS, seed=23)
    folder = build_st_multi_vector(models_dir / "colbert-st6-xlmr", seed=23, hf=hf)
    _check(folder, [*DOCS, "odd (symbols) | here: a|b, c."])

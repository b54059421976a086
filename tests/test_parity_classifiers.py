"""Rerankers and classifiers against sentence-transformers' CrossEncoder and transformers, per architecture.

Scores must agree within 1e-4 (probabilities and raw logits), on single texts, pairs, and pairs long
enough to be truncated. One deliberate difference: /rerank never cuts the query (`only_second`),
where CrossEncoder and TEI cut the longer side first (`longest_first`). With a short query the two
cut the same tokens; with a long query the test compares against transformers told `only_second`.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from classifier_models import build_scored_classifier, load_reference, reference_logits
from engine_util import engine_for, run
from texts import TEXTS
from tiny_models import ARCHS, _copy_tokenizer

TOL = 1e-4
QUERY = "What is deep learning?"
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(80))  # ~400 tokens
DOCS = [*TEXTS, LONG_DOC]
LONG_QUERY = " ".join(f"query{i} term" for i in range(25))  # ~77 tokens: over half the limit, under all of it


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def rerankers(models_dir):
    return {arch: build_scored_classifier(models_dir / f"rr-{arch}", arch, 1, seed=11 + i) for i, arch in enumerate(ARCHS)}


@pytest.fixture(scope="module")
def classifiers(models_dir):
    return {arch: build_scored_classifier(models_dir / f"cls3-{arch}", arch, 3, seed=21 + i) for i, arch in enumerate(ARCHS)}


def _with_engine(folder, fn):
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        return fn(engine)
    finally:
        engine.close()


@pytest.mark.parametrize("arch", ARCHS)
def test_reranker_matches_cross_encoder(rerankers, arch):
    from sentence_transformers import CrossEncoder

    folder = rerankers[arch]

    def ours(engine):
        ranked = run(engine.rerank(QUERY, DOCS)).values
        raw = run(engine.rerank(QUERY, DOCS, raw_scores=True)).values
        pairs = run(engine.predict([(QUERY, d) for d in DOCS])).values[:, 0]
        return engine.max_input_length, ranked, raw, pairs

    limit, ranked, raw, pairs = _with_engine(folder, ours)
    cross = CrossEncoder(str(folder), device="cpu", max_length=limit)
    ref = cross.predict([(QUERY, d) for d in DOCS], batch_size=4)  # sigmoid for one label
    assert len(cross.tokenizer(QUERY, LONG_DOC)["input_ids"]) > limit  # the long pair really is cut
    assert np.ptp(ref) > 0.1  # scores vary with the input, so the bar below means something
    assert np.abs(ranked - ref).max() <= TOL
    assert np.abs(pairs - ref).max() <= TOL  # /predict on a pair scores the same as /rerank
    logits = reference_logits(folder, [(QUERY, d) for d in DOCS], max_length=limit)[:, 0]
    assert np.abs(raw - logits).max() <= TOL
    assert np.abs(_sigmoid(logits) - ref).max() <= TOL


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_rerank_cuts_the_document_never_the_query(rerankers, arch):
    """CrossEncoder (and TEI) cut the longer side first, which eats into a long query; we keep it whole."""
    folder = rerankers[arch]
    docs = [LONG_DOC, "Deep learning is a part of machine learning."]
    limit, ours, predicted = _with_engine(
        folder,
        lambda e: (
            e.max_input_length,
            run(e.rerank(LONG_QUERY, docs, raw_scores=True)).values,
            run(e.predict([(LONG_QUERY, d) for d in docs], raw_scores=True)).values[:, 0],
        ),
    )
    reference = load_reference(folder)
    only_second = reference_logits(folder, [(LONG_QUERY, d) for d in docs], limit, "only_second", reference=reference)
    longest_first = reference_logits(folder, [(LONG_QUERY, d) for d in docs], limit, "longest_first", reference=reference)
    assert np.abs(ours - only_second[:, 0]).max() <= TOL
    assert abs(ours[0] - longest_first[0, 0]) > 10 * TOL  # the long pair: a real difference, not noise
    assert abs(ours[1] - longest_first[1, 0]) <= TOL  # nothing cut: the two agree
    # /predict is TEI's and transformers' longest_first
    assert np.abs(predicted - longest_first[:, 0]).max() <= TOL


def test_query_longer_than_the_limit_falls_back_to_cutting_both(rerankers):
    folder = rerankers["bert"]
    query = " ".join(f"q{i}" for i in range(300))
    docs = ["short document", LONG_DOC]
    limit, ours = _with_engine(folder, lambda e: (e.max_input_length, run(e.rerank(query, docs, raw_scores=True)).values))
    ref = reference_logits(folder, [(query, d) for d in docs], limit, "longest_first")[:, 0]
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_classifier_matches_transformers_softmax(classifiers, arch):
    folder = classifiers[arch]
    singles = list(DOCS)
    pairs = [(QUERY, d) for d in DOCS] + [(LONG_QUERY, LONG_DOC)]

    def ours(engine):
        return (
            engine.max_input_length,
            run(engine.predict(singles)).values,
            run(engine.predict(pairs)).values,
            run(engine.predict(singles + pairs, raw_scores=True)).values,
        )

    limit, single_probs, pair_probs, raw = _with_engine(folder, ours)
    reference = load_reference(folder)
    ref_single = reference_logits(folder, singles, limit, reference=reference)
    ref_pair = reference_logits(folder, pairs, limit, reference=reference)
    assert single_probs.shape == (len(singles), 3)
    assert np.ptp(_softmax(ref_single)[:, 0]) > 0.05
    assert np.abs(single_probs - _softmax(ref_single)).max() <= TOL
    assert np.abs(pair_probs - _softmax(ref_pair)).max() <= TOL
    assert np.abs(raw - np.concatenate([ref_single, ref_pair])).max() <= TOL
    assert np.allclose(single_probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("arch", ["bert", "roberta"])
def test_left_truncation_matches_transformers(classifiers, arch):
    folder = classifiers[arch]
    texts = [LONG_DOC, "short text"]
    limit, ours = _with_engine(
        folder, lambda e: (e.max_input_length, run(e.predict(texts, truncation_direction="left", raw_scores=True)).values)
    )
    left = reference_logits(folder, texts, limit, side="left")
    right = reference_logits(folder, texts, limit, side="right")
    assert np.abs(ours - left).max() <= TOL
    assert np.abs(ours[0] - right[0]).max() > 10 * TOL


def test_roberta_model_with_a_bert_pair_template(rerankers, models_dir):
    """A BERT template gives the second segment type id 1, but RoBERTa has one type row: use it for all."""
    import torch

    folder = models_dir / "rr-roberta-bert-template"
    shutil.copytree(rerankers["roberta"], folder)
    _copy_tokenizer(folder)  # back to the BERT tokenizer files, pair template included
    docs = ["Deep learning is a part of machine learning.", LONG_DOC]
    limit, ours = _with_engine(folder, lambda e: (e.max_input_length, run(e.rerank(QUERY, docs, raw_scores=True)).values))
    model, tokenizer = load_reference(folder)
    ref = []
    with torch.no_grad():
        for doc in docs:
            enc = tokenizer(QUERY, doc, truncation=True, max_length=limit, return_tensors="pt")
            assert enc["token_type_ids"].max() == 1
            enc["token_type_ids"] = torch.zeros_like(enc["token_type_ids"])
            ref.append(model(**enc).logits[0, 0].item())
    assert np.abs(ours - np.array(ref)).max() <= TOL

"""--auto-chunk: an input longer than the model is embedded as overlapping windows (each wrapped in
the tokenizer's special tokens) and pooled back as their token-weighted mean, then normalized."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_util import cosine, engine_for, run
from tiny_models import build_embedding_model

LIMIT = 16
LONG = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches "
        "and the five boxing wizards jump quickly past a sphinx of black quartz that judges my vow; "
        "pack my box with five dozen liquor jugs, then watch jeopardy as alex trebek hosts the show")


@pytest.fixture(scope="module")
def model(models_dir):
    return build_embedding_model(models_dir / "chunk-bert", "bert", pooling="mean", max_seq_length=LIMIT, seed=9)


def _direct(folder, text):
    """Windows of LIMIT - 2 body tokens, stride three quarters of that, [CLS] … [SEP] around each;
    each embedded by sentence-transformers from its ids; mean weighted by window length."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    ids = st.tokenizer(text)["input_ids"]
    body, width = ids[1:-1], LIMIT - 2
    stride = width - int(width * 0.25)
    windows, start = [], 0
    while True:
        windows.append([ids[0], *body[start:start + width], ids[-1]])
        if start + width >= len(body):
            break
        start += stride
    vectors, weights = [], []
    with torch.no_grad():
        for w in windows:
            t = torch.tensor([w])
            out = st({"input_ids": t, "attention_mask": torch.ones_like(t), "token_type_ids": torch.zeros_like(t)})
            vectors.append(out["sentence_embedding"][0].numpy())
            weights.append(len(w))
    mean = (np.stack(vectors) * np.asarray(weights)[:, None]).sum(0) / sum(weights)
    return mean / np.linalg.norm(mean), len(ids), len(windows)


def test_long_input_is_the_weighted_mean_of_its_windows(model):
    expected, tokens, windows = _direct(model, LONG)
    assert tokens >= 3 * LIMIT and windows >= 3
    engine = engine_for(model, auto_chunk=True, max_batch_tokens=40)  # windows spread over batches
    try:
        result = run(engine.embed([LONG, "short text"]))
        truncated = engine_for(model)
        try:
            cut = run(truncated.embed([LONG])).values[0]
        finally:
            truncated.close()
    finally:
        engine.close()
    assert cosine(result.values[0], expected) >= 0.99999
    assert abs(np.linalg.norm(result.values[0]) - 1) < 1e-5
    assert cosine(result.values[0], cut) < 0.99999  # not what truncation gives
    short = engine_for(model)
    try:
        short_tokens = run(short.embed(["short text"])).usage.tokens
    finally:
        short.close()
    assert result.usage.tokens == tokens + short_tokens  # every token of the long input counted


def test_off_by_default_truncates(model):
    engine = engine_for(model)
    try:
        result = run(engine.embed([LONG]))
    finally:
        engine.close()
    assert result.usage.tokens == LIMIT

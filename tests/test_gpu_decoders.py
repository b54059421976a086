"""Decoder families on a CUDA GPU in half precision against the float32 sentence-transformers /
transformers references on CPU (bars and reasoning as in tests/test_gpu.py). Skipped without CUDA.

Every varlen kernel that runs here is tried: causal runs (Qwen3, Mistral's window), bidirectional
ones (gte-Qwen2-style Qwen2) and Gemma3's windowed bidirectional layers, which the kernels take as
(left, right) windows; where a kernel cannot run a model's mask the load-time choice falls back to SDPA,
and the test checks that choice too.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_util import cosine, run
from test_gpu import COS_GAP, KERNELS, SCORE_DIFF, _embed, _engine, _placement
from texts import TEXTS
from tiny_decoders import RERANK_DOCS, RERANK_QUERY, build_decoder_embedding, build_qwen3_reranker
from tiny_decoders import reference_embeddings, reference_rerank

from tei.devices import place
from tei.models.attention import CAPABILITIES

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CASES = {
    "qwen3": dict(arch="qwen3"),
    "qwen2-bidirectional": dict(arch="qwen2", is_causal=False),
    "mistral-window": dict(arch="mistral", sliding_window=6),
    "gemma3": dict(arch="gemma3", pooling="mean", dense=True),
}


@pytest.fixture(scope="module")
def embedders(models_dir):
    out = {}
    for name, kw in CASES.items():
        kw = dict(kw)
        folder = build_decoder_embedding(models_dir / f"gpu-dec-{name}", kw.pop("arch"), seed=len(name), **kw)
        out[name] = (folder, reference_embeddings(folder, TEXTS))
    return out


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_decoder_half_precision(embedders, case, dtype, kernel):
    if case == "gemma3" and dtype == "float16":
        pytest.skip("Gemma3 refuses float16 (it overflows)")
    folder, ref = embedders[case]
    placement = _placement(dtype, kernel)
    engine = _engine(folder, placement)
    needs = engine.model.encoder.needs
    expected = kernel if CAPABILITIES[kernel].covers(needs) else "sdpa"
    assert engine.model.attention == expected
    together = _embed(engine, TEXTS)
    gap = 1 - cosine(together, ref).min()
    print(f"\n{case} {kernel} ({expected}) {dtype}: 1 - cos = {gap:.2e}")
    assert gap <= COS_GAP[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_qwen3_reranker_scores(models_dir, dtype):
    folder = models_dir / "gpu-Qwen3-Reranker"
    if not (folder / "config.json").exists():
        build_qwen3_reranker(folder, seed=3)
    engine = _engine(folder, place("cuda", dtype))
    try:
        ours = run(engine.rerank(RERANK_QUERY, RERANK_DOCS, raw_scores=True)).values
        limit = engine.max_input_length
    finally:
        engine.close()
    ref = np.asarray(reference_rerank(folder, RERANK_QUERY, RERANK_DOCS, max_length=limit))
    # Raw logit differences of a few units: the bar scales with them.
    assert np.abs(ours - ref).max() <= SCORE_DIFF[dtype] * max(1.0, float(np.abs(ref).max()))

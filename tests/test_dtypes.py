"""Reduced-precision dtypes on CPU against float32 sentence-transformers / transformers.

Bars (issue 4): bfloat16 and float16 keep cos >= 0.999 against float32, int8 (dynamic quantization)
cos >= 0.99; on tiny random models of every architecture and on the bundled all-MiniLM-L6-v2 with
real text. Also: the fused oneDNN linear layers against eager PyTorch, and int8 refused off CPU.
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_models import ARCHS, build_embedding_model

from tei.devices import DeviceError, cpu_fast_dtypes, place, resolve_dtype
from tei.models.layers.linear import ACTIVATIONS, Linear

BARS = {"bfloat16": 0.999, "float16": 0.999, "int8": 0.99}

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _st_reference(folder, texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)


async def _embed_concurrently(engine, requests):
    """Requests in flight together, so the batcher packs them as a server under load would."""
    results = await asyncio.gather(*(engine.embed(r, normalize=False) for r in requests))
    return np.concatenate([r.values for r in results])


def _ours(folder, requests, dtype):
    engine = engine_for(folder, dtype=dtype)
    try:
        assert engine.model.placement.dtype_name == dtype
        return run(_embed_concurrently(engine, requests))
    finally:
        engine.close()


@pytest.fixture(scope="module")
def tiny(models_dir):
    built = {}

    def get(arch):
        if arch not in built:
            built[arch] = build_embedding_model(models_dir / f"dtype-{arch}", arch, seed=11 + len(arch))
        return built[arch]

    return get


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "int8"])
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_keep_the_cos_bar(tiny, arch, dtype):
    folder = tiny(arch)
    ref = _st_reference(folder, TEXTS)
    ours = _ours(folder, [TEXTS[:3], TEXTS[3:]], dtype)
    assert ours.shape == ref.shape
    assert cosine(ours, ref).min() >= BARS[dtype]


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_minilm_keeps_the_cos_bar_on_real_text(minilm_path, dtype):
    import workload

    requests = workload.requests(seed=7, count=40)  # about 180 texts: package one-liners and README passages
    texts = [t for r in requests for t in r]
    ref = _st_reference(minilm_path, texts)
    ours = _ours(minilm_path, requests, dtype)
    cos = cosine(ours, ref)
    assert cos.min() >= BARS[dtype], f"min cos {cos.min():.5f} over {len(texts)} texts"


def test_reranker_in_bfloat16_is_as_close_as_transformers_in_bfloat16(reranker_path):
    """A cross-encoder's raw logits move in bfloat16 (tiny random weights make them move a lot):
    ours must stay as close to float32 as transformers' own bfloat16, and keep the order of every two
    texts whose float32 scores are further apart than that."""
    from classifier_models import load_reference, reference_logits

    pairs = [("what is deep learning?", t) for t in TEXTS]
    model, tokenizer = load_reference(reranker_path)
    ref = reference_logits(reranker_path, pairs, reference=(model, tokenizer))[:, 0]
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        theirs = np.array([
            model(**tokenizer(q, t, truncation=True, max_length=128, return_tensors="pt")).logits[0, 0].float().item()
            for q, t in pairs
        ])
    engine = engine_for(reranker_path, dtype="bfloat16")
    try:
        ours = run(engine.rerank(pairs[0][0], [t for _, t in pairs], raw_scores=True)).values
    finally:
        engine.close()
    slack = np.abs(theirs - ref).max()
    assert np.abs(ours - ref).max() <= 1.25 * slack
    apart = np.abs(ref[:, None] - ref[None, :]) > 2 * slack
    assert (np.sign(ours[:, None] - ours[None, :]) == np.sign(ref[:, None] - ref[None, :]))[apart].all()


# ---- the linear layers themselves ------------------------------------------------------------------


def _linear_case(activation, rows, seed=0, n_in=48, n_out=80):
    """A Linear layer, an input, a residual, and the layer's output computed eagerly."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(n_out, n_in, generator=gen) * 0.2
    bias = torch.randn(n_out, generator=gen)
    x, residual = torch.randn(rows, n_in), torch.randn(rows, n_out)
    expected = F.linear(x, weight, bias)
    if activation:
        expected = ACTIVATIONS[activation][0](expected)
    return Linear(weight.clone(), bias.clone(), activation), x, residual, expected


@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
def test_onednn_linear_matches_eager(activation):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch build has no oneDNN")
    layer, x, residual, expected = _linear_case(activation, rows=37)
    layer.use_onednn()
    assert torch.allclose(layer(x), expected, atol=1e-5, rtol=1e-5)
    if activation is None:
        before = residual.clone()
        assert torch.allclose(layer.add(x, residual), residual + expected, atol=1e-5, rtol=1e-5)
        assert torch.equal(residual, before)  # the residual is an input, not an accumulator


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_int8_linear_stays_close(activation):
    if "int8" not in cpu_fast_dtypes():
        pytest.skip("no oneDNN int8 kernels in this PyTorch build")
    layer, x, residual, expected = _linear_case(activation, rows=64, seed=1)
    layer.use_int8()
    assert F.cosine_similarity(layer(x), expected, dim=1).min() >= 0.999
    if activation is None:
        assert F.cosine_similarity(layer.add(x, residual), expected + residual, dim=1).min() >= 0.999


def test_int8_is_refused_off_cpu():
    for device in (torch.device("cuda", 0), torch.device("mps")):
        with pytest.raises(DeviceError, match="--dtype int8 cannot be used: it is a CPU dtype"):
            resolve_dtype(device, "int8")
    assert resolve_dtype(torch.device("cpu"), "int8") == torch.float32  # float32 around int8 linear layers
    with pytest.raises(DeviceError, match="--dtype int8 cannot be combined with --torch-compile"):
        place("cpu", "int8", compile=True)


def test_server_serves_int8_and_reports_it(tiny):
    from server_process import ServerProcess

    folder = tiny("bert")
    ref = _st_reference(folder, TEXTS)
    with ServerProcess("--model-id", str(folder), "--dtype", "int8") as server:
        import httpx

        assert httpx.get(server.url + "/info").json()["model_dtype"] == "int8"
        got = httpx.post(server.url + "/embed", json={"inputs": TEXTS, "normalize": False}, timeout=30)
        assert got.status_code == 200
        assert cosine(np.asarray(got.json()), ref).min() >= BARS["int8"]

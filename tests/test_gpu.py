"""Our packed models on a CUDA GPU against sentence-transformers / transformers on CPU.

Skipped without CUDA. `benchmarks/gpu_session.sh` runs them on a lent GPU (`pytest -m gpu`).

Bars: float32 is held to the CPU bars (cos >= 0.99999, scores within 1e-4). Half precision is compared
with the float32 reference, so the bar is the rounding of the dtype itself: float16 keeps 11
significant bits (unit roundoff 4.9e-4), bfloat16 8 (3.9e-3). On these 2-layer models transformers'
own half-precision runs land at 1 - cos of about 5e-7 (float16) and 3e-5 (bfloat16) on CPU; the bars
below (1e-4 and 1e-3) leave 30-200x room for GPU accumulation order while still catching a wrong
layout, mask or sequence boundary, which costs O(1). Per-token states and scores get the same
reasoning with absolute bars.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from engine_util import cosine, run
from texts import TEXTS
from tiny_models import VOCAB, build_classifier, build_embedding_model

from tei.devices import Placement, place
from tei.engine.engine import Engine, EngineConfig
from tei.models.loader import Model
from tei.models.spec import read_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COS_GAP = {"float32": 1e-5, "float16": 1e-4, "bfloat16": 1e-3}  # allowed 1 - cos against float32
SCORE_DIFF = {"float32": 1e-4, "float16": 1e-3, "bfloat16": 5e-3}
KERNELS = ["flash_attn", "torch_varlen", "torch_nested", "sdpa"]
QUERY = "What is deep learning?"


def _placement(dtype: str, kernel: str) -> Placement:
    device = torch.device("cuda", 0)
    if kernel != "sdpa":
        if DTYPES[dtype] == torch.float32:
            pytest.skip(f"{kernel} is half precision only")
        from tei.models.attention.cuda import self_test

        try:
            usable = self_test(kernel, device, DTYPES[dtype])
        except Exception as exc:  # not installed here, or this GPU/torch can't run it
            pytest.skip(f"{kernel} unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        assert usable, f"{kernel} runs but disagrees with SDPA"
    return Placement(device, DTYPES[dtype], kernel, name="test")


def _engine(folder: Path, placement: Placement, **config) -> Engine:
    spec = read_spec(folder)
    return Engine(spec, Model(spec, placement), (folder / "tokenizer.json").read_text(), EngineConfig(**config))


def _embed(engine: Engine, texts) -> np.ndarray:
    try:
        return run(engine.embed(texts, normalize=False)).values
    finally:
        engine.close()


def _st_reference(folder: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(folder), device="cpu").encode(TEXTS, normalize_embeddings=False)


@pytest.fixture(scope="module")
def embedder(models_dir):
    folder = build_embedding_model(models_dir / "gpu-emb", "bert", pooling="mean", dense_out=24, seed=21)
    return folder, _st_reference(folder)


def test_half_precision_takes_a_packed_kernel():
    p = place("cuda", None)
    print(f"\nchosen on {p.name}: {p.dtype_name}, attention {p.attention}")
    assert p.dtype == torch.float16 and p.attention in ("flash_attn", "torch_varlen", "torch_nested")
    assert place("cuda", "float32").attention == "sdpa"


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta", "distilbert"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_float32_parity(models_dir, arch, pooling):
    folder = build_embedding_model(models_dir / f"gpu-{arch}-{pooling}", arch, pooling=pooling, seed=len(arch))
    ours = _embed(_engine(folder, place("cuda", "float32")), TEXTS)
    assert 1 - cosine(ours, _st_reference(folder)).min() <= COS_GAP["float32"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_half_precision_parity_and_batch_invariance(embedder, dtype, kernel):
    folder, ref = embedder
    placement = _placement(dtype, kernel)
    together = _embed(_engine(folder, placement), TEXTS)  # one mixed-length batch
    gap = 1 - cosine(together, ref).min()
    print(f"\n{kernel} {dtype}: 1 - cos = {gap:.2e}")
    assert gap <= COS_GAP[dtype]
    engine = _engine(folder, placement)
    try:
        alone = np.concatenate([run(engine.embed([t], normalize=False)).values for t in TEXTS])
    finally:
        engine.close()
    assert 1 - cosine(together, alone).min() <= COS_GAP[dtype]


@pytest.mark.parametrize("dtype, kernel", [("float32", "sdpa"), ("float16", "flash_attn"),
                                           ("float16", "torch_varlen"), ("float16", "torch_nested"),
                                           ("bfloat16", "torch_varlen"), ("float16", "sdpa")])
def test_long_ragged_sequences_token_by_token(models_dir, dtype, kernel):
    """Lengths across the flash kernels' 128-token blocks, up to 512: every token's hidden state."""
    import transformers as tf

    folder = models_dir / "gpu-long"
    if not (folder / "config.json").exists():
        torch.manual_seed(5)
        config = tf.BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=256, max_position_embeddings=512)
        tf.BertModel(config).eval().save_pretrained(folder, safe_serialization=True)
    placement = _placement(dtype, kernel)
    hf = tf.BertModel.from_pretrained(str(folder)).eval()
    rng = np.random.default_rng(0)
    lengths = [1, 77, 128, 129, 300, 512, 64]
    ids = rng.integers(1000, VOCAB, sum(lengths))
    with torch.no_grad():
        ref, start = [], 0
        for n in lengths:
            ref.append(hf(torch.from_numpy(ids[start : start + n])[None]).last_hidden_state[0].numpy())
            start += n
    model = Model(read_spec(folder, "mean"), placement)
    assert model.attention == kernel
    out = model.forward(model.make_batch(ids, np.zeros_like(ids), lengths), want_hidden=True)
    assert 1 - cosine(out.hidden, np.concatenate(ref)).min() <= 10 * COS_GAP[dtype]  # single tokens: noisier


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_rerank_scores(models_dir, arch, dtype):
    import transformers as tf

    folder = models_dir / f"gpu-rerank-{arch}"
    if not (folder / "config.json").exists():
        build_classifier(folder, arch, num_labels=1, seed=8)
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    hf = tf.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    enc = tok([QUERY] * len(TEXTS), TEXTS, padding=True, truncation="only_second", max_length=128,
              return_tensors="pt")
    with torch.no_grad():
        ref = hf(**enc).logits[:, 0].numpy()
    engine = _engine(folder, place("cuda", dtype))
    try:
        ours = run(engine.rerank(QUERY, TEXTS, raw_scores=True)).values
    finally:
        engine.close()
    assert np.abs(ours - ref).max() <= SCORE_DIFF[dtype]

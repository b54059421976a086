"""JinaBERT v2 (and the code variant, and jina-reranker-v1's classifier) against a plain padded
reference (tiny_jina.reference_hidden) and one tiny case worked out by hand below."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_jina import (build_jina_embedding, build_jina_reranker, jina_config, reference_embeddings,
                       reference_scores)

COS_BAR = 0.99999
BARS = {"bfloat16": 0.999, "int8": 0.99}
TOL = 1e-4
QUERY = "What is deep learning?"
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(80))


@pytest.fixture(scope="module")
def jina(models_dir):
    return build_jina_embedding(models_dir / "jina-v2", seed=51)


@pytest.fixture(scope="module")
def jina_code(models_dir):
    return build_jina_embedding(models_dir / "jina-v2-code", code=True, seed=52, pooler=False)


def _ours(folder, requests, dtype="float32"):
    import asyncio

    engine = engine_for(folder, dtype=dtype, max_client_batch_size=64)

    async def all_of():
        return await asyncio.gather(*(engine.embed(r, normalize=False) for r in requests))

    try:
        return np.concatenate([r.values for r in run(all_of())])
    finally:
        engine.close()


@pytest.mark.parametrize("variant", ["base", "code"])
def test_embeddings_match_the_reference_batched_and_alone(jina, jina_code, variant):
    folder = jina if variant == "base" else jina_code
    ref = reference_embeddings(folder, TEXTS).numpy()
    batched = _ours(folder, [TEXTS])
    alone = _ours(folder, [[t] for t in TEXTS])
    assert cosine(batched, ref).min() >= COS_BAR
    assert cosine(alone, ref).min() >= COS_BAR


def test_the_two_variants_differ_where_the_description_says(jina):
    """A base checkpoint read as the code variant (or with the gate halves swapped) is refused or
    wrong, never the same: the reference is sensitive to the traps it encodes."""
    import shutil

    ref = reference_embeddings(jina, TEXTS[:3]).numpy()
    swapped = jina.parent / "jina-v2-swapped"
    shutil.copytree(jina, swapped)
    from safetensors.torch import load_file, save_file

    state = load_file(str(swapped / "model.safetensors"))
    for key in [k for k in state if k.endswith("gated_layers.weight")]:
        state[key] = torch.cat(state[key].chunk(2, 0)[::-1])
    save_file(state, str(swapped / "model.safetensors"))
    assert cosine(_ours(swapped, [TEXTS[:3]]), ref).min() < 0.999


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_reduced_precision_stays_close(jina, dtype):
    ref = reference_embeddings(jina, TEXTS).numpy()
    assert cosine(_ours(jina, [TEXTS[:3], TEXTS[3:]], dtype=dtype), ref).min() >= BARS[dtype]


@pytest.mark.parametrize("pooler", [True, False])
def test_reranker_matches_the_reference(models_dir, pooler):
    folder = build_jina_reranker(models_dir / f"jina-rr-{pooler}", seed=53, pooler=pooler)
    docs = [*TEXTS, LONG_DOC]
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        limit = engine.max_input_length  # the tokenizer's model_max_length: well under 8192 positions
        raw = run(engine.rerank(QUERY, docs, raw_scores=True)).values
        scores = run(engine.rerank(QUERY, docs)).values
    finally:
        engine.close()
    ref = reference_scores(folder, [(QUERY, d) for d in docs], limit)[:, 0].numpy()
    assert np.ptp(ref) > 0.5  # the scores depend on the document
    assert np.abs(raw - ref).max() <= TOL
    assert np.abs(scores - 1 / (1 + np.exp(-ref))).max() <= TOL


def _gelu(t: float) -> float:
    return 0.5 * t * (1 + math.erf(t / math.sqrt(2)))


def _layer_norm(row: list[float]) -> list[float]:
    mean = sum(row) / len(row)
    var = sum((v - mean) ** 2 for v in row) / len(row)
    return [(v - mean) / math.sqrt(var + 1e-12) for v in row]


def test_a_tiny_case_worked_out_by_hand(models_dir):
    """Hidden 4, two heads of 2, one layer, identity projections, unit norms: three tokens, each step
    written out in plain Python floats. Slopes for two heads are 2^-4 and 2^-8; the first half of
    gated_layers is the gate, GELU is exact."""
    from safetensors.torch import save_file

    from tei.devices import place
    from tei.models.loader import Model
    from tei.models.spec import read_spec

    word = [[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 1.0], [1.0, 1.0, -1.0, 0.0]]
    eye, ones, zeros = torch.eye(4), torch.ones(4), torch.zeros(4)
    p = "encoder.layer.0"
    state = {"embeddings.word_embeddings.weight": torch.tensor(word),
             "embeddings.token_type_embeddings.weight": torch.zeros(2, 4),
             "embeddings.LayerNorm.weight": ones, "embeddings.LayerNorm.bias": zeros,
             f"{p}.attention.output.dense.weight": eye, f"{p}.attention.output.dense.bias": zeros,
             f"{p}.attention.output.LayerNorm.weight": ones, f"{p}.attention.output.LayerNorm.bias": zeros,
             f"{p}.mlp.gated_layers.weight": eye.clone(),  # rows 0-1: gate = (a0, a1); rows 2-3: up = (a2, a3)
             f"{p}.mlp.wo.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]),
             f"{p}.mlp.wo.bias": zeros, f"{p}.mlp.layernorm.weight": ones, f"{p}.mlp.layernorm.bias": zeros}
    for n in ("query", "key", "value"):
        state[f"{p}.attention.self.{n}.weight"], state[f"{p}.attention.self.{n}.bias"] = eye.clone(), zeros.clone()
    folder = models_dir / "jina-by-hand"
    folder.mkdir()
    cfg = jina_config(hidden=4, heads=2, layers=1, inter=2, vocab_size=3)
    (folder / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.clone().contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))

    x = [_layer_norm(r) for r in word]  # embeddings: word row (type row 0 is zero), LayerNorm
    slopes = [2 ** -4, 2 ** -8]
    ctx = [[0.0] * 4 for _ in range(3)]
    for h in range(2):
        dims = (2 * h, 2 * h + 1)
        for i in range(3):
            scores = [sum(x[i][d] * x[j][d] for d in dims) / math.sqrt(2) - slopes[h] * abs(i - j) for j in range(3)]
            weights = [math.exp(s) for s in scores]
            for d in dims:
                ctx[i][d] = sum(w * x[j][d] for j, w in enumerate(weights)) / sum(weights)
    a = [_layer_norm([c + v for c, v in zip(ctx[i], x[i])]) for i in range(3)]
    glu = [[_gelu(r[0]) * r[2], _gelu(r[1]) * r[3]] for r in a]
    expected = [_layer_norm([g[0] + r[0], g[1] + r[1], g[0] + r[2], g[1] + r[3]]) for g, r in zip(glu, a)]

    model = Model(read_spec(folder), place("cpu", None))
    ids = np.array([0, 1, 2], dtype=np.int32)
    hidden = model.forward(model.make_batch(ids, np.zeros_like(ids), [3]), want_hidden=True).hidden
    assert np.abs(hidden - np.array(expected)).max() < 1e-5


@pytest.mark.parametrize("key, value, message", [
    ("feed_forward_type", "original", "feed_forward_type `original` is not supported"),
    ("position_embedding_type", "absolute", "position_embedding_type `absolute` is not supported"),
])
def test_unverifiable_variants_are_refused_in_one_line(models_dir, key, value, message):
    from tei.app import StartupError, build_engine
    from tei.settings import ModelSettings

    folder = build_jina_embedding(models_dir / f"jina-{key}", seed=54)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StartupError, match=message) as err:
        build_engine(ModelSettings.from_options(model_id=str(folder), device="cpu", dtype="float32"))
    assert "\n" not in str(err.value)

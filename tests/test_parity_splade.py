"""SPLADE (sparse) models against sentence-transformers' SparseEncoder, on tiny random-weight masked LMs."""
from __future__ import annotations

import json

import numpy as np
import pytest
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_models import ARCHS, build_splade_model

from tei.engine.errors import WrongModelType
from tei.models.spec import ModelSpecError, read_spec

COS_BAR = 0.99999


def _reference(folder, texts):
    from sentence_transformers.sparse_encoder import SparseEncoder

    model = SparseEncoder(str(folder), device="cpu")
    return model.encode(texts, batch_size=4, convert_to_tensor=True).to_dense().numpy()


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory):
    return build_splade_model(tmp_path_factory.mktemp("splade") / "splade-bert", "bert", seed=11)


@pytest.mark.parametrize("arch", ARCHS)
def test_sparse_parity(tmp_path, arch):
    folder = build_splade_model(tmp_path / f"splade-{arch}", arch, seed=len(arch))
    assert read_spec(folder).pooling == "splade"
    ref = _reference(folder, TEXTS)
    engine = engine_for(folder)
    try:
        dense = run(engine.embed(TEXTS, normalize=False)).values
        sparse = run(engine.embed_sparse(TEXTS)).values
    finally:
        engine.close()
    assert dense.shape == ref.shape == (len(TEXTS), 30522)
    assert cosine(dense, ref).min() >= COS_BAR
    assert np.abs(dense - ref).max() <= 1e-4
    for row, (indices, values) in zip(dense, sparse):
        assert (np.diff(indices) > 0).all() and (values > 0).all()  # ascending, non-zero only
        assert np.array_equal(indices, np.flatnonzero(row)) and np.array_equal(values, row[indices])


def test_log1p_relu_activation_parity(tmp_path):
    folder = build_splade_model(tmp_path / "splade-log1p", "bert", seed=3, activation="log1p_relu")
    ref = _reference(folder, TEXTS)
    engine = engine_for(folder)
    try:
        ours = run(engine.embed(TEXTS, normalize=False)).values
    finally:
        engine.close()
    assert cosine(ours, ref).min() >= COS_BAR and np.abs(ours - ref).max() <= 1e-4


def test_splade_refuses_what_tei_refuses(splade_dir):
    engine = engine_for(splade_dir)
    try:
        with pytest.raises(WrongModelType, match="`normalize` is not available for SPLADE models"):
            run(engine.embed(["a"], normalize=True))
        with pytest.raises(WrongModelType, match="`embed_all` is not available for SPLADE models"):
            run(engine.embed_all(["a"]))
    finally:
        engine.close()


def test_splade_pooling_needs_a_masked_lm(tmp_path):
    from tiny_models import build_embedding_model

    folder = build_embedding_model(tmp_path / "dense", "bert")
    with pytest.raises(ModelSpecError, match="ForMaskedLM"):
        read_spec(folder, pooling_override="splade")


def test_sum_pooling_is_refused(tmp_path, splade_dir):
    import shutil

    folder = tmp_path / "splade-sum"
    shutil.copytree(splade_dir, folder)
    modules = json.loads((folder / "modules.json").read_text())
    pooling = folder / next(m["path"] for m in modules if m["type"].endswith("SpladePooling")) / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "pooling_strategy": "sum"}))
    with pytest.raises(ModelSpecError, match="pooling_strategy `sum`"):
        read_spec(folder)

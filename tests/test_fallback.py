"""The transformers fallback: architectures with no own code (DeBERTa-v2, ELECTRA, a remote-code
model) served through the same engine, against sentence-transformers / transformers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_util import cosine, engine_for, run
from texts import TEXTS
from tiny_fallback import build_fallback_embedding, build_fallback_hf, build_remote_code_model

COS_BAR = 0.99999


def _st(folder, texts, **kw):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu", **kw)
    return st.encode(texts, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)


def _embed(folder, texts, **settings):
    engine = engine_for(folder, **settings)
    try:
        together = run(engine.embed(texts, normalize=False)).values
        alone = np.concatenate([run(engine.embed([t], normalize=False)).values for t in texts[:3]])
    finally:
        engine.close()
    return together, alone, engine


@pytest.mark.parametrize("arch", ["deberta-v2", "electra"])
def test_no_own_code_served_with_parity(models_dir, arch):
    folder = build_fallback_embedding(models_dir / f"fallback-{arch}", arch, seed=len(arch))
    ref = _st(folder, TEXTS)
    together, alone, engine = _embed(folder, TEXTS)
    assert engine.spec.family.name == "transformers"
    assert together.shape == ref.shape
    assert cosine(together, ref).min() >= COS_BAR
    assert cosine(alone, ref[:3]).min() >= COS_BAR


def test_fallback_classifier_matches_transformers(models_dir):
    import transformers as tf

    folder = build_fallback_hf(models_dir / "fallback-deberta-cls", "deberta-v2", seed=4, num_labels=3)
    pairs = [("what is it?", t) for t in TEXTS[:5]]
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = torch.cat([model(**tok(q, d, return_tensors="pt", truncation=True, max_length=128)).logits
                         for q, d in pairs]).numpy()
    engine = engine_for(folder)
    try:
        ours = run(engine.predict(pairs, raw_scores=True)).values
    finally:
        engine.close()
    assert np.abs(ours - ref).max() <= 1e-4


def test_backend_transformers_forces_the_fallback(models_dir):
    from tiny_models import build_embedding_model

    folder = build_embedding_model(models_dir / "fallback-forced-bert", "bert", seed=8)
    ref = _st(folder, TEXTS)
    together, alone, engine = _embed(folder, TEXTS, backend="transformers")
    assert engine.spec.family.name == "transformers"
    assert cosine(together, ref).min() >= COS_BAR


def test_remote_code_needs_trust(models_dir):
    from tei.app import StartupError

    folder = build_remote_code_model(models_dir / "fallback-remote", seed=2)
    with pytest.raises(StartupError, match="--trust-remote-code"):
        engine_for(folder)
    ref = _st(folder, TEXTS, trust_remote_code=True)
    together, alone, _ = _embed(folder, TEXTS, trust_remote_code=True)
    assert cosine(together, ref).min() >= COS_BAR
    assert cosine(alone, ref[:3]).min() >= COS_BAR


def test_unknown_architecture_is_refused_in_one_line(models_dir):
    import json

    from tei.app import StartupError

    folder = build_remote_code_model(models_dir / "fallback-unknown", seed=3)
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["auto_map"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(StartupError) as info:
        engine_for(folder, trust_remote_code=True)
    message = str(info.value)
    assert "\n" not in message and "tiny-remote" in message and "not supported" in message


def test_missing_transformers_says_how_to_install(monkeypatch):
    import builtins

    from tei.models.registry import UnsupportedModel, detect

    real = builtins.__import__

    def no_transformers(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(UnsupportedModel, match=r"tei\[transformers\]"):
        detect({"model_type": "deberta-v2", "architectures": ["DebertaV2Model"]})

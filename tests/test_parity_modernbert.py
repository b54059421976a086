"""ModernBERT against sentence-transformers, CrossEncoder and transformers' native classes (SDPA), on tiny
random models whose local window (±4 tokens) is shorter than most test texts."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tiny_modernbert as tiny
from engine_util import cosine, engine_for, run
from test_parity_embeddings import _ours
from texts import TEXTS

COS_BAR = 0.99999
TOL = 1e-4
QUERY = "What is deep learning?"
DOCS = [*TEXTS, " ".join(f"word{i} about retrieval and ranking" for i in range(80))]  # ~400 tokens


def _reference(folder, texts, batch_size=4, **kw):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    return st.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False, **kw)


@pytest.fixture(scope="module")
def embedder(models_dir):
    return tiny.build_embedding(models_dir / "modernbert-mean", pooling="mean", seed=3,
                                prompts={"query": "search_query: ", "document": "search_document: "})


def test_texts_outrun_the_window(embedder):
    """Most texts are longer than the window, so a wrong window cannot pass the tests below."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(embedder))
    assert sum(len(tok(t)["input_ids"]) > tiny.LOCAL_ATTENTION + 1 for t in TEXTS) >= 4


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_embedding_parity_batched_and_alone(models_dir, embedder, pooling):
    folder = embedder if pooling == "mean" else tiny.build_embedding(models_dir / "modernbert-cls", "cls", seed=4)
    ours = _ours(folder, TEXTS)
    batched = _reference(folder, TEXTS)
    alone = _reference(folder, TEXTS, batch_size=1)
    assert ours.shape == batched.shape == (len(TEXTS), 64)
    assert cosine(ours, batched).min() >= COS_BAR
    assert cosine(ours, alone).min() >= COS_BAR


def test_the_window_changes_the_numbers(models_dir, embedder):
    """The same weights with a window wider than every text give embeddings further from these than ten
    times the parity bar allows: a kernel that ignored the window would fail the parity tests."""
    wide = models_dir / "modernbert-wide"
    shutil.copytree(embedder, wide)
    cfg_file = wide / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["local_attention"] = 1024
    cfg_file.write_text(json.dumps(cfg))
    narrow_ref, wide_ref = _reference(embedder, TEXTS), _reference(wide, TEXTS)
    assert cosine(narrow_ref, wide_ref).min() < 1 - 10 * (1 - COS_BAR)
    assert cosine(_ours(wide, TEXTS), wide_ref).min() >= COS_BAR


def test_prompt_parity(embedder):
    ref = _reference(embedder, TEXTS, prompt_name="query")
    assert cosine(_ours(embedder, TEXTS, prompt_name="query"), ref).min() >= COS_BAR


def test_hub_layout_masked_lm_with_legacy_config(models_dir, embedder):
    """answerdotai/ModernBERT-base's layout: ModernBertForMaskedLM (`model.` prefix, MLM head unused) and a
    transformers-4 config (global/local_rope_theta, global_attn_every_n_layers): same numbers."""
    from sentence_transformers import SentenceTransformer, models

    hf = tiny.build_hf(models_dir / "modernbert-mlm-hf", seed=5, masked_lm=True, legacy_config=True)
    cfg = json.loads((hf / "config.json").read_text())
    assert "layer_types" not in cfg and cfg["global_attn_every_n_layers"] == 3
    folder = models_dir / "modernbert-mlm"
    transformer = models.Transformer(str(hf), max_seq_length=128, model_kwargs={"attn_implementation": "sdpa"})
    modules = [transformer, models.Pooling(64, pooling_mode="mean")]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    assert cosine(_ours(folder, TEXTS), _reference(folder, TEXTS)).min() >= COS_BAR


def test_legacy_and_v5_configs_load_alike(models_dir, embedder):
    legacy = models_dir / "modernbert-legacy"
    shutil.copytree(embedder, legacy)
    tiny.to_legacy_config(legacy / "config.json")
    assert cosine(_ours(legacy, TEXTS), _ours(embedder, TEXTS)).min() >= COS_BAR


@pytest.mark.parametrize("dtype,bar", [("bfloat16", 0.999), ("int8", 0.99)])
def test_low_precision_stays_near(embedder, dtype, bar):
    from tei.devices import cpu_fast_dtypes

    if dtype == "int8" and dtype not in cpu_fast_dtypes():  # bfloat16 runs on every CPU, fast or not
        pytest.skip(f"{dtype} is not available on this CPU")
    ours = _ours(embedder, TEXTS, settings={"dtype": dtype})
    assert cosine(ours, _reference(embedder, TEXTS)).min() >= bar


def test_splade_is_refused_in_one_line(models_dir):
    from tei.app import StartupError

    hf = tiny.build_hf(models_dir / "modernbert-splade", seed=6, masked_lm=True)
    with pytest.raises(StartupError, match="SPLADE pooling is not supported for ModernBERT"):
        engine_for(hf, pooling="splade")


def _reference_logits(folder, pairs):
    """transformers' logits, one pair at a time (no padding), SDPA attention."""
    import torch
    import transformers as tf

    model = tf.AutoModelForSequenceClassification.from_pretrained(str(folder), attn_implementation="sdpa").eval()
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    out = []
    with torch.no_grad():
        for q, d in pairs:
            enc = tok(q, d, truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt")
            out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0].numpy())
    return np.stack(out).astype(np.float64)


def _scored(folder, num_labels, pooling, seed):
    """A classifier whose logits spread over about ±2 on real text (at the default init they barely
    move, and a 1e-4 bar would prove nothing): the final layer rescaled from reference logits."""
    import torch
    from safetensors.torch import load_file, save_file

    tiny.build_classifier(folder, num_labels=num_labels, seed=seed, classifier_pooling=pooling)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    logits = _reference_logits(folder, [(QUERY, d) for d in DOCS])
    center, gain = logits.mean(0), 2.0 / max(float((logits - logits.mean(0)).std()), 1e-6)
    state["classifier.weight"] = state["classifier.weight"] * gain
    state["classifier.bias"] = (state["classifier.bias"] - torch.from_numpy(center).float()) * gain
    save_file(state, str(weights), metadata={"format": "pt"})
    return folder


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_reranker_matches_cross_encoder(models_dir, pooling):
    from sentence_transformers import CrossEncoder

    folder = _scored(models_dir / f"modernbert-rr-{pooling}", 1, pooling, seed=11)
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        ranked = run(engine.rerank(QUERY, DOCS)).values
        raw = run(engine.rerank(QUERY, DOCS, raw_scores=True)).values
        limit = engine.max_input_length
    finally:
        engine.close()
    ref = CrossEncoder(str(folder), device="cpu", max_length=limit,
                       model_kwargs={"attn_implementation": "sdpa"}).predict([(QUERY, d) for d in DOCS], batch_size=4)
    assert np.ptp(ref) > 0.1
    assert np.abs(ranked - ref).max() <= TOL
    assert np.abs(raw - _reference_logits(folder, [(QUERY, d) for d in DOCS])[:, 0]).max() <= TOL


def test_classifier_matches_transformers(models_dir):
    folder = _scored(models_dir / "modernbert-cls3", 3, "mean", seed=12)
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        raw = run(engine.predict([(QUERY, d) for d in DOCS], raw_scores=True)).values
    finally:
        engine.close()
    assert np.abs(raw - _reference_logits(folder, [(QUERY, d) for d in DOCS])).max() <= TOL

"""NomicBERT, GTE "new" and Jina v3 / jina-reranker-v2 against transformers' native classes (through
sentence-transformers and CrossEncoder), in the native layout and in each family's hub layout."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from classifier_models import build_scored_classifier
from engine_util import cosine, engine_for, run
from test_parity_embeddings import _reference as _st
from texts import TEXTS
from tiny_rope import (JINA_INSTRUCTIONS, JINA_TASKS, build_native, merged_native_state, native_config, sentence_transformer,
                       to_hub_state, write_hub, write_lora_hub)

from tei.app import StartupError
from tei.engine.errors import ValidationError
from tei.models.registry import detect

COS_BAR = 0.99999
TOL = 1e-4
POOLING = {"nomic": "mean", "gte": "cls", "jina": "mean"}
QUERY = "What is deep learning?"
LONG_DOC = " ".join(f"word{i} about retrieval and ranking" for i in range(40))
DOCS = [*TEXTS, LONG_DOC]


def _ours(folder, texts, **kw):
    engine = engine_for(folder, **kw.pop("settings", {}))
    try:
        together = run(engine.embed(texts, normalize=False, **kw)).values
        alone = np.concatenate([run(engine.embed([t], normalize=False, **kw)).values for t in texts[:3]])
        return together, alone
    finally:
        engine.close()


def _embedding_folders(models_dir, family, seed, **native):
    base = models_dir / f"rope-{family}-{seed}"
    hf = build_native(base.with_name(base.name + "-hf"), family, seed, **native)
    st = sentence_transformer(hf, base, POOLING[family])
    prefix = "roberta." if family == "jina" else ""
    return st, write_hub(st, base.with_name(base.name + "-hub"), family, hub_prefix=prefix)


@pytest.fixture(scope="module")
def folders(models_dir):
    return {f: _embedding_folders(models_dir, f, seed) for seed, f in enumerate(("nomic", "gte", "jina"), 40)}


@pytest.mark.parametrize("layout", ["native", "hub"])
@pytest.mark.parametrize("family", ["nomic", "gte", "jina"])
def test_embedding_parity(folders, family, layout):
    native, hub = folders[family]
    ref = _st(native, TEXTS)
    together, alone = _ours(native if layout == "native" else hub, TEXTS)
    assert together.shape == ref.shape
    assert cosine(together, ref).min() >= COS_BAR
    assert cosine(alone, ref[:3]).min() >= COS_BAR


def test_gte_without_token_types(models_dir):
    """gte-base-en-v1.5 has `type_vocab_size: 0`: no token-type table at all."""
    native, hub = _embedding_folders(models_dir, "gte", 7, type_vocab_size=0)
    ref = _st(native, TEXTS)
    together, _ = _ours(hub, TEXTS)
    assert cosine(together, ref).min() >= COS_BAR


def test_gte_token_classification_head_is_an_embedding_model(folders, models_dir):
    """gte-multilingual-base declares NewForTokenClassification (a sparse-weight head beside the
    encoder): it embeds by its pooling config, the head unused, as in TEI."""
    import shutil

    from safetensors.torch import load_file, save_file

    native, hub = folders["gte"]
    folder = models_dir / "rope-gte-token-head"
    shutil.copytree(hub, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["NewForTokenClassification"]}))
    state = load_file(str(folder / "model.safetensors"))
    state.update({"classifier.weight": torch.randn(1, 64), "classifier.bias": torch.zeros(1)})
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    ours, _ = _ours(folder, TEXTS)
    assert cosine(ours, _st(native, TEXTS)).min() >= COS_BAR


def test_nomic_dynamic_ntk_past_the_trained_length(models_dir):
    """rotary_scaling_factor: dynamic NTK once a sequence outgrows max_trained_positions, by its
    own length; transformers' `dynamic` rope type is the reference (one sequence, a fresh model:
    it keeps the largest base it has seen)."""
    import transformers as tf

    trained, factor = 16, 2.0
    rope = {"rope_type": "dynamic", "rope_theta": 1000.0, "factor": factor}
    base = models_dir / "rope-nomic-ntk"
    hf = build_native(base.with_name(base.name + "-hf"), "nomic", 9, max_position_embeddings=trained, rope_parameters=rope)
    st = sentence_transformer(hf, base, "mean", max_seq_length=128)
    # As nomic-embed-text-v1.5 ships it: sentence-transformers' limit (8192 there) above the trained
    # length; without one the limit is max_trained_positions, as in TEI, and nothing is ever scaled.
    st_config = st / "sentence_bert_config.json"
    st_config.write_text(json.dumps({**json.loads(st_config.read_text()), "max_seq_length": 128}))
    hub = write_hub(st, base.with_name(base.name + "-hub"), "nomic", rotary_scaling_factor=factor,
                    max_trained_positions=trained)
    texts = [LONG_DOC, TEXTS[0]]
    ours, _ = _ours(hub, texts)
    tokenizer = tf.AutoTokenizer.from_pretrained(str(hf))
    for text, vector in zip(texts, ours):
        enc = tokenizer(text, return_tensors="pt", truncation=True, max_length=128)
        with torch.no_grad():
            hidden = tf.AutoModel.from_pretrained(str(hf)).eval()(**enc).last_hidden_state[0]
        assert cosine(vector, hidden.mean(0).numpy()) >= COS_BAR
    assert len(tokenizer(LONG_DOC)["input_ids"]) > trained  # the long one really was scaled
    plain, _ = _ours(write_hub(st, base.with_name(base.name + "-plain"), "nomic", max_trained_positions=trained), texts)
    assert cosine(plain[0], ours[0]) < 0.9999 and cosine(plain[1], ours[1]) >= COS_BAR


@pytest.fixture(scope="module")
def rerankers(models_dir):
    """gte-multilingual-reranker-base (NewForSequenceClassification, `new.` prefix) and
    jina-reranker-v2 (XLM-R with Jina's fused names), each next to its native twin."""
    out = {}
    # "xlm-roberta": the pair template of gte-multilingual's XLM-R tokenizer (all type ids 0)
    gte = build_scored_classifier(models_dir / "rr-gte-native", "xlm-roberta", 1, seed=51,
                                  build=lambda folder, arch, num_labels, seed: build_native(folder, "gte", seed, classifier=True))
    out["gte"] = (gte, write_hub(gte, models_dir / "rr-gte-hub", "gte", native_prefix="gte.", hub_prefix="new.",
                                 architectures=["NewForSequenceClassification"], num_labels=1,
                                 id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0}))
    # NomicBertForSequenceClassification exists natively only (no hub checkpoint has a head)
    nomic = build_scored_classifier(models_dir / "rr-nomic-native", "xlm-roberta", 1, seed=53,
                                    build=lambda folder, arch, num_labels, seed: build_native(folder, "nomic", seed, classifier=True))
    out["nomic"] = (nomic, nomic)
    xlmr = build_scored_classifier(models_dir / "rr-jina-native", "xlm-roberta", 1, seed=52)
    out["jina_reranker"] = (xlmr, write_hub(xlmr, models_dir / "rr-jina-hub", "jina_reranker",
                                            native_prefix="roberta.", hub_prefix="roberta."))
    return out


@pytest.mark.parametrize("family", ["gte", "jina_reranker", "nomic"])
def test_reranker_parity(rerankers, family):
    from sentence_transformers import CrossEncoder

    native, hub = rerankers[family]
    engine = engine_for(hub, max_client_batch_size=64)
    try:
        limit = engine.max_input_length
        ranked = run(engine.rerank(QUERY, DOCS)).values
        pairs = run(engine.predict([(QUERY, d) for d in DOCS[:3]])).values[:, 0]
    finally:
        engine.close()
    ref = CrossEncoder(str(native), device="cpu", max_length=limit).predict([(QUERY, d) for d in DOCS], batch_size=4)
    assert np.ptp(ref) > 0.1
    assert np.abs(ranked - ref).max() <= TOL
    assert np.abs(pairs - ref[:3]).max() <= TOL


@pytest.mark.parametrize("family", ["nomic", "gte", "jina"])
def test_hub_tables_match_transformers_own(family, tmp_path):
    """The renames and fusions that make the hub layouts here are the ones transformers applies
    when it saves these classes in the original layout (its conversion_mapping.py, reversed)."""
    import transformers as tf
    from safetensors.torch import load_file

    model = tf.AutoModel.from_config(native_config(family))
    model.save_pretrained(str(tmp_path))
    theirs = load_file(str(tmp_path / "model.safetensors"))
    ours = to_hub_state(model.state_dict(), family)
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_registry_tells_jina_from_plain_xlm_roberta(folders, rerankers):
    def config(folder):
        return json.loads((folder / "config.json").read_text())

    assert detect(config(folders["jina"][1])).name == "jina_v3"
    assert detect(config(folders["jina"][0])).name == "jina_v3"  # native: model_type jina_embeddings_v3
    assert detect(config(rerankers["jina_reranker"][1])).name == "jina_reranker"
    assert detect(config(rerankers["jina_reranker"][0])).name == "roberta"
    assert detect(config(folders["gte"][1])).name == "gte" and detect(config(folders["gte"][0])).name == "gte"
    assert detect(config(folders["nomic"][1])).name == "nomic_bert"


@pytest.fixture(scope="module")
def jina_lora(models_dir, folders):
    """jina-embeddings-v3 with task LoRA adapters, and, per task, the native model with that task's
    deltas added to its weights by the test itself (the native class has no LoRA)."""
    import shutil

    from safetensors.torch import save_file

    native_st, _ = folders["jina"]
    hf = native_st.with_name(native_st.name + "-hf")
    hub, native_state, lora = write_lora_hub(native_st, models_dir / "rope-jina-lora", seed=5)
    refs = {}
    for task in ("retrieval.query", "text-matching"):
        folder = models_dir / f"rope-jina-merged-{task}"
        hf_task = folder.with_name(folder.name + "-hf")
        shutil.copytree(hf, hf_task)
        merged = merged_native_state(native_state, lora, JINA_TASKS.index(task), "roberta.")
        save_file(merged, str(hf_task / "model.safetensors"), metadata={"format": "pt"})
        refs[task] = sentence_transformer(hf_task, folder, "mean", prompts=JINA_INSTRUCTIONS)
    return hub, native_st, refs


def test_jina_lora_adapter_merged_at_load(jina_lora):
    hub, native_st, refs = jina_lora
    ref = _st(refs["retrieval.query"], TEXTS, prompt_name="retrieval.query")
    settings = {"default_prompt_name": "retrieval.query"}
    named, _ = _ours(hub, TEXTS, prompt_name="retrieval.query", settings=settings)
    default, _ = _ours(hub, TEXTS, settings=settings)  # the default prompt name picks adapter and prefix
    assert cosine(named, ref).min() >= COS_BAR and cosine(default, ref).min() >= COS_BAR
    matching, _ = _ours(hub, TEXTS, settings={"default_prompt_name": "text-matching"})
    ref_matching = _st(refs["text-matching"], TEXTS, prompt_name="text-matching")
    assert cosine(matching, ref_matching).min() >= COS_BAR
    assert cosine(matching, _st(native_st, TEXTS)).min() < 0.999  # the adapter really changes the output
    base, _ = _ours(hub, TEXTS)  # no task: the base weights, as the original code runs without one
    assert cosine(base, _st(native_st, TEXTS)).min() >= COS_BAR


def test_jina_lora_other_task_is_a_4xx(jina_lora):
    hub, _, _ = jina_lora
    engine = engine_for(hub, default_prompt_name="retrieval.query")
    try:
        with pytest.raises(ValidationError, match="`retrieval.passage` selects a task adapter.*merged `retrieval.query`"):
            run(engine.embed(["hello"], prompt_name="retrieval.passage"))
    finally:
        engine.close()


@pytest.mark.parametrize("dtype,bar", [("bfloat16", 0.999), ("int8", 0.99)])
def test_low_precision(folders, dtype, bar):
    for family in ("nomic", "gte", "jina"):
        native, hub = folders[family]
        ours, _ = _ours(hub, TEXTS, settings={"dtype": dtype})
        assert cosine(ours, _st(native, TEXTS)).min() >= bar, family


@pytest.mark.parametrize("family,change,message", [
    ("nomic", {"moe_every_n_layers": 2, "num_experts": 8}, "NomicBERT with mixture-of-experts layers"),
    ("nomic", {"prenorm": True}, "NomicBERT with pre-norm blocks"),
    ("gte", {"logn_attention_scale": True}, "GTE with logn_attention_scale"),
])
def test_unverified_variants_are_refused_in_one_line(folders, models_dir, family, change, message):
    _, hub = folders[family]
    folder = models_dir / f"refused-{family}-{next(iter(change))}"
    import shutil

    shutil.copytree(hub, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(StartupError) as err:
        engine_for(folder)
    assert message in str(err.value) and "\n" not in str(err.value)

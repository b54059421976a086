"""Decoder embedders (Qwen2, Qwen3, Mistral, Llama, llama_bidirec, Gemma3 text, EmbeddingGemma 2) against
sentence-transformers (or transformers), Llama/Mistral tokenizers' add_bos/add_eos flags against AutoTokenizer,
and Qwen3-Reranker (causal-LM yes/no and seq-cls conversions) against transformers with the official template."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from engine_util import cosine, engine_for, run
from test_parity_embeddings import _ours
from texts import TEXTS
from tiny_decoders import (
    RERANK_DOCS, RERANK_QUERY, build_decoder_embedding, build_embedding_gemma2, build_qwen3_reranker,
    llama_tokenizer_writer, reference_embedding_gemma2, reference_embeddings, reference_rerank, template_ids,
    tokenizer_vocab,
)

COS_BAR = 0.99999
BF16_BAR = 0.999
TOL = 1e-4
# Sliding windows smaller than the longer test texts, so the window really cuts.
CASES = {
    "qwen3-causal": dict(arch="qwen3"),
    "qwen3-bidirectional": dict(arch="qwen3", is_causal=False, pooling="mean"),
    "qwen2-causal": dict(arch="qwen2"),
    "qwen2-bidirectional": dict(arch="qwen2", is_causal=False),
    "mistral-window": dict(arch="mistral", sliding_window=6),
    "mistral-bidirectional-window": dict(arch="mistral", sliding_window=5, is_causal=False, pooling="mean"),
    "llama-llama3-rope": dict(arch="llama", rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    "llama-bias": dict(arch="llama", attention_bias=True, mlp_bias=True, pooling="mean"),
    "llama_bidirec": dict(arch="llama", is_causal=False, pooling="mean", model_type="llama_bidirec"),
    "gemma3": dict(arch="gemma3", pooling="mean", dense=True,
                   prompts={"query": "task: search result | query: ", "document": "title: none | text: "}),
    "gemma3-causal": dict(arch="gemma3", use_bidirectional_attention=False),
}


@pytest.fixture(scope="module")
def folders(models_dir):
    cache = {}

    def get(case):
        if case not in cache:
            kw = dict(CASES[case])
            cache[case] = build_decoder_embedding(models_dir / f"dec-{case}", kw.pop("arch"),
                                                  seed=sum(map(ord, case)) % 97, **kw)
        return cache[case]

    return get


def _reference_folder(folder):
    """llama_bidirec is remote code: the reference loads the same folder as a native llama."""
    cfg = json.loads((folder / "config.json").read_text())
    if cfg["model_type"] != "llama_bidirec":
        return folder
    ref = folder.parent / (folder.name + "-native")
    if not ref.exists():
        shutil.copytree(folder, ref)
        (ref / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    return ref


@pytest.mark.parametrize("case", list(CASES))
def test_decoder_parity(folders, case):
    folder = folders(case)
    ref = reference_embeddings(_reference_folder(folder), TEXTS)
    together = _ours(folder, TEXTS)
    alone = np.concatenate([_ours(folder, [t]) for t in TEXTS[-2:]])
    assert together.shape == ref.shape
    assert cosine(together, ref).min() >= COS_BAR
    assert cosine(alone, ref[-2:]).min() >= COS_BAR


@pytest.mark.parametrize("case", ["qwen3-causal", "qwen2-bidirectional", "mistral-window", "gemma3"])
def test_decoder_bf16(folders, case):
    folder = folders(case)
    ref = reference_embeddings(_reference_folder(folder), TEXTS)
    ours = _ours(folder, TEXTS, settings={"dtype": "bfloat16"})
    assert cosine(ours, ref).min() >= BF16_BAR


def test_decoder_int8_runs_near(folders):
    folder = folders("qwen3-causal")
    ref = reference_embeddings(folder, TEXTS)
    assert cosine(_ours(folder, TEXTS, settings={"dtype": "int8"}), ref).min() >= 0.99


def test_direction_matters(folders):
    """The causal and bidirectional variants really differ: changing the last token moves the first
    token's state only when attention is bidirectional."""
    def first_token(folder, text):
        engine = engine_for(folder)
        try:
            return run(engine.embed_all([text])).values[0][0]
        finally:
            engine.close()

    for case, moves in (("qwen3-causal", False), ("qwen2-bidirectional", True)):
        a, b = first_token(folders(case), "hello world one"), first_token(folders(case), "hello world two")
        assert (np.abs(a - b).max() > 1e-4) == moves, case


def test_gemma_prompts_and_dimensions(folders):
    folder = folders("gemma3")
    ref = reference_embeddings(folder, TEXTS, prompt_name="query")
    assert cosine(_ours(folder, TEXTS, prompt_name="query"), ref).min() >= COS_BAR
    default = _ours(folder, TEXTS, settings={"default_prompt_name": "query"})
    assert cosine(default, ref).min() >= COS_BAR
    engine = engine_for(folder)
    try:
        cut = run(engine.embed(TEXTS, prompt_name="document", dimensions=16)).values
    finally:
        engine.close()
    full = reference_embeddings(folder, TEXTS, prompt_name="document")[:, :16]
    assert cut.shape == (len(TEXTS), 16)
    assert cosine(cut, full).min() >= COS_BAR
    assert np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)


def test_gemma_dtypes(folders):
    """float32 unless asked otherwise (it overflows in float16, which is refused in one line)."""
    from tei.app import StartupError

    folder = folders("gemma3")
    engine = engine_for(folder, dtype=None)
    try:
        assert engine.model.placement.dtype_name == "float32"
    finally:
        engine.close()
    with pytest.raises(StartupError, match="float16"):
        engine_for(folder, dtype="float16")


# ---- Llama/Mistral tokenizers: tokenizer_config.json's add_bos_token / add_eos_token ---------------------

# e5-mistral-style repos set add_eos_token in tokenizer_config.json while their tokenizer.json adds <s>
# only. transformers 5 drops both flags whenever a tokenizer.json exists (tokenization_utils_base's
# `_from_pretrained`), so AutoTokenizer, and sentence-transformers with it, follows the file: so do we.
LLAMA_TOKENIZERS = {
    "add-eos": dict(add_bos=True, add_eos=True),
    "no-bos-flag": dict(add_bos=False, add_eos=True),
    "no-post-processor": dict(add_bos=True, add_eos=True, post_processor=None),
    "file-adds-eos": dict(add_bos=True, add_eos=True, post_processor="bos_eos"),
    # model_type llama: AutoTokenizer takes LlamaTokenizer, which rebuilds the pipeline from the vocabulary
    # (a mistral folder gets TokenizersBackend, the file as it is); the flags are dropped all the same.
    "llama-class": dict(add_bos=True, add_eos=True, arch="llama"),
}


@pytest.fixture(scope="module")
def llama_folders(models_dir):
    cache = {}

    def get(case):
        if case not in cache:
            kw = dict(LLAMA_TOKENIZERS[case])
            arch = kw.pop("arch", "mistral")
            write = llama_tokenizer_writer(**kw)
            cache[case] = build_decoder_embedding(models_dir / f"dec-{arch}-tok-{case}", arch, tokenizer=write,
                                                  vocab=tokenizer_vocab(write), seed=len(case))
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(LLAMA_TOKENIZERS))
def test_llama_special_token_flags_follow_transformers(llama_folders, case, caplog):
    """Our ids are AutoTokenizer's (single texts, pairs, truncated), and last-token /embed matches
    sentence-transformers; start-up names each flag tokenizer.json does not follow."""
    import logging

    import transformers as tf
    from tei.engine.tokenization import TokenizeOptions

    folder = llama_folders(case)
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    assert type(tok).__name__ == ("LlamaTokenizer" if case == "llama-class" else "TokenizersBackend")
    texts = [*TEXTS, " a leading space", "two  spaces  inside"]
    pairs = [(TEXTS[1], TEXTS[2]), (TEXTS[0], TEXTS[3])]
    with caplog.at_level(logging.WARNING, logger="tei.models.spec"):
        engine = engine_for(folder)
    try:
        pool = engine.tokenizers
        singles = [e.ids.tolist() for e in pool.encode(texts, TokenizeOptions(truncate=False))]
        pair_ids = [e.ids.tolist() for e in pool.encode(pairs, TokenizeOptions(truncate=False))]
        cut = pool.encode([TEXTS[5]], TokenizeOptions(truncate=True, limit=9))[0].ids.tolist()
    finally:
        engine.close()
    assert singles == [tok(t)["input_ids"] for t in texts]
    assert pair_ids == [tok(a, b)["input_ids"] for a, b in pairs]
    assert cut == tok(TEXTS[5], truncation=True, max_length=9)["input_ids"]
    bos, eos = tok.convert_tokens_to_ids("<s>"), tok.convert_tokens_to_ids("</s>")
    appends = case == "file-adds-eos"
    assert all((ids[0] == bos) == (case != "no-post-processor") and (ids[-1] == eos) == appends for ids in singles)
    assert len(cut) == 9 and (cut[-1] == eos) == appends  # an appended </s> survives truncation
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert ("`add_eos_token: true`" in warned) != appends
    assert ("`add_bos_token" in warned) == (case in ("no-bos-flag", "no-post-processor"))

    ref = reference_embeddings(folder, TEXTS)
    assert cosine(_ours(folder, TEXTS), ref).min() >= COS_BAR
    assert cosine(np.concatenate([_ours(folder, [t]) for t in TEXTS[-2:]]), ref[-2:]).min() >= COS_BAR


# ---- EmbeddingGemma 2 ----------------------------------------------------------------------------------

GEMMA2_CASES = {
    "composite": dict(),
    "text-model": dict(text_only=True),
    "proportional-rope": dict(rope={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                    "full_attention": {"rope_type": "proportional", "rope_theta": 1e6,
                                                       "partial_rotary_factor": 0.25}}),
}


@pytest.fixture(scope="module")
def gemma2_folders(models_dir):
    cache = {}

    def get(case):
        if case not in cache:
            cache[case] = build_embedding_gemma2(models_dir / f"eg2-{case}", seed=len(case), **GEMMA2_CASES[case])
        return cache[case]

    return get


@pytest.mark.parametrize("case", list(GEMMA2_CASES))
def test_embedding_gemma2_parity(gemma2_folders, case):
    folder = gemma2_folders(case)
    ref = reference_embedding_gemma2(folder, TEXTS)
    together = _ours(folder, TEXTS)
    alone = np.concatenate([_ours(folder, [t]) for t in TEXTS[-2:]])
    assert together.shape == ref.shape == (len(TEXTS), 40)  # embedding_dim, after the projection
    assert cosine(together, ref).min() >= COS_BAR
    assert cosine(alone, ref[-2:]).min() >= COS_BAR


def test_embedding_gemma2_layers_and_dtypes(gemma2_folders):
    """Sliding layers see |i - j| <= 3 (the config's radius); the wider global layers have their own
    head size and k/v heads; the kernel choice sees the largest head size; float32 by default."""
    import torch

    from tei.devices import place
    from tei.models.loader import Model
    from tei.models.spec import read_spec

    folder = gemma2_folders("composite")
    model = Model(read_spec(folder), place("cpu", "float32"))
    shapes = [(a.window, a.head_dim, a.kv_heads) for a in model.encoder.attention]
    assert shapes == [((3, 3), 32, 2), (None, 48, 1)] * 2
    assert model.encoder.needs.head_dim == 48 and model.encoder.needs.head_dim_gcd == 16
    assert model.output_size == 40
    engine = engine_for(folder, dtype=None)
    try:
        assert engine.model.placement.dtype_name == "float32"
    finally:
        engine.close()
    # This random model loses more in bfloat16 than the others (transformers' own bfloat16 run reaches
    # cos ~0.996 against its float32 one): ours may err up to twice as much as transformers' does.
    ref = reference_embedding_gemma2(folder, TEXTS)
    theirs = reference_embedding_gemma2(folder, TEXTS, dtype=torch.bfloat16)
    ours = _ours(folder, TEXTS, settings={"dtype": "bfloat16"})
    assert 1 - cosine(ours, ref).min() <= 2 * (1 - cosine(theirs, ref).min())


# ---- Qwen3-Reranker ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen_rerankers(models_dir):
    return {
        "causal-lm": build_qwen3_reranker(models_dir / "Qwen3-Reranker-tiny", seed=5),
        "tied": build_qwen3_reranker(models_dir / "qwen3-reranker-tied", seed=6, tied=True),
        "seq-cls": build_qwen3_reranker(models_dir / "Qwen3-Reranker-tiny-seq-cls", seed=7, seq_cls=True),
    }


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


@pytest.mark.parametrize("kind", ["causal-lm", "tied", "seq-cls"])
def test_qwen3_reranker_parity(qwen_rerankers, kind):
    folder = qwen_rerankers[kind]
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        assert engine.spec.kind == "reranker"
        limit = engine.max_input_length
        scores = run(engine.rerank(RERANK_QUERY, RERANK_DOCS)).values
        raw = run(engine.rerank(RERANK_QUERY, RERANK_DOCS, raw_scores=True)).values
        alone = run(engine.rerank(RERANK_QUERY, RERANK_DOCS[:1], raw_scores=True)).values
        task = "Given a question, find the passage that answers it"
        custom = run(engine.rerank(RERANK_QUERY, RERANK_DOCS, raw_scores=True, instruction=task)).values
        pairs = run(engine.predict([(RERANK_QUERY, d) for d in RERANK_DOCS], raw_scores=True)).values[:, 0]
    finally:
        engine.close()
    ref = np.asarray(reference_rerank(folder, RERANK_QUERY, RERANK_DOCS, max_length=limit))
    assert np.ptp(ref) > 0.5  # the scores depend on the pair, so the bar below means something
    assert np.abs(raw - ref).max() <= TOL
    assert np.abs(scores - _sigmoid(ref)).max() <= TOL
    assert abs(alone[0] - ref[0]) <= TOL
    assert np.abs(pairs - ref).max() <= TOL
    ref_custom = np.asarray(reference_rerank(folder, RERANK_QUERY, RERANK_DOCS, instruction=task, max_length=limit))
    assert np.abs(custom - ref_custom).max() <= TOL
    assert np.abs(ref_custom - ref).max() > 1e-3  # the instruction is really in the prompt


def test_qwen3_reranker_truncates_the_document(qwen_rerankers):
    """A pair over the limit keeps the template's prefix and suffix and cuts the document's end, as
    the official code does; `truncate: false` is refused instead."""
    from tei.engine.errors import ValidationError

    folder = qwen_rerankers["causal-lm"]
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        long_doc = RERANK_DOCS[-1] * 3
        raw = run(engine.rerank(RERANK_QUERY, [long_doc], raw_scores=True)).values
        with pytest.raises(ValidationError):
            run(engine.rerank(RERANK_QUERY, [long_doc], truncate=False))
        limit = engine.max_input_length
        encoded = engine.tokenizers.encode([(RERANK_QUERY, long_doc)], engine._pair_options(True, "right", None))[0]
    finally:
        engine.close()
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    assert len(encoded.ids) == limit
    assert tok.decode(encoded.ids[-12:]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ref = reference_rerank(folder, RERANK_QUERY, [long_doc], max_length=limit)
    assert abs(raw[0] - ref[0]) <= TOL


def test_qwen3_reranker_long_pairs_keep_the_template(qwen_rerankers):
    """Long pairs are cut inside the middle part only, never in the prefix or the suffix: the document
    first, then the query, as the official recipe cuts the middle's tokens from their end (same ids);
    cut on the left, the instruction and query stay and the document loses its start."""
    import transformers as tf

    from tei.models.families.decoder import PROMPT_TEMPLATE as T

    folder = qwen_rerankers["causal-lm"]
    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    prefix = tok.encode(T["prefix"], add_special_tokens=False)
    suffix = tok.encode(T["suffix"], add_special_tokens=False)
    long_text = RERANK_DOCS[-1] * 3
    pairs = [(RERANK_QUERY, long_text), (long_text, "short")]
    engine = engine_for(folder, max_client_batch_size=64)
    try:
        limit = engine.max_input_length
        right = [e.ids.tolist() for e in engine.tokenizers.encode(pairs, engine._pair_options(True, "right", None))]
        left = engine.tokenizers.encode(pairs[:1], engine._pair_options(True, "left", None))[0].ids.tolist()
        raw = run(engine.rerank(long_text, ["short"], raw_scores=True)).values
    finally:
        engine.close()
    for (query, document), ids in zip(pairs, right):
        assert ids == template_ids(tok, query, document, T["instruction"], limit)
        assert len(ids) == limit and ids[:len(prefix)] == prefix and ids[-len(suffix):] == suffix
    assert "<Document>:" not in tok.decode(right[1])  # the query alone fills the budget: no document left
    assert len(left) == limit and left[:len(prefix)] == prefix and left[-len(suffix):] == suffix
    middle = tok.decode(left[len(prefix):-len(suffix)])
    assert middle.startswith(f"<Instruct>: {T['instruction']}\n<Query>: {RERANK_QUERY}\n<Document>:")
    assert middle.endswith(long_text[-60:])
    ref = reference_rerank(folder, long_text, ["short"], max_length=limit)
    assert abs(raw[0] - ref[0]) <= TOL


def test_reranker_detection(qwen_rerankers, models_dir):
    """A causal LM is a reranker by name, by --model-kind, or by a LogitScore module; else an embedder."""
    from tei.models.spec import ModelSpecError, read_spec

    named = qwen_rerankers["causal-lm"]
    plain = models_dir / "qwen3-lm-plain"
    if not plain.exists():
        shutil.copytree(named, plain)
    assert read_spec(named).kind == "reranker"
    assert read_spec(plain).kind == "embedding"
    assert read_spec(plain, model_id="Qwen/Qwen3-Reranker-0.6B").kind == "reranker"
    spec = read_spec(plain, model_kind="reranker")
    assert spec.kind == "reranker" and spec.yes_no is not None
    assert read_spec(named, model_kind="embedding").kind == "embedding"
    st6 = models_dir / "qwen3-lm-st6"
    if not st6.exists():
        shutil.copytree(named, st6)
        (st6 / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
            {"idx": 1, "name": "1", "path": "1_LogitScore",
             "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"}]))
        (st6 / "1_LogitScore").mkdir()
        (st6 / "1_LogitScore" / "config.json").write_text(json.dumps({"true_token_id": 7, "false_token_id": 9}))
    assert read_spec(st6).yes_no == (7, 9)
    with pytest.raises(ModelSpecError, match="model-kind"):
        read_spec(qwen_rerankers["seq-cls"], model_kind="embedding")


def test_attention_kernel_choice_for_decoders():
    """What each kernel gets for the decoders' masks: a kernel that cannot run one falls back to SDPA."""
    from tei.models.attention import AttentionNeeds, choose

    causal_gqa = AttentionNeeds(head_dim=128, gqa=True, causal=True)
    windowed = AttentionNeeds(head_dim=128, gqa=True, causal=True, window=True)
    gemma = AttentionNeeds(head_dim=256, gqa=True, window=True)
    assert choose("npu_fusion", causal_gqa) == "npu_fusion"  # sparse_mode 3, GQA
    assert choose("npu_fusion", windowed) == "sdpa"  # no per-sequence window in its TND contract here
    assert choose("npu_prompt", causal_gqa) == "sdpa"
    assert choose("torch_nested", causal_gqa) == "sdpa"
    assert choose("flash_attn", windowed) == "flash_attn" and choose("torch_varlen", gemma) == "torch_varlen"
    assert choose("flash_attn", AttentionNeeds(head_dim=512, causal=True)) == "sdpa"


def test_decoder_model_needs(folders):
    """The needs the loaded models declare: what the kernel choice above is made from."""
    from tei.models.loader import Model
    from tei.models.spec import read_spec
    from tei.devices import place

    cpu = place("cpu", "float32")
    qwen = Model(read_spec(folders("qwen3-causal")), cpu).encoder.needs
    assert qwen.causal and qwen.gqa and not qwen.window and qwen.head_dim == 24
    gemma = Model(read_spec(folders("gemma3")), cpu).encoder
    assert not gemma.needs.causal and gemma.needs.window
    assert [a.window for a in gemma.attention] == [(4, 4), None, (4, 4)]  # sliding_window 8 in the file
    mistral = Model(read_spec(folders("mistral-window")), cpu).encoder
    assert {a.window for a in mistral.attention} == {(5, 0)}


def test_too_big_for_memory_is_refused(folders, monkeypatch):
    from tei import devices
    from tei.app import StartupError

    monkeypatch.setattr(devices, "available_memory", lambda device: 1 << 20)
    with pytest.raises(StartupError, match=r"needs \d+ MiB .* has 1 MiB available"):
        engine_for(folders("qwen3-causal"))


def test_instruction_is_ignored_without_an_llm_reranker_template(folders):
    """FastGPT and other clients send fields a model does not use: only a template reads `instruction`."""
    engine = engine_for(folders("qwen3-causal"))
    try:
        plain = run(engine.rerank("query", ["doc", "another document"])).values
        told = run(engine.rerank("query", ["doc", "another document"], instruction="task")).values
    finally:
        engine.close()
    assert np.array_equal(plain, told)


def test_gte_qwen2_gets_its_end_token(models_dir):
    """An old gte-Qwen2 repo (auto_map → modeling_qwen.Qwen2Model) whose tokenizer.json appends nothing:
    every text ends with <|endoftext|>, as its remote tokenizer code (and TEI) make it."""
    import transformers as tf
    from tiny_decoders import decoder_config, qwen_vocab, save_decoder, write_qwen_tokenizer

    folder = models_dir / "gte-qwen2-remote"
    if not folder.exists():
        folder.mkdir(parents=True)
        write_qwen_tokenizer(folder, append_eos=False)
        cfg = decoder_config("qwen2", vocab=qwen_vocab(folder), is_causal=False)
        save_decoder(tf.Qwen2Model(cfg), folder, seed=4, tokenizer=lambda f: None)  # keeps its own tokenizer
        config = json.loads((folder / "config.json").read_text())
        config["auto_map"] = {"AutoModel": "Alibaba-NLP/gte-Qwen2-1.5B-instruct--modeling_qwen.Qwen2Model"}
        (folder / "config.json").write_text(json.dumps(config))
    engine = engine_for(folder, pooling="last_token")
    try:
        tokens = run(engine.tokenize(["hello world"]))[0]
    finally:
        engine.close()
    assert tokens[-1]["text"] == "<|endoftext|>" and tokens[-1]["special"]


"""Tiny ColBERT folders beyond tiny_late's BERT ones:

- jina-colbert-v2 as jinaai/jina-colbert-v2 lays it out: Jina's remote-code XLM-R with rotary
  positions (`model_type: xlm-roberta`, `auto_map` → jinaai/xlm-roberta-flash-implementation, its
  fused `roberta.encoder.layers.{i}.mixer.Wqkv` names), `architectures: ["HF_ColBERT"]`, the
  bias-free projection as `linear.weight` in model.safetensors, stanford-nlp's `artifact.metadata`
  naming `[QueryMarker]` / `[DocumentMarker]`, and an XLM-R-style sentencepiece tokenizer (`<s>`,
  `</s>`, `<pad>`, `<unk>`, `<mask>` last, then the two markers as added tokens, as in the real
  vocabulary where they are ids 250002 and 250003). The weights come from transformers' native
  JinaEmbeddingsV3Model (saved next to it), rewritten by tiny_rope's tables;
- a PyLate ColBERT folder written by hand from PyLate's `ColBERT.save` (pylate/models/colbert.py,
  Dense.py): Transformer + PyLate Dense modules, prefixes added to the vocabulary, its settings at
  the top of config_sentence_transformers.json, and the `max_seq_length` PyLate leaves behind.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

METASPACE = "\u2581"
XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


def write_xlmr_tokenizer(folder: Path, texts: list[str], added: tuple[str, ...] = (),
                         model_max_length: int = 8194, leave_out: str = "|") -> int:
    """A Unigram (sentencepiece) tokenizer laid out as XLM-R's: Metaspace, `<s> … </s>`; its pieces
    are the texts' words (cased), their characters with and without the word-start mark, and `▁.`
    (stanford ColBERT's placeholder, one piece in XLM-R's vocabulary). Characters in `leave_out`
    and punctuation the texts do not use are unknown, as rare symbols are. No normalizer: the real
    one is sentencepiece's precompiled charsmap, the only normalizer transformers 5's
    XLMRobertaTokenizer keeps when it rebuilds the pipeline from tokenizer.json (the references
    here tokenize through it). Returns the vocabulary size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    text = " ".join(texts)
    chars = sorted(set(text) - {" "} - set(leave_out))
    words = sorted({w.strip(string.punctuation) for w in text.split() if not set(w) & set(leave_out)} - {""})
    pieces = [(METASPACE + w, -3.0) for w in words] + [(METASPACE + c, -6.0) for c in chars] + [(c, -7.0) for c in chars]
    pieces = list(dict.fromkeys([(METASPACE + ".", -4.0), (METASPACE, -8.0), *pieces]))
    seen, vocab = set(XLMR_SPECIALS), [(t, 0.0) for t in XLMR_SPECIALS]
    for piece, score in pieces:
        if piece not in seen:
            seen.add(piece)
            vocab.append((piece, score))
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    tok.add_special_tokens([AddedToken(t, special=True) for t in XLMR_SPECIALS]
                           + [AddedToken("<mask>", lstrip=True, special=True)])
    if added:
        tok.add_tokens([AddedToken(t, special=False) for t in added])
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
                "unk_token": "<unk>", "pad_token": "<pad>",
                "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False,
                               "single_word": False}}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": model_max_length, **specials,
              "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    for stale in ("vocab.txt",):
        (folder / stale).unlink(missing_ok=True)
    return tok.get_vocab_size(with_added_tokens=True)


JINA_FLASH = "jinaai/xlm-roberta-flash-implementation"


def build_jina_colbert_v2(folder: Path, texts: list[str], seed: int = 0, dim: int = 24, attend: bool = True,
                          query_maxlen: int = 16, doc_maxlen: int = 40,
                          rotary_base: float | None = 20000.0) -> tuple[Path, Path]:
    """(the hub-layout folder, the native JinaEmbeddingsV3Model folder its weights come from).
    `artifact.metadata` keys are stanford ColBERT's (the real one says query_maxlen 32, doc_maxlen
    300; tiny lengths here so queries are padded and documents cut). `rotary_base=None`: config.json
    without `rotary_emb_base`, which Jina's XLMRobertaFlashConfig then sets to 10000."""
    from safetensors.torch import load_file, save_file
    from tiny_rope import build_native, hub_config, to_hub_state

    native = folder.with_name(folder.name + "-native")
    markers = ("[QueryMarker]", "[DocumentMarker]")
    vocab = write_xlmr_tokenizer(native / "tok", texts, markers)
    theta = 10000.0 if rotary_base is None else rotary_base
    build_native(native, "jina", seed, vocab_size=vocab, max_position_embeddings=8194, pad_token_id=1,
                 rope_parameters={"rope_type": "default", "rope_theta": theta})
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (native / name).write_bytes((native / "tok" / name).read_bytes())
    (native / "vocab.txt").unlink(missing_ok=True)

    folder.mkdir(parents=True, exist_ok=True)
    state = to_hub_state(load_file(str(native / "model.safetensors")), "jina", hub_prefix="roberta.")
    hidden = state["roberta.embeddings.word_embeddings.weight"].shape[1]
    gen = torch.Generator().manual_seed(seed + 7)
    state["linear.weight"] = torch.randn(dim, hidden, generator=gen) / hidden ** 0.5
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    cfg = hub_config("jina", json.loads((native / "config.json").read_text()), vocab_size=vocab,
                     max_position_embeddings=8194, architectures=["HF_ColBERT"])
    for key in ("lora_adaptations", "lora_rank", "lora_alpha", "task_instructions", "load_trained_adapters"):
        cfg.pop(key, None)  # jina-colbert-v2 is the plain backbone: no task adapters
    if rotary_base is None:
        cfg.pop("rotary_emb_base")
    else:
        cfg["rotary_emb_base"] = rotary_base
    cfg["auto_map"] = {"AutoConfig": f"{JINA_FLASH}--configuration_xlm_roberta.XLMRobertaFlashConfig",
                       "AutoModel": f"{JINA_FLASH}--modeling_xlm_roberta.XLMRobertaModel"}
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((native / name).read_bytes())
    meta = {"query_token_id": markers[0], "doc_token_id": markers[1], "query_maxlen": query_maxlen,
            "doc_maxlen": doc_maxlen, "dim": dim, "similarity": "cosine", "mask_punctuation": True,
            "attend_to_mask_tokens": attend, "checkpoint": "jinaai/jina-colbert-v2", "nway": 64}
    (folder / "artifact.metadata").write_text(json.dumps(meta, indent=1))
    return folder, native


# ---- PyLate, written by hand ------------------------------------------------------------------------

PYLATE_DENSE = "pylate.models.Dense.Dense"
IDENTITY = "torch.nn.modules.linear.Identity"


def _add_prefix_tokens(folder: Path, prefixes: tuple[str, ...]) -> int:
    """PyLate's `tokenizer.add_tokens([query_prefix, document_prefix])` (plain added tokens, their
    text kept as is, trailing space included). Returns the new vocabulary size."""
    from tokenizers import AddedToken, Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.add_tokens([AddedToken(p, special=False, normalized=True) for p in prefixes if p])
    tok.save(str(folder / "tokenizer.json"))
    return tok.get_vocab_size(with_added_tokens=True)


def build_pylate_by_hand(folder: Path, backbone: str = "bert", seed: int = 0, dims: tuple[int, ...] = (40, 24),
                         residual: bool = True, settings: dict | None = None, last_max_seq_length: int = 31,
                         add_prefixes: bool = True) -> Path:
    """A PyLate ColBERT folder: the transformers encoder at the root (its embeddings resized for the
    added prefix tokens, as PyLate's resize_token_embeddings does), Dense modules `1_Dense`,
    `2_Dense`, … (PyLate's Dense config keys, `linear.weight` and, with use_residual between
    different sizes, `residual.weight`), and config_sentence_transformers.json with PyLate's keys.
    `last_max_seq_length`: what PyLate leaves in sentence_bert_config.json (query_length - 1 when
    the last thing it encoded was a query). `add_prefixes=False`: the prefixes stay out of the
    vocabulary (PyLate's warning path, for encoders it cannot resize)."""
    import transformers as tf
    from safetensors.torch import save_file
    from tiny_models import build_hf_encoder

    settings = {"query_prefix": "[Q] ", "document_prefix": "[D] ", "query_length": 16, "document_length": 40,
                "attend_to_expansion_tokens": False, "skiplist_words": list(string.punctuation),
                "do_query_expansion": True, **(settings or {})}
    if backbone == "modernbert":  # GTE-ModernColBERT's encoder
        from tiny_modernbert import build_hf

        build_hf(folder, seed)
    else:
        build_hf_encoder(folder, backbone, seed)
    model = tf.AutoModel.from_pretrained(str(folder), dtype=torch.float32)
    before = model.config.vocab_size
    prefixes = (settings["query_prefix"] or "", settings["document_prefix"] or "") if add_prefixes else ()
    vocab = _add_prefix_tokens(folder, prefixes)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    with torch.no_grad():  # the new rows: random like the rest, so a wrong marker id cannot match
        rows = model.get_input_embeddings().weight
        rows[before:].normal_(0, 1.0, generator=torch.Generator().manual_seed(seed))
    model.save_pretrained(folder, safe_serialization=True)
    hidden = model.config.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    sizes = (hidden, *dims)
    gen = torch.Generator().manual_seed(seed + 11)
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:]), start=1):
        path = folder / f"{i}_Dense"
        path.mkdir(exist_ok=True)
        use_residual = residual and i == 1
        state = {"linear.weight": torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5}
        if use_residual and n_in != n_out:
            state["residual.weight"] = torch.randn(n_out, n_in, generator=gen) / n_in ** 0.5
        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps({"in_features": n_in, "out_features": n_out, "bias": False,
                                                      "activation_function": IDENTITY, "use_residual": use_residual}))
        modules.append({"idx": i, "name": str(i), "path": path.name, "type": PYLATE_DENSE})
    (folder / "modules.json").write_text(json.dumps(modules, indent=1))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": last_max_seq_length,
                                                                  "do_lower_case": False}))
    st = {"__version__": {"sentence_transformers": "5.3.0", "transformers": "5.3.0", "pytorch": "2.9.0"},
          "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "MaxSim", **settings}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(st, indent=1))
    return folder


def build_xlmr_encoder(folder: Path, texts: list[str], seed: int = 0) -> Path:
    """A plain transformers XLMRobertaModel over write_xlmr_tokenizer's vocabulary (a PyLate base)."""
    import transformers as tf
    from tiny_models import _randomize

    vocab = write_xlmr_tokenizer(folder, texts)
    torch.manual_seed(seed)
    model = tf.XLMRobertaModel(tf.XLMRobertaConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
        max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2))
    _randomize(model, seed)
    model.eval().save_pretrained(folder, safe_serialization=True)
    return folder

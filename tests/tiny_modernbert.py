"""Tiny random-weight ModernBERT models built with transformers' native classes.

The local window is 8 tokens (±4) so the test texts, most of them longer, really exercise it; the
layer pattern is global, local, local, global (global_attn_every_n_layers 3), as in the real models.
`legacy_config` rewrites config.json the way the hub's checkpoints are written (transformers 4:
`global_rope_theta`, `local_rope_theta`, `global_attn_every_n_layers`, no `layer_types`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tiny_models import VOCAB, _copy_tokenizer

LOCAL_ATTENTION = 8
GLOBAL_THETA, LOCAL_THETA = 160000.0, 10000.0
GAIN = 4.0


def config(local_attention: int = LOCAL_ATTENTION, **extra):
    import transformers as tf

    return tf.ModernBertConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=512, local_attention=local_attention, global_attn_every_n_layers=3,
        global_rope_theta=GLOBAL_THETA, local_rope_theta=LOCAL_THETA,
        # the shared BERT WordPiece tokenizer's ids
        pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102,
        **extra,
    )


def _randomize(model, seed: int) -> None:
    """Norms away from 1 (ModernBERT's have no biases, and tiny_models._randomize looks for `LayerNorm`),
    and sharper layers: at the default init (std 0.02) attention is nearly uniform, tokens barely mix,
    and a wrong window would change the embeddings by less than the parity bar."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)
            elif param.ndim == 2 and "embeddings" not in name and not name.startswith(("classifier", "decoder")):
                param.mul_(GAIN)


def save(model, folder: Path, seed: int, legacy_config: bool = False) -> Path:
    _randomize(model, seed)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    if legacy_config:
        to_legacy_config(folder / "config.json")
    return folder


def to_legacy_config(path: Path) -> None:
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    types = cfg.pop("layer_types")
    cfg["global_rope_theta"] = rope["full_attention"]["rope_theta"]
    cfg["local_rope_theta"] = rope["sliding_attention"]["rope_theta"]
    every = types[1:].index("full_attention") + 1
    assert types == ["sliding_attention" if i % every else "full_attention" for i in range(len(types))]
    cfg["global_attn_every_n_layers"] = every
    path.write_text(json.dumps(cfg, indent=2))


def build_hf(folder: Path, seed: int = 0, masked_lm: bool = False, legacy_config: bool = False, **extra) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    cls = tf.ModernBertForMaskedLM if masked_lm else tf.ModernBertModel
    return save(cls(config(**extra)), folder, seed, legacy_config)


def build_embedding(folder: Path, pooling: str = "mean", seed: int = 0, prompts: dict | None = None,
                    **hf_options) -> Path:
    """A sentence-transformers folder: Transformer + Pooling + Normalize."""
    from sentence_transformers import SentenceTransformer, models

    hf = build_hf(folder.parent / (folder.name + "-hf"), seed, **hf_options)
    transformer = models.Transformer(str(hf), max_seq_length=128, model_kwargs={"attn_implementation": "sdpa"})
    dim = transformer.get_word_embedding_dimension()
    modules = [transformer, models.Pooling(dim, pooling_mode=pooling), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu", prompts=prompts or None).save(str(folder))
    return folder


def build_classifier(folder: Path, num_labels: int = 1, seed: int = 0, classifier_pooling: str = "mean",
                     **extra) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    id2label = {i: (f"LABEL_{i}" if num_labels == 1 else f"label_{chr(97 + i)}") for i in range(num_labels)}
    cfg = config(num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()},
                 classifier_pooling=classifier_pooling, **extra)
    return save(tf.ModernBertForSequenceClassification(cfg), folder, seed)

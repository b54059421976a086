"""Tiny sequence classifiers (from tiny_models.build_classifier) whose scores actually depend on the input.

At transformers' default init (std 0.02) a 2-layer encoder barely mixes tokens, so every input gets
nearly the same logit (sigmoid 0.487 ± 1e-4): a 1e-4 parity bar would then prove nothing, and an
ordering test would rank float noise. `build_scored_classifier` sharpens the encoder and rescales the
last layer so that logits spread over about ±2 on real text.

RoBERTa-family folders get a RoBERTa pair template (`<s> a </s></s> b </s>`, type ids all 0), which
is what their real tokenizers do; the shared BERT WordPiece vocabulary stays.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tiny_models import build_classifier

ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert", "mpnet")  # MPNet's tokenizer pairs as RoBERTa's does
ENCODER_GAIN = 5.0
LOGIT_STD = 2.0
_HEAD_FINAL = ("classifier.weight", "classifier.bias", "classifier.out_proj.weight", "classifier.out_proj.bias")
_PROBE_QUERIES = ("What is deep learning?", "hello", "Where is Paris?")
_PROBE_DOCS = (
    "Deep learning is a part of machine learning.",
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Ünïcödé téxt 深度学习 and numbers 3.14159.",
    "short",
    "A longer passage about retrieval augmented generation and rerankers. " * 3,
)


def build_scored_classifier(folder: Path, arch: str, num_labels: int = 1, seed: int = 0, build=None) -> Path:
    """`build(folder, arch, num_labels, seed)` makes the unscored classifier (tiny_models' by default)."""
    from safetensors.torch import load_file, save_file

    (build or build_classifier)(folder, arch, num_labels=num_labels, seed=seed)
    if arch in ROBERTA_FAMILY:
        use_roberta_pair_template(folder)
    weights_file = folder / "model.safetensors"
    state = load_file(str(weights_file))
    for name, tensor in state.items():
        if tensor.ndim == 2 and "embeddings" not in name and name not in _HEAD_FINAL:
            state[name] = tensor * ENCODER_GAIN
    save_file(state, str(weights_file), metadata={"format": "pt"})

    logits = reference_logits(folder, [(q, d) for q in _PROBE_QUERIES for d in _PROBE_DOCS])
    center = logits.mean(axis=0)
    gain = LOGIT_STD / max(float((logits - center).std()), 1e-6)
    weight_key = next(k for k in _HEAD_FINAL[::2] if k in state)
    bias_key = weight_key[: -len("weight")] + "bias"
    state[weight_key] = state[weight_key] * gain
    state[bias_key] = (state[bias_key] - torch.from_numpy(center).to(state[bias_key].dtype)) * gain
    save_file(state, str(weights_file), metadata={"format": "pt"})
    return folder


def use_roberta_pair_template(folder: Path) -> None:
    """Swap the BERT pair template for RoBERTa's, and make transformers load tokenizer.json as is."""
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    cls, sep = "[CLS]", "[SEP]"
    tok.post_processor = processors.RobertaProcessing(
        (sep, tok.token_to_id(sep)), (cls, tok.token_to_id(cls)), trim_offsets=False, add_prefix_space=False
    )
    tok.save(str(folder / "tokenizer.json"))
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config))


def load_reference(folder: Path):
    import transformers as tf

    model = tf.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    tokenizer = tf.AutoTokenizer.from_pretrained(str(folder))
    return model, tokenizer


def reference_logits(folder: Path, inputs, max_length: int = 128, truncation="longest_first", side="right",
                     reference=None) -> np.ndarray:
    """transformers' logits [n, C] for texts or (text, text_pair) tuples, one at a time (no padding)."""
    model, tokenizer = reference or load_reference(folder)
    tokenizer.truncation_side = side
    out = []
    with torch.no_grad():
        for item in inputs:
            args = item if isinstance(item, tuple) else (item,)
            enc = tokenizer(*args, truncation=truncation, max_length=max_length, return_tensors="pt")
            if "token_type_ids" in enc and model.config.model_type == "distilbert":
                enc.pop("token_type_ids")
            out.append(model(**enc).logits[0].numpy())
    return np.stack(out).astype(np.float64)

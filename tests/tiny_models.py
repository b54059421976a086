"""Tiny random-weight models built with `transformers`, saved the way the hub lays them out.

They reuse the bundled MiniLM tokenizer (BERT WordPiece), so every architecture can tokenize
real text; the vocabulary size of each tiny model matches it.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from tei.models.hub import default_model_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
VOCAB = 30522
ARCHS = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert")


def _config(arch: str, **extra):
    import transformers as tf

    common = dict(vocab_size=VOCAB, **extra)
    if arch == "distilbert":
        return tf.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=96, max_position_embeddings=128, **common)
    kwargs = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_position_embeddings=130,
        **common,
    )
    if arch == "bert":
        return tf.BertConfig(type_vocab_size=2, **kwargs)
    if arch == "mpnet":  # 32 relative-position buckets, the only count transformers computes
        return tf.MPNetConfig(**kwargs)
    cls = {"roberta": tf.RobertaConfig, "xlm-roberta": tf.XLMRobertaConfig, "camembert": tf.CamembertConfig}[arch]
    return cls(type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2, **kwargs)


def _copy_tokenizer(folder: Path) -> None:
    try:
        src = Path(default_model_path())
    except ImportError:  # the bundled-model package is missing (the bare GPU test box)
        _write_wordpiece_tokenizer(folder)
        return
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, folder / name)


def _write_wordpiece_tokenizer(folder: Path) -> None:
    """A lower-casing BERT WordPiece tokenizer over the test texts' words and characters."""
    import json
    import string

    from tokenizers import BertWordPieceTokenizer
    from texts import TEXTS

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set("".join(TEXTS).lower()) | set(string.ascii_lowercase + string.digits + string.punctuation))
    words = sorted({w.strip(string.punctuation) for w in " ".join(TEXTS).lower().split()} - {""})
    vocab = list(dict.fromkeys(specials + chars + ["##" + c for c in chars] + words))
    BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=True).save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
              **dict(zip(["pad_token", "unk_token", "cls_token", "sep_token", "mask_token"], specials))}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _randomize(model, seed: int) -> None:
    """Non-trivial LayerNorm and bias values, so a wrong weight mapping cannot hide behind zeros/ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                param.add_(torch.randn(param.shape, generator=gen) * 0.1)


def build_hf_encoder(folder: Path, arch: str, seed: int = 0) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    return _save(tf.AutoModel.from_config(_config(arch)), folder, seed)


def _save(model, folder: Path, seed: int) -> Path:
    """Random weights, saved as safetensors next to the shared tokenizer."""
    _randomize(model, seed)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    _copy_tokenizer(folder)
    return folder


def build_embedding_model(
    folder: Path, arch: str, pooling: str = "mean", dense_out: int | None = None, seed: int = 0,
    max_seq_length: int = 128, prompts: dict | None = None,
) -> Path:
    """A sentence-transformers folder: Transformer + Pooling (+ Dense) + Normalize."""
    from sentence_transformers import SentenceTransformer, models

    hf = build_hf_encoder(folder.parent / (folder.name + "-hf"), arch, seed)
    transformer = models.Transformer(str(hf), max_seq_length=max_seq_length)
    dim = transformer.get_word_embedding_dimension()
    modules = [transformer, models.Pooling(dim, pooling_mode=pooling)]
    if dense_out:
        torch.manual_seed(seed + 1)
        modules.append(models.Dense(dim, dense_out, activation_function=torch.nn.Tanh()))
    modules.append(models.Normalize())
    st = SentenceTransformer(modules=modules, device="cpu", prompts=prompts or None)
    st.save(str(folder))
    return folder


def build_classifier(folder: Path, arch: str, num_labels: int = 1, seed: int = 0) -> Path:
    import transformers as tf

    torch.manual_seed(seed)
    id2label = {i: (f"LABEL_{i}" if num_labels == 1 else f"label_{chr(97 + i)}") for i in range(num_labels)}
    config = _config(arch, num_labels=num_labels, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    return _save(tf.AutoModelForSequenceClassification.from_config(config), folder, seed)


def build_splade_model(folder: Path, arch: str, seed: int = 0, activation: str = "relu") -> Path:
    """A sentence-transformers SparseEncoder folder: MLMTransformer (a *ForMaskedLM) + SpladePooling."""
    import transformers as tf
    from sentence_transformers.sparse_encoder import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    torch.manual_seed(seed)
    hf = _save(tf.AutoModelForMaskedLM.from_config(_config(arch)), folder.parent / (folder.name + "-hf"), seed)
    modules = [MLMTransformer(str(hf), max_seq_length=128), SpladePooling("max", activation_function=activation)]
    SparseEncoder(modules=modules, device="cpu").save(str(folder))
    return folder

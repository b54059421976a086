"""Tiny static-embedding folders with random rows over the bundled MiniLM WordPiece tokenizer: one
written by sentence-transformers (`StaticEmbedding` + Normalize, no config.json at the top), one
by model2vec (`config.json` model_type model2vec, vocabulary-quantized rows with a mapping and
per-token weights)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tiny_models import _copy_tokenizer


def _tokenizer(folder: Path, max_length: int | None):
    """The shared tokenizer, its truncation set to `max_length` (None: no truncation)."""
    from tokenizers import Tokenizer

    scratch = folder.parent / (folder.name + "-tok")
    scratch.mkdir(parents=True, exist_ok=True)
    _copy_tokenizer(scratch)
    tok = Tokenizer.from_file(str(scratch / "tokenizer.json"))
    tok.no_truncation() if max_length is None else tok.enable_truncation(max_length)
    return tok


def build_st_static(folder: Path, dim: int = 48, seed: int = 0, max_length: int | None = 128) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    tok = _tokenizer(folder, max_length)
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(tok.get_vocab_size(), dim, generator=gen)
    static = StaticEmbedding(tok, embedding_weights=rows)
    SentenceTransformer(modules=[static, Normalize()], device="cpu").save(str(folder))
    return folder


def build_model2vec(folder: Path, dim: int = 40, rows: int = 2000, seed: int = 0, max_length: int | None = 512) -> Path:
    from model2vec import StaticModel

    tok = _tokenizer(folder, None)
    rng = np.random.default_rng(seed)
    vocab = tok.get_vocab_size()
    model = StaticModel(
        vectors=rng.standard_normal((rows, dim)).astype(np.float32),
        tokenizer=tok,
        config={"model_type": "model2vec", "architectures": ["StaticModel"], "hidden_dim": dim},
        normalize=True,
        weights=rng.uniform(0.2, 2.0, vocab).astype(np.float32),
        token_mapping=rng.integers(0, rows, vocab).astype(np.int64),
        max_length=max_length,
    )
    model.save_pretrained(str(folder))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "model2vec" and not (folder / "0_StaticEmbedding").exists()
    return folder


def as_module_folder(src: Path, folder: Path, module: str = "0_StaticEmbedding") -> Path:
    """The older hub layout (static-retrieval-mrl-en-v1): the StaticEmbedding module in its own
    folder, nothing but modules.json and the other modules at the top."""
    import shutil

    shutil.copytree(src, folder)
    (folder / module).mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).rename(folder / module / name)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = module
    modules[0]["type"] = "sentence_transformers.models.StaticEmbedding"
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder

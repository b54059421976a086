"""Random-weight models in the shape of real checkpoints of the newer families, built offline with the
bundled all-MiniLM-L6-v2 tokenizer (speed does not depend on the weights' values; the hub is out of
reach):

- `mpnet`: all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 12 heads, mean pooling, 384 tokens);
- `jina`: jina-embeddings-v2-small-en (JinaBERT v2, 4 layers, hidden 512, 8 heads, GEGLU 2048, ALiBi,
  mean pooling, 8192 positions);
- `static`: static-retrieval-mrl-en-v1 (sentence-transformers StaticEmbedding, 1024 dimensions);
- `bge-m3`: BAAI/bge-m3's dense model (XLM-R large: 24 layers, hidden 1024, 250002 rows, 8194
  positions, CLS pooling), the 8k-context model of the start-up figures.

    python benchmarks/family_models.py mpnet|jina|static|bge-m3 [folder]   # default: benchmarks/results/<name>
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny-model builders, used here at full size


def mpnet(folder: Path) -> Path:
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer, models
    from tiny_models import _save

    torch.manual_seed(0)
    config = tf.MPNetConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=514)
    hf = _save(tf.MPNetModel(config), folder.parent / (folder.name + "-hf"), 0)
    transformer = models.Transformer(str(hf), max_seq_length=384)
    modules = [transformer, models.Pooling(768, pooling_mode="mean"), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def bge_m3(folder: Path) -> Path:
    import json

    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer, models
    from tiny_models import _save

    torch.manual_seed(0)
    config = tf.XLMRobertaConfig(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                 intermediate_size=4096, max_position_embeddings=8194, type_vocab_size=1)
    hf = _save(tf.XLMRobertaModel(config), folder.parent / (folder.name + "-hf"), 0)
    tok_config = json.loads((hf / "tokenizer_config.json").read_text())  # the bundled tokenizer says 512
    (hf / "tokenizer_config.json").write_text(json.dumps({**tok_config, "model_max_length": 8192}))
    transformer = models.Transformer(str(hf), max_seq_length=8192)
    modules = [transformer, models.Pooling(1024, pooling_mode="cls"), models.Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save(str(folder))
    return folder


def jina(folder: Path) -> Path:
    from tiny_jina import build_jina_embedding

    return build_jina_embedding(folder, max_seq_length=8192, hidden=512, heads=8, layers=4, inter=2048)


def static(folder: Path) -> Path:
    from tiny_static import build_st_static

    return build_st_static(folder, dim=1024, max_length=None)


BUILDERS = {"mpnet": mpnet, "jina": jina, "static": static, "bge-m3": bge_m3}


def build(name: str, folder: Path | None = None) -> Path:
    folder = folder or HERE / "results" / name
    if not (folder / "modules.json").is_file():
        BUILDERS[name](folder)
    return folder


if __name__ == "__main__":
    print(build(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None))

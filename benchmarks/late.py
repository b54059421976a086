"""In-process throughput of the issue-14 paths against their in-process references, on the
benchmark workload's texts (random weights in the real models' shapes, depth cut to keep runs short):

- bge-m3: ours computing dense, sparse and ColBERT outputs (the three requests sent together, so they
  share forward passes) against the same three outputs from one padded transformers forward per batch
  of 32 (FlagEmbedding's computation; FlagEmbedding itself does not import under transformers 5);
- colbert: a colbertv2.0-shaped stanford ColBERT, documents through /embed_multi_vector's engine path
  against sentence-transformers' MultiVectorEncoder.encode_document(batch_size=32);
- fallback: a DeBERTa-v2-base-shaped embedding model served through the transformers fallback,
  against sentence-transformers encode(batch_size=32) (the same transformers model underneath).

    python benchmarks/late.py --seconds 10 --layers 4
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import workload  # noqa: E402


def _rate(fn, texts, seconds: float) -> float:
    fn(texts[:8])  # first-call costs out of the way
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        chunk = texts[i:i + 128] or texts[:128]
        i = i + 128 if i + 128 < len(texts) else 0
        fn(chunk)
        done += len(chunk)
    return done / (time.perf_counter() - start)


def _engine(folder, **settings):
    from tei.app import build_engine
    from tei.settings import ModelSettings

    return build_engine(ModelSettings.from_options(model_id=str(folder), device="cpu", dtype="float32", max_client_batch_size=512,
                                 **settings))


@contextlib.contextmanager
def _shaped(**shape):
    """tests/tiny_models' builders, making configs of a real model's shape instead of the tiny one."""
    import tiny_models

    original = tiny_models._config

    def config(arch, **extra):
        cfg = original(arch, **extra)
        cfg.update(shape)
        return cfg

    tiny_models._config = config
    try:
        yield
    finally:
        tiny_models._config = original


def bge_m3(root: Path, layers: int, seconds: float, texts) -> dict:
    import transformers as tf
    from tiny_late import build_bge_m3

    folder = root / "bge-m3"
    # XLM-R large's width (bge-m3: 1024 hidden, 16 heads, 4096 intermediate), `layers` deep
    with _shaped(hidden_size=1024, num_attention_heads=16, intermediate_size=4096, num_hidden_layers=layers,
                 max_position_embeddings=514):
        build_bge_m3(folder, seed=1)
    engine = _engine(folder)

    def ours(batch):
        async def three():
            return await asyncio.gather(engine.embed(batch), engine.embed_sparse(batch),
                                        engine.embed_multi_vector(batch))

        asyncio.run(three())

    tok = tf.AutoTokenizer.from_pretrained(str(folder))
    model = tf.AutoModel.from_pretrained(str(folder)).eval()
    sparse = torch.load(folder / "sparse_linear.pt", weights_only=True)
    colbert = torch.load(folder / "colbert_linear.pt", weights_only=True)

    def reference(batch):
        with torch.inference_mode():
            for i in range(0, len(batch), 32):
                enc = tok(sorted(batch[i:i + 32], key=len), padding=True, truncation=True, max_length=512,
                          return_tensors="pt")
                h = model(**enc).last_hidden_state
                torch.nn.functional.normalize(h[:, 0], dim=-1)
                torch.relu(h @ sparse["weight"].T + sparse["bias"])
                torch.nn.functional.normalize(h[:, 1:] @ colbert["weight"].T + colbert["bias"], dim=-1)

    try:
        return {"ours": _rate(ours, texts, seconds), "reference": _rate(reference, texts, seconds)}
    finally:
        engine.close()


def colbert(root: Path, layers: int, seconds: float, texts) -> dict:
    from sentence_transformers import MultiVectorEncoder
    from tiny_late import build_stanford_colbert

    # colbertv2.0: BERT base, a 128-dimension projection, 300-token documents
    with _shaped(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=layers,
                 max_position_embeddings=512):
        folder = build_stanford_colbert(root / "colbert", seed=2, dim=128, doc_maxlen=300)
    st = MultiVectorEncoder(str(folder), device="cpu")
    return _against(folder, "embed_multi_vector", lambda b: st.encode_document(b, batch_size=32), seconds, texts)


def _against(folder, operation: str, reference, seconds: float, texts) -> dict:
    """Our engine's `operation` on each group of texts, and `reference(texts)`, in texts per second."""
    engine = _engine(folder)
    try:
        ours = _rate(lambda b: asyncio.run(getattr(engine, operation)(b)), texts, seconds)
    finally:
        engine.close()
    return {"ours": ours, "reference": _rate(reference, texts, seconds)}


def fallback(root: Path, layers: int, seconds: float, texts) -> dict:
    import tiny_fallback
    from sentence_transformers import SentenceTransformer

    base = dict(tiny_fallback.COMMON)
    tiny_fallback.COMMON.update(hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                                num_hidden_layers=layers, max_position_embeddings=512)
    try:
        folder = tiny_fallback.build_fallback_embedding(root / "deberta", "deberta-v2", seed=3)
    finally:
        tiny_fallback.COMMON.clear()
        tiny_fallback.COMMON.update(base)
    st = SentenceTransformer(str(folder), device="cpu")
    return _against(folder, "embed", lambda b: st.encode(b, batch_size=32), seconds, texts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--only", choices=["bge-m3", "colbert", "fallback"])
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    texts = [t for req in workload.requests(7, 400) for t in req]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("bge-m3", bge_m3), ("colbert", colbert), ("fallback", fallback)):
            if args.only and args.only != name:
                continue
            r = fn(Path(tmp), args.layers, args.seconds, texts)
            r["ratio"] = r["ours"] / r["reference"]
            results[name] = r
            print(name, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)


if __name__ == "__main__":
    main()

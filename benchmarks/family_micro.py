"""A short in-process comparison for a model folder: our engine's /embed path (tokenize, batch, packed
forward) against sentence-transformers `encode` in float32 on the same workload texts, taking turns.
For machines too busy for compare.py's full runs; the ratio, not the texts/s, is the figure.

    python benchmarks/family_micro.py MODEL_FOLDER [--texts 16] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--texts", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from sentence_transformers import SentenceTransformer

    from tei.app import build_engine
    from tei.settings import Settings

    workload = json.loads((Path(__file__).parent / "workload.json").read_text())
    # the server benchmark's mix: 70% one-line descriptions, 30% passages
    n_passages = round(args.texts * 0.3)
    lines, passages = workload["lines"], workload["passages"]
    texts = (lines[:: len(lines) // (args.texts - n_passages)][: args.texts - n_passages]
             + passages[:: len(passages) // max(1, n_passages)][:n_passages])
    engine = build_engine(Settings(model_id=args.model, dtype="float32"))
    st = SentenceTransformer(args.model, device="cpu")
    ours, theirs = [], []
    for _ in range(args.rounds):
        t = time.perf_counter()
        asyncio.run(engine.embed(texts))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        st.encode(texts, batch_size=32)
        theirs.append(time.perf_counter() - t)
    engine.close()
    ratios = [b / a for a, b in zip(ours, theirs)]
    print(f"{len(texts)} texts; ours s {[round(x, 2) for x in ours]}; sentence-transformers s "
          f"{[round(x, 2) for x in theirs]}; ratio median {statistics.median(ratios):.2f}x "
          f"(per round {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()

"""Our engine against sentence-transformers in ONE process, taking turns on the same texts: a cheap
stand-in for compare.py where a server's start-up (kernels for every batch gear) takes minutes,
as for base-size models on a busy 2-core machine.

Each round encodes the same workload texts (workload.py, requests of 1-8 texts) twice: with
sentence-transformers `encode(texts, batch_size=32)` (it sorts by length first, its best case), and
with our Engine, every request submitted at once (as concurrent clients would; the batcher packs
them). No HTTP and no JSON on our side, so against compare.py this leaves out a few per-request
milliseconds. The Engine is built without the server's start-up warm-up; an untimed first round
builds the kernels these batches use. The result is the median of the per-round ratios.

    python benchmarks/engine_vs_st.py benchmarks/results/gte-multilingual-base --rounds 5 --texts 256
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402


def engine(folder: Path, dtype: str):
    from tei.devices import place
    from tei.engine.engine import Engine, EngineConfig
    from tei.models.loader import Model
    from tei.models.spec import read_spec

    placement = place("cpu", dtype)
    placement.activate()
    spec = read_spec(folder)
    model = placement.build(Model, spec, placement)
    return Engine(spec, model, (folder / "tokenizer.json").read_text(encoding="utf-8"), EngineConfig())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--texts", type=int, default=256, help="texts per round, in requests of 1-8")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    from sentence_transformers import SentenceTransformer

    requests, total = [], 0
    for req in workload.requests(0, 4000):
        if total >= args.texts:
            break
        requests.append(req)
        total += len(req)
    texts = [t for req in requests for t in req]
    st = SentenceTransformer(str(args.model), device="cpu")
    ours = engine(args.model, args.dtype)

    async def ours_round():
        await asyncio.gather(*(ours.embed(req) for req in requests))

    def timed(fn) -> float:
        began = time.perf_counter()
        fn()
        return time.perf_counter() - began

    try:
        timed(lambda: asyncio.run(ours_round()))  # builds the kernels of these batch sizes
        timed(lambda: st.encode(texts, batch_size=32))
        rows = []
        for i in range(args.rounds):
            st_s = timed(lambda: st.encode(texts, batch_size=32))
            ours_s = timed(lambda: asyncio.run(ours_round()))
            rows.append({"st_texts_per_s": len(texts) / st_s, "ours_texts_per_s": len(texts) / ours_s,
                         "ratio": st_s / ours_s})
            print(f"round {i + 1}: sentence-transformers {rows[-1]['st_texts_per_s']:.1f} texts/s, "
                  f"ours {rows[-1]['ours_texts_per_s']:.1f} texts/s, ratio {rows[-1]['ratio']:.2f}x", flush=True)
    finally:
        ours.close()
    ratios = [r["ratio"] for r in rows]
    print(json.dumps({"model": args.model.name, "dtype": args.dtype, "texts": len(texts),
                      "median_ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                      "st_texts_per_s": statistics.median(r["st_texts_per_s"] for r in rows),
                      "ours_texts_per_s": statistics.median(r["ours_texts_per_s"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

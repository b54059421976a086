"""Our Engine in-process (no HTTP, no JSON) against sentence-transformers `encode`, on the same texts of
the workload, taking turns call by call; for models where the server's per-request cost is what
the HTTP comparison measures (static embeddings compute almost nothing).

    python benchmarks/engine_inprocess.py --model <folder> [--rounds 5] [--texts 512] [--no-st]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> int:
    import workload
    from engine_util import engine_for

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--no-st", action="store_true", help="ours only (no sentence-transformers class exists)")
    args = p.parse_args()
    texts = [t for request in workload.requests(0, args.texts) for t in request][: args.texts]
    engine = engine_for(args.model, max_client_batch_size=len(texts))

    async def ours_call():
        chunks = [texts[i:i + 32] for i in range(0, len(texts), 32)]  # requests in flight together
        return await asyncio.gather(*(engine.embed(c) for c in chunks))

    st = None
    if not args.no_st:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(args.model, device="cpu")
        st.encode(texts[:64], batch_size=32)
    asyncio.run(ours_call())
    times: dict[str, list[float]] = {"ours": [], "st": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        asyncio.run(ours_call())
        times["ours"].append(time.perf_counter() - t0)
        if st is not None:
            t0 = time.perf_counter()
            st.encode(texts, batch_size=32)
            times["st"].append(time.perf_counter() - t0)
    engine.close()
    ours = statistics.median(times["ours"])
    print(f"{Path(args.model).name}: {len(texts)} texts, median of {args.rounds} rounds: ours {len(texts) / ours:.0f} texts/s")
    if st is not None:
        ratios = sorted(s / o for o, s in zip(times["ours"], times["st"]))
        print(f"sentence-transformers {len(texts) / statistics.median(times['st']):.0f} texts/s; "
              f"ours / sentence-transformers {statistics.median(ratios):.2f}x (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

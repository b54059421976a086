"""Mixed embedding + rerank load: one server with two models against two one-model servers, same cores.

    .venv/bin/python benchmarks/mixed.py                 # 4 slices of 10 s each way
    .venv/bin/python benchmarks/mixed.py --slices 8 --seconds 15

The models: the bundled all-MiniLM-L6-v2 (embeddings) and a MiniLM-L6-shaped cross-encoder
(benchmarks/reranker_model.py). Load: `--clients` closed-loop clients on /embed and as many on
/rerank (TEI dialect), at the same time, from the seeded workload of benchmarks/workload.py.

- "one server": `text-embeddings-router --model-id <embedder> --model-id <reranker>`: both models'
  batches run on one inference thread (one OpenMP pool) in turns;
- "two servers": one `text-embeddings-router` per model, each with its own OpenMP pool over the
  same cores.

As compare.py does, the two set-ups take turns in slices (the order rotating) while the other sits
idle, so outside load on a shared machine hits both alike; the result is the median over slices
of (one server's texts/s) / (two servers' texts/s), where texts are embedded texts plus ranked
documents.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402
import loadgen  # noqa: E402
import reranker_model  # noqa: E402

WORKLOAD_REQUESTS = 2000


def _server(name: str, models: list[str], extra: list[str]) -> compare.Server:
    port = compare.free_port()
    argv = [str(compare.OURS), "--hostname", "127.0.0.1", "--port", str(port), *extra]
    for model in models:
        argv += ["--model-id", model]
    return compare.Server(name, argv, port, "tei", "embed")


class Setup:
    """Where the embedding clients and the rerank clients send their requests."""

    def __init__(self, name: str, servers: list[compare.Server], embed_url: str, rerank_url: str):
        self.name, self.servers = name, servers
        self.embed_url, self.rerank_url = embed_url, rerank_url
        self.embed_calls = loadgen.build_calls("tei", "embed", 0, WORKLOAD_REQUESTS)
        self.rerank_calls = loadgen.build_calls("tei", "rerank", 0, WORKLOAD_REQUESTS)
        self.cursors = [0, 0]
        self.slices: list[dict] = []

    async def _load(self, clients: int, seconds: float, warmup: float):
        return await asyncio.gather(
            loadgen.run(self.embed_url, self.embed_calls, clients, seconds=seconds, warmup=warmup,
                        start=self.cursors[0]),
            loadgen.run(self.rerank_url, self.rerank_calls, clients, seconds=seconds, warmup=warmup,
                        start=self.cursors[1]),
        )

    def run(self, clients: int, seconds: float, warmup: float) -> dict:
        cpu = sum(s.cpu() for s in self.servers)
        embed, rerank = asyncio.run(self._load(clients, seconds, warmup))
        self.cursors = [embed.next_index, rerank.next_index]
        result = {
            "embed_texts_per_s": embed.texts_per_s, "rerank_docs_per_s": rerank.texts_per_s,
            "texts_per_s": embed.texts_per_s + rerank.texts_per_s,
            "embed_p50_ms": embed.percentile(50), "rerank_p50_ms": rerank.percentile(50),
            "errors": embed.errors + rerank.errors, "error_samples": (embed.error_samples + rerank.error_samples)[:3],
            "cpu_seconds": sum(s.cpu() for s in self.servers) - cpu,
        }
        self.slices.append(result)
        return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--clients", type=int, default=16, help="per task (embedding and rerank each)")
    p.add_argument("--ours-args", default="--max-batch-tokens 4096", help="flags for every server")
    args = p.parse_args()
    embedder, reranker = compare.bundled_model(), str(reranker_model.build())
    extra = args.ours_args.split()
    one = _server("one server, two models", [embedder, reranker], extra)
    emb, rr = _server("embedding server", [embedder], extra), _server("rerank server", [reranker], extra)
    started = []
    try:
        for server in (one, emb, rr):
            started.append(server.start())
        setups = [Setup("one server", [one], one.url, one.url), Setup("two servers", [emb, rr], emb.url, rr.url)]
        for setup in setups:  # warm both up before the clock
            asyncio.run(setup._load(args.clients, 2.0, 0.0))
        ratios = []
        for i in range(args.slices):
            for setup in setups[i % 2:] + setups[: i % 2]:
                r = setup.run(args.clients, args.seconds, args.warmup)
                print(f"slice {i}: {setup.name:12s} {r['texts_per_s']:8.1f} texts/s (embed {r['embed_texts_per_s']:.1f}, "
                      f"rerank {r['rerank_docs_per_s']:.1f}), errors {r['errors']}", flush=True)
            ratios.append(setups[0].slices[-1]["texts_per_s"] / max(setups[1].slices[-1]["texts_per_s"], 1e-9))
        summary = {
            "ratio_one_over_two_median": statistics.median(ratios),
            "ratios": ratios,
            **{s.name: {k: statistics.median(x[k] for x in s.slices)
                        for k in ("texts_per_s", "embed_texts_per_s", "rerank_docs_per_s", "embed_p50_ms",
                                  "rerank_p50_ms", "cpu_seconds")} for s in setups},
            "errors": sum(x["errors"] for s in setups for x in s.slices),
            "args": vars(args),
            "cpu": compare._cpu_name(),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    finally:
        for server in started:
            server.stop()
    compare.RESULTS.mkdir(exist_ok=True)
    (compare.RESULTS / "mixed.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

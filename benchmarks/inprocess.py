"""The no-server baseline: sentence-transformers `encode(batch_size=32)` in one process, on the
benchmark's own texts, with no HTTP, no JSON and no client.

As a worker for compare.py (`--serve`), it loads the model once and answers JSON lines on stdin:

    {"op": "throughput", "dtype": "float32", "seconds": 15}  → {"texts", "seconds", "cpu_seconds"}
    {"op": "single", "dtype": "float32", "count": 20}         → {"latencies_ms": [...]}

Throughput encodes the workload's texts (benchmarks/workload.py, in request order, continuing
where the last call stopped) GROUP texts per `encode` call until `seconds` have passed; each call
sorts its texts by length before batching, sentence-transformers' best case. `single` times
`encode([text])` one text at a time. "bfloat16" runs the float32 model under CPU autocast, as a
user would. With `--task rerank` the model is a `CrossEncoder` and the items are the workload's
(query, document) pairs, scored by `predict(pairs, batch_size=32)`, GROUP pairs per call (there is
no `single` op then). Standalone, it prints one JSON object:

    python benchmarks/inprocess.py --model <folder> --dtype float32 --seconds 20 --single 100
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

GROUP = int(os.environ.get("BENCH_INPROCESS_GROUP") or 512)  # texts per call; smaller for big models


class Baseline:
    def __init__(self, model: str, seed: int, batch_size: int = 32, task: str = "embed"):
        import torch

        self.torch = torch
        self.batch_size = batch_size
        if task == "rerank" and _causal_lm(model):
            self.run = _llm_reranker(model, batch_size)
            self.texts = [(q, d) for q, docs in workload.rerank_requests(seed, 2000) for d in docs]
            self.singles = []
        elif task == "rerank":
            from sentence_transformers import CrossEncoder

            cross = CrossEncoder(model, device="cpu")
            self.run = lambda pairs: cross.predict(pairs, batch_size=self.batch_size)
            self.texts = [(q, d) for q, docs in workload.rerank_requests(seed, 2000) for d in docs]
            self.singles = []
        else:
            from sentence_transformers import SentenceTransformer

            encoder = SentenceTransformer(model, device="cpu")
            self.run = lambda texts: encoder.encode(texts, batch_size=self.batch_size)
            self.texts = [t for req in workload.requests(seed, 4000) for t in req]
            self.singles = workload.single_texts(seed, 4000)
        self.cursor = {"texts": 0, "singles": 0}

    def _autocast(self, dtype: str):
        if dtype == "bfloat16":
            return self.torch.autocast("cpu", dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _take(self, pool: str, n: int) -> list[str]:
        source = self.texts if pool == "texts" else self.singles
        start = self.cursor[pool]
        self.cursor[pool] = start + n
        return [source[(start + i) % len(source)] for i in range(n)]

    def warmup(self, dtype: str) -> None:
        with self._autocast(dtype):
            self.run(self.texts[:64])
            for text in self.singles[:10]:
                self.run([text])

    def throughput(self, dtype: str, seconds: float) -> dict:
        texts = 0
        began, cpu = time.perf_counter(), time.process_time()
        with self._autocast(dtype):
            while time.perf_counter() - began < seconds:
                group = self._take("texts", GROUP)
                self.run(group)
                texts += len(group)
        return {"texts": texts, "seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu}

    def single(self, dtype: str, count: int) -> dict:
        latencies = []
        with self._autocast(dtype):
            for text in self._take("singles", count):
                start = time.perf_counter()
                self.run([text])
                latencies.append((time.perf_counter() - start) * 1000)
        return {"latencies_ms": latencies}


def _causal_lm(model: str) -> bool:
    config = json.loads((Path(model) / "config.json").read_text())
    return any(a.endswith("ForCausalLM") for a in config.get("architectures") or [])


def _llm_reranker(model: str, batch_size: int, max_length: int = 512):
    """Qwen3-Reranker as its model card runs it in transformers: the yes/no template, tokenized
    without special tokens, the middle cut to fit, left padding, logits of the last position. Two
    kindnesses over the card: `logits_to_keep=1` (the card computes every position's 151936 logits)
    and each call's pairs sorted by length before batching, as sentence-transformers sorts."""
    import torch
    import transformers

    from tei.models.families.decoder import PROMPT_TEMPLATE as T

    tok = transformers.AutoTokenizer.from_pretrained(model, padding_side="left")
    lm = transformers.AutoModelForCausalLM.from_pretrained(model).eval()
    prefix = tok.encode(T["prefix"], add_special_tokens=False)
    suffix = tok.encode(T["suffix"], add_special_tokens=False)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")

    def run(pairs):
        texts = [T["middle"].format(instruction=T["instruction"], query=q, document=d) for q, d in pairs]
        middles = tok(texts, add_special_tokens=False, truncation=True,
                      max_length=max_length - len(prefix) - len(suffix))["input_ids"]
        order = sorted(range(len(pairs)), key=lambda i: len(middles[i]))
        scores = [0.0] * len(pairs)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tok.pad({"input_ids": [prefix + middles[i] + suffix for i in chunk]}, return_tensors="pt")
            with torch.inference_mode():
                logits = lm(**batch, logits_to_keep=1).logits[:, -1, :]
            pair = torch.stack([logits[:, no], logits[:, yes]], dim=1).float().log_softmax(dim=1)[:, 1].exp()
            for i, s in zip(chunk, pair.tolist()):
                scores[i] = s
        return scores

    return run


def serve(baseline: Baseline) -> None:
    for dtype in ("float32", "bfloat16"):
        baseline.warmup(dtype)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            return
        if cmd["op"] == "throughput":
            out = baseline.throughput(cmd["dtype"], cmd["seconds"])
        else:
            out = baseline.single(cmd["dtype"], cmd["count"])
        print(json.dumps(out), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", action="store_true", help="JSON-lines worker for compare.py")
    p.add_argument("--task", choices=["embed", "rerank"], default="embed")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--single", type=int, default=0, help="texts for the one-at-a-time latency run")
    args = p.parse_args()
    baseline = Baseline(args.model, args.seed, task=args.task)
    if args.serve:
        return serve(baseline)
    baseline.warmup(args.dtype)
    out = baseline.throughput(args.dtype, args.seconds)
    out["texts_per_s"] = round(out["texts"] / out["seconds"], 2)
    if args.single:
        lat = sorted(baseline.single(args.dtype, args.single)["latencies_ms"])
        out["single_p50_ms"] = round(lat[len(lat) // 2], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

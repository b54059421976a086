"""The bulk CLI against in-process sentence-transformers, and --ray against the local run.

    python benchmarks/bulk.py [--texts 20000] [--rounds 1] [--no-ray]

The same texts (benchmarks/workload.py, seed 0, flattened in request order) go to:
  - sentence-transformers `encode(texts, batch_size=32)` in one call (it sorts the whole call by
    length: its best case), in a subprocess, timed around `encode` only;
  - `text-embeddings-batch --input texts.jsonl --output out.npy`, timed by its summary line (from the
    first chunk read to the last written: model load and imports excluded, as for the baseline);
  - the same with `--ray --ray-actors 1` (one Engine actor with one CPU; the summary's clock then also
    covers starting the actor and loading its model, which is part of the overhead being measured).
Each contender runs in turn, `--rounds` times in rotating order; the figures are medians. Both
outputs are checked against each other (cosine > 0.9999) so a fast wrong answer cannot win.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import workload  # noqa: E402

BIN = Path(sys.executable).parent


def texts(n: int, seed: int = 0) -> list[str]:
    out: list[str] = []
    count = n // 4 + 1
    while len(out) < n:
        out = [t for req in workload.requests(seed, count) for t in req]
        count *= 2
    return out[:n]


def st_worker(path: str, out: str) -> None:
    """Subprocess body: encode every text once, print the seconds spent in encode."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from tei.models.hub import default_model_path

    items = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
    model = SentenceTransformer(default_model_path(), device="cpu")
    model.encode(items[:64], batch_size=32)  # warm-up, as our engine warms up at start-up
    start = time.perf_counter()
    vectors = model.encode(items, batch_size=32)
    seconds = time.perf_counter() - start
    np.save(out, vectors.astype(np.float32))
    print(json.dumps({"seconds": seconds}))


def run_st(path: Path, out: Path) -> float:
    proc = subprocess.run([sys.executable, __file__, "--st-worker", str(path), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


SUMMARY = re.compile(r"(\d+) texts in ([\d.]+) s")


def run_cli(path: Path, out: Path, *extra: str) -> float:
    cmd = [str(BIN / "text-embeddings-batch"), "--input", str(path), "--output", str(out), "--dtype", "float32",
           "--device", "cpu", *extra]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return float(SUMMARY.findall(proc.stderr)[-1][1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--texts", type=int, default=20000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--st-worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.st_worker:
        return st_worker(*args.st_worker)
    import numpy as np

    corpus = texts(args.texts)
    tmp = Path(tempfile.mkdtemp(prefix="tei-bulk-bench-"))
    path = tmp / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus), encoding="utf-8")
    contenders = {
        "sentence-transformers": lambda: run_st(path, tmp / "st.npy"),
        "text-embeddings-batch": lambda: run_cli(path, tmp / "ours.npy"),
    }
    if not args.no_ray:
        contenders["text-embeddings-batch --ray (1 actor)"] = lambda: run_cli(
            path, tmp / "ray.npy", "--ray", "--ray-actors", "1")
    seconds: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds[name].append(contenders[name]())
            print(f"round {r + 1}: {name}: {seconds[name][-1]:.1f} s", file=sys.stderr, flush=True)
    ours, st = np.load(tmp / "ours.npy"), np.load(tmp / "st.npy")
    cos = (ours * st).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(st, axis=1)
    assert cos.min() > 0.9999, cos.min()
    median = {k: statistics.median(v) for k, v in seconds.items()}
    rate = {k: args.texts / v for k, v in median.items()}
    print(f"| {args.texts} texts, all-MiniLM-L6-v2 fp32, CPU | seconds | texts/s |")
    print("|---|---:|---:|")
    for k in contenders:
        print(f"| {k} | {median[k]:.1f} | {rate[k]:.0f} |")
    print(f"\nbulk CLI / sentence-transformers: **{rate['text-embeddings-batch'] / rate['sentence-transformers']:.2f}x**")
    if not args.no_ray:
        ray = rate["text-embeddings-batch --ray (1 actor)"]
        print(f"--ray (1 actor) / local: **{ray / rate['text-embeddings-batch']:.2f}x**")
        ray_out = np.load(tmp / "ray.npy")
        assert np.allclose(ray_out, ours, atol=1e-5)


if __name__ == "__main__":
    main()

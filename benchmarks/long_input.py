"""Memory of one long input: our server on a decoder model with an 8k-token limit, one request of
`--tokens` tokens, the server's RSS sampled every 50 ms (weights and warm-up before; the peak during).

    python benchmarks/long_input.py [--layers 4] [--tokens 8192] [--dtype float32]
    python benchmarks/long_input.py --model benchmarks/results/jina     # JinaBERT v2, ALiBi

The model is decoder_models.py's Qwen3-Embedding-0.6B shape, with max_seq_length raised to the
request's length. Activations live one layer at a time (inference mode), so the peak above the
resting RSS does not grow with depth: a few layers measure what the 28-layer model needs above
its weights.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import decoder_models  # noqa: E402
from compare import OFFLINE, OURS, free_port, rss_mb  # noqa: E402


def long_folder(layers: int, tokens: int) -> Path:
    base = decoder_models.build("embedding", layers)
    folder = base.parent / f"{base.name}-{tokens}"
    if not folder.exists():
        shutil.copytree(base, folder)
        cfg = json.loads((folder / "sentence_bert_config.json").read_text())
        (folder / "sentence_bert_config.json").write_text(json.dumps({**cfg, "max_seq_length": tokens}))
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--model", help="any model folder whose limit is at least --tokens (e.g. family_models.py jina)")
    args = p.parse_args()
    folder = Path(args.model) if args.model else long_folder(args.layers, args.tokens)
    port = free_port()
    proc = subprocess.Popen([str(OURS), "--model-id", str(folder), "--hostname", "127.0.0.1", "--port", str(port),
                             "--dtype", args.dtype], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**__import__("os").environ, **OFFLINE})
    url = f"http://127.0.0.1:{port}"
    try:
        began = time.monotonic()
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() - began > 900:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        startup = time.monotonic() - began
        time.sleep(1)
        resting = rss_mb(proc.pid)
        peak = [resting]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # "word " is one WordPiece token; the special tokens make up the rest of the limit
        text = "word " * (args.tokens - 2)
        start = time.perf_counter()
        r = httpx.post(url + "/embed", json={"inputs": text, "truncate": True}, timeout=900)
        seconds = time.perf_counter() - start
        over = httpx.post(url + "/embed", json={"inputs": text + " word" * 10, "truncate": False}, timeout=60)
        stop.set()
        sampler.join()
        tokens = httpx.post(url + "/tokenize", json={"inputs": text}, timeout=60).json()
        print(json.dumps({
            "model": folder.name, "dtype": args.dtype, "tokens": len(tokens[0]), "status": r.status_code,
            "over_limit_status": over.status_code, "startup_s": round(startup, 1), "request_s": round(seconds, 2),
            "rss_resting_mb": round(resting), "rss_peak_mb": round(peak[0]),
            "peak_above_resting_mb": round(peak[0] - resting),
        }))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()

"""Exec to healthy: how long `text-embeddings-router` takes from exec until `/health` answers 200.

    python benchmarks/startup.py                                  # the bundled all-MiniLM-L6-v2, 5 runs
    python benchmarks/startup.py --model benchmarks/results/bge-m3-shaped --runs 3 -- --dtype bfloat16

Each run starts a fresh process (the page cache is warm after the first, as on a restarted pod),
polls `/health` every 10 ms, then sends one single-text `/embed` to check that the first request is
not slow (the kernels it needs must already be built), and stops the server. Prints every run and
the median; CPU seconds are the process's user+system time at healthy.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from compare import OFFLINE, OURS, bundled_model, cpu_seconds, free_port  # noqa: E402


def one_run(model: str, extra: list[str], timeout: float) -> dict:
    port = free_port()
    argv = [str(OURS), "--model-id", model, "--hostname", "127.0.0.1", "--port", str(port), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env={**os.environ, **OFFLINE}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=5.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
                if time.perf_counter() - start > timeout:
                    raise RuntimeError(f"not healthy after {timeout:.0f} s")
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.01)
            healthy = time.perf_counter() - start
            cpu = cpu_seconds(proc.pid)
            firsts = []
            for text in ("a first request", "a second, slightly longer request to the same server"):
                t = time.perf_counter()
                client.post(f"{url}/embed", json={"inputs": text}).raise_for_status()
                firsts.append((time.perf_counter() - t) * 1000)
        return {"healthy_s": healthy, "cpu_s": cpu, "first_ms": firsts[0], "second_ms": firsts[1]}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="model folder (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("extra", nargs="*", help="flags for text-embeddings-router (after --)")
    args = p.parse_args()
    model = args.model or bundled_model()
    runs = []
    for i in range(args.runs):
        r = one_run(model, args.extra, args.timeout)
        runs.append(r)
        print(f"run {i + 1}: healthy {r['healthy_s']:.2f} s (CPU {r['cpu_s']:.2f} s), "
              f"first /embed {r['first_ms']:.1f} ms, second {r['second_ms']:.1f} ms", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median of {len(runs)}: healthy {med['healthy_s']:.2f} s (CPU {med['cpu_s']:.2f} s), "
          f"first /embed {med['first_ms']:.1f} ms, second {med['second_ms']:.1f} ms, "
          f"min healthy {min(r['healthy_s'] for r in runs):.2f} s, max {max(r['healthy_s'] for r in runs):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

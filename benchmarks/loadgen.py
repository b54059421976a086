"""Closed-loop HTTP load generator: N clients, each sending its next request as soon as the last returns.

Every request body is built and serialized before the clock starts, so the client spends its time
on the wire, not in JSON; responses are parsed and checked (one vector or score per text), because
a fast wrong answer is an error. Speaks three dialects against one workload:

- `tei`: POST /embed {"inputs": [...]}, POST /rerank {"query", "texts"} (TEI and this server);
- `openai`: POST /v1/embeddings {"input": [...], "model"} (TEI, this server, vLLM, ...);
- `infinity`: POST /embeddings {"input": [...], "model"}, POST /rerank {"query", "documents", "model"}.

    python benchmarks/loadgen.py --url http://127.0.0.1:3000 --api tei --clients 32 --requests 400
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

EMBED_ROUTES = {"tei": "/embed", "openai": "/v1/embeddings", "infinity": "/embeddings"}


@dataclasses.dataclass
class Call:
    path: str
    body: bytes
    texts: int
    check: object  # callable(parsed json) -> bool


def embed_calls(api: str, requests: list[list[str]], model: str = "bench") -> list[Call]:
    path = EMBED_ROUTES[api]
    calls = []
    for texts in requests:
        n = len(texts)
        if api == "tei":
            body, check = {"inputs": texts}, _tei_embed_check(n)
        else:
            body, check = {"input": texts, "model": model}, _openai_embed_check(n)
        calls.append(Call(path, orjson.dumps(body), n, check))
    return calls


def rerank_calls(api: str, requests: list[tuple[str, list[str]]], model: str = "bench") -> list[Call]:
    calls = []
    for query, docs in requests:
        n = len(docs)
        if api == "tei":
            body, check = {"query": query, "texts": docs}, _tei_rerank_check(n)
        else:  # Cohere / Jina dialect: Infinity, and this server's `documents` form
            body, check = {"query": query, "documents": docs, "model": model}, _cohere_rerank_check(n)
        calls.append(Call("/rerank", orjson.dumps(body), n, check))
    return calls


def _tei_embed_check(n):
    return lambda r: isinstance(r, list) and len(r) == n and len(r[0]) > 0


def _openai_embed_check(n):
    return lambda r: len(r["data"]) == n and len(r["data"][0]["embedding"]) > 0


def _tei_rerank_check(n):
    return lambda r: isinstance(r, list) and len(r) == n and "score" in r[0]


def _cohere_rerank_check(n):
    return lambda r: len(r["results"]) == n and "relevance_score" in r["results"][0]


@dataclasses.dataclass
class Report:
    clients: int
    requests: int
    texts: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    error_samples: list[str]
    next_index: int = 0  # where a following run continues in the same call list

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.seconds if self.seconds else 0.0

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        lat = sorted(self.latencies_ms)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

    def summary(self) -> dict:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "texts": self.texts,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "texts_per_s": round(self.texts_per_s, 2),
            "req_per_s": round(self.req_per_s, 2),
            "p50_ms": round(self.percentile(50), 2),
            "p90_ms": round(self.percentile(90), 2),
            "p99_ms": round(self.percentile(99), 2),
            "error_samples": self.error_samples[:5],
        }

    def line(self) -> str:
        s = self.summary()
        return (
            f"{s['texts_per_s']:8.1f} texts/s {s['req_per_s']:7.1f} req/s  p50 {s['p50_ms']:8.1f} ms  "
            f"p90 {s['p90_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  errors {s['errors']}/{s['requests']}"
        )


async def run(
    url: str,
    calls: list[Call],
    clients: int,
    seconds: float | None = None,
    warmup: float = 0.0,
    start: int = 0,
    timeout: float = 120.0,
) -> Report:
    """A closed loop of `clients` over `calls`, from index `start`.

    Without `seconds`: every call once. With `seconds`: the calls cycle; what completes in the
    window [warmup, warmup + seconds) counts, then no new request goes out and the ones in flight
    are awaited and dropped. The window is therefore fully loaded from edge to edge, and its
    throughput is the server's steady state (no ramp-up, no draining tail).
    """
    latencies: list[float] = []
    errors: list[str] = []
    done_texts = 0
    cursor = start
    end = start + len(calls)
    began = time.perf_counter()
    window_start = began + warmup if seconds else began
    window_end = window_start + seconds if seconds else float("inf")
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    session_timeout = aiohttp.ClientTimeout(total=timeout)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal cursor, done_texts
        while (seconds or cursor < end) and time.perf_counter() < window_end:
            call = calls[cursor % len(calls)]
            cursor += 1
            sent = time.perf_counter()
            try:
                async with session.post(url + call.path, data=call.body, headers=headers) as resp:
                    raw = await resp.read()
                    ok = resp.status == 200 and call.check(orjson.loads(raw))
                    problem = None if ok else f"HTTP {resp.status}: {raw[:200]!r}"
            except Exception as exc:  # a refused or reset connection is an error, not a crash
                problem = f"{type(exc).__name__}: {exc}"
            finished = time.perf_counter()
            if problem is not None:
                errors.append(problem)
            elif window_start <= finished < window_end:
                latencies.append((finished - sent) * 1000)
                done_texts += call.texts

    async with aiohttp.ClientSession(connector=connector, timeout=session_timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = seconds if seconds else time.perf_counter() - began
    return Report(clients, len(latencies), done_texts, len(errors), elapsed, latencies, errors, cursor)


def build_calls(api: str, task: str, seed: int, count: int, model: str = "bench", single: bool = False) -> list[Call]:
    if task == "rerank":
        return rerank_calls(api, workload.rerank_requests(seed, count), model)
    if single:
        return embed_calls(api, [[t] for t in workload.single_texts(seed, count)], model)
    return embed_calls(api, workload.requests(seed, count), model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:3000")
    p.add_argument("--api", choices=sorted(EMBED_ROUTES), default="tei")
    p.add_argument("--task", choices=["embed", "rerank"], default="embed")
    p.add_argument("--model", default="bench", help="`model` field for the openai / infinity dialects")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--single", action="store_true", help="one text per request (latency)")
    p.add_argument("--warmup", type=int, default=32, help="requests sent first and not counted")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seconds", type=float, help="cycle the workload for this long instead of --requests once")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args()
    if "127.0.0.1" not in args.url and "localhost" not in args.url:
        sys.exit("loadgen only targets this machine (127.0.0.1 / localhost)")
    if args.warmup:
        warm = build_calls(args.api, args.task, args.seed + 1, args.warmup, args.model, args.single)
        asyncio.run(run(args.url, warm, args.clients))
    calls = build_calls(args.api, args.task, args.seed, args.requests, args.model, args.single)
    report = asyncio.run(run(args.url, calls, args.clients, args.seconds))
    print(json.dumps(report.summary()) if args.json else report.line())


if __name__ == "__main__":
    main()

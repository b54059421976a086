"""Inside the loopback-only namespace: start `text-embeddings-router --ray-replicas 2`, send the TEI
API subset, a flood, and write every answer to a JSON file for tests/test_ray.py to judge.

    python serve_check.py OUT.json [router flags...]
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

OUT, FLAGS = sys.argv[1], sys.argv[2:]
READY_S = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int):
    router = os.path.join(os.path.dirname(sys.executable), "text-embeddings-router")
    cmd = [router, "--hostname", "127.0.0.1", "--port", str(port), "--ray-replicas", "2", *FLAGS]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if "tei: Ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(READY_S):
        proc.kill()
        raise SystemExit("the router was not ready in time:\n" + "".join(lines[-40:]))
    return proc, lines


def answer(r: httpx.Response) -> dict:
    try:
        body = r.json()
    except ValueError:
        body = r.text
    return {"status": r.status_code, "body": body, "replica": r.headers.get("x-tei-replica"),
            "retry_after": r.headers.get("retry-after"), "cors": r.headers.get("access-control-allow-origin")}


async def scenario(base: str) -> dict:
    texts = ["What is deep learning?", "Ünïcödé 深度学习", "hello"]
    out: dict = {}
    async with httpx.AsyncClient(base_url=base, timeout=120) as c:
        out["health"] = answer(await c.get("/health"))
        out["info"] = answer(await c.get("/info"))
        out["embed"] = answer(await c.post("/embed", json={"inputs": texts}))
        out["openai"] = answer(await c.post("/v1/embeddings", json={"input": texts, "model": "x"}))
        out["rerank"] = answer(await c.post("/rerank", json={"query": texts[0], "texts": texts[1:] + [texts[0]]}))
        out["tokenize"] = answer(await c.post("/tokenize", json={"inputs": "hello world"}))
        out["empty"] = answer(await c.post("/embed", json={"inputs": ""}))
        out["openai_empty"] = answer(await c.post("/v1/embeddings", json={"input": "", "model": "x"}))
        out["bad_json"] = answer(await c.post("/embed", content=b"{", headers={"content-type": "application/json"}))
        out["too_many"] = answer(await c.post("/embed", json={"inputs": ["a"] * 40}))  # > max-client-batch-size
        out["over_permits"] = answer(await c.post("/embed", json={"inputs": ["a"] * 12}))  # > max-concurrent-requests
        # Few at a time: Serve spreads them over both replicas (power of two choices). Its view of
        # the replicas' queues lags, so one may be refused (429, Retry-After): retry, as a client would.
        sem = asyncio.Semaphore(3)

        async def one(i):
            async with sem:
                for _ in range(10):
                    r = await c.post("/embed", json={"inputs": f"spread {i}"})
                    if r.status_code != 429:
                        break
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                return answer(r)

        out["spread"] = await asyncio.gather(*(one(i) for i in range(40)))
        # A flood: far more at once than replicas x max-ongoing + queue. Only 200 and 429 may answer.
        # 4 items a request: a replica's 2 in flight fit its 8 permits, so what is refused is refused
        # by the ingress (its queue for the replicas is full), which must answer as TEI does. A
        # browser's Origin header: the refusal passes the CORS layer too.
        long = " ".join(["retrieval augmented generation"] * 80)
        origin = {"origin": "http://example.com"}
        start = time.monotonic()
        out["flood"] = await asyncio.gather(*(c.post("/embed", json={"inputs": [long] * 4}, headers=origin)
                                              for _ in range(64)))
        out["flood"] = [answer(r) for r in out["flood"]]
        out["flood_seconds"] = time.monotonic() - start
        out["openai_flood"] = await asyncio.gather(*(c.post("/v1/embeddings", json={"input": [long] * 4, "model": "x"})
                                                     for _ in range(32)))
        out["openai_flood"] = [answer(r) for r in out["openai_flood"]]
        out["after_flood"] = answer(await c.post("/embed", json={"inputs": "still serving"}))
    return out


def main() -> None:
    port = free_port()
    proc, lines = start(port)
    try:
        result = asyncio.run(scenario(f"http://127.0.0.1:{port}"))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            result_code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            result_code = None
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the router's session left behind
        except ProcessLookupError:
            pass
    result["exit_code"] = result_code
    result["log"] = lines
    with open(OUT, "w") as f:
        json.dump(result, f)


main()

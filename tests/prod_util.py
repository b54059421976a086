"""Helpers for the production-surface tests: a tiny model folder and an in-process HTTP server."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from tiny_models import build_embedding_model


def tiny_embedder(models_dir: Path, max_seq_length: int = 32) -> Path:
    """A small BERT sentence-transformers folder (built once per session and length)."""
    folder = models_dir / f"prod-embed-{max_seq_length}"
    if not (folder / "modules.json").is_file():
        build_embedding_model(folder, "bert", pooling="mean", seed=5, max_seq_length=max_seq_length)
    return folder


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class ThreadedServer:
    """uvicorn serving an ASGI app on 127.0.0.1 from a thread: a real HTTP server over an Engine
    the test can reach into (to make its model fail, for instance)."""

    def __init__(self, app):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("in-process server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)

"""Build an in-process Engine from a model folder, as the server does, for parity tests."""
from __future__ import annotations

import asyncio
from pathlib import Path

from tei.app import build_engine
from tei.settings import Settings


def engine_for(folder: Path | str, **settings):
    return build_engine(Settings(model_id=str(folder), device="cpu", **settings))


def run(coro):
    return asyncio.run(coro)


def cosine(a, b):
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

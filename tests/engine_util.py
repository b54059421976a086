"""Build an in-process Engine from a model folder, as the server does, for parity tests."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tei.app import build_engine
from tei.settings import ModelSettings


# TEI_TEST_DEVICE=cuda reruns the CPU parity tests on a GPU, in float32 so the CPU bars still hold.
TEST_DEVICE = os.environ.get("TEI_TEST_DEVICE", "cpu")


def engine_for(folder: Path | str, **settings):
    return build_engine(
        ModelSettings.from_options(model_id=str(folder), device=TEST_DEVICE, **{"dtype": "float32", **settings})
    )


def run(coro):
    return asyncio.run(coro)


def late_outputs(folder: Path | str, queries: list[str], docs: list[str], alone: int = 2):
    """A multi-vector model's query vectors, document vectors (batched, and the last `alone`
    documents one by one) and MaxSim rerank scores of the first query over the documents."""
    engine = engine_for(folder)
    try:
        q = run(engine.embed_multi_vector(queries, is_query=True)).values
        d = run(engine.embed_multi_vector(docs)).values
        single = [run(engine.embed_multi_vector([t])).values[0] for t in docs[-alone:]]
        scores = run(engine.rerank(queries[0], docs)).values
    finally:
        engine.close()
    return q, d, single, scores


def cosine(a, b):
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

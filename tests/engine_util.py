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


def cosine(a, b):
    import numpy as np

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

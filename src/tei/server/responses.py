"""Fast JSON responses (orjson serializes numpy arrays directly) and TEI's x-compute-* headers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi.responses import Response

if TYPE_CHECKING:  # the engine loads torch; error bodies (server/edge.py, the Ray ingress) must not
    from ..engine.engine import Usage

_OPTS = orjson.OPT_SERIALIZE_NUMPY


class JSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=_OPTS)


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def compute_headers(usage: Usage) -> dict[str, str]:
    return {
        "x-compute-type": "cpu+optimized",
        "x-compute-time": _ms(usage.total_time),
        "x-compute-characters": str(usage.chars),
        "x-compute-tokens": str(usage.tokens),
        "x-total-time": _ms(usage.total_time),
        "x-tokenization-time": _ms(usage.tokenization_time),
        "x-queue-time": _ms(usage.queue_time),
        "x-inference-time": _ms(usage.inference_time),
    }


def with_usage(content, usage: Usage) -> JSON:
    return JSON(content, headers=compute_headers(usage))

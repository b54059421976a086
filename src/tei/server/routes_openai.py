"""OpenAI-compatible embeddings: /v1/embeddings and /embeddings."""
from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request

from ..engine.engines import EMBED
from .models import engine_of
from .responses import with_usage
from .schemas import OpenAIEmbedRequest, items

router = APIRouter()


async def openai_embeddings(req: OpenAIEmbedRequest, request: Request):
    engine = engine_of(request, EMBED, req.model)
    # TEI: server-side auto-truncate, right side, default prompt, always normalized (after `dimensions`).
    result = await engine.embed(items(req.input), normalize=True, dimensions=req.dimensions)
    body = embeddings_body(result.values, req.encoding_format, engine.name, result.usage.tokens)
    return with_usage(body, result.usage)


def embeddings_body(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> dict:
    """OpenAI's embeddings list; also the body of each line of an OpenAI batch output (tei.batch)."""
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        data = [
            {"object": "embedding", "embedding": base64.b64encode(row.tobytes()).decode("ascii"), "index": i}
            for i, row in enumerate(little)
        ]
    else:
        data = [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(vectors)]
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


for _path in ("/v1/embeddings", "/embeddings"):
    router.add_api_route(
        _path, openai_embeddings, methods=["POST"], tags=["OpenAI"], summary="OpenAI-compatible embeddings"
    )

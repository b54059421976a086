"""/embed_multi_vector: one list of per-token vectors per input (BGE-M3's ColBERT head, ColBERT
models). Not a TEI route: TEI has no multi-vector output (TEI #141)."""
from __future__ import annotations

from fastapi import APIRouter

from ..engine.engine import Engine
from ..engine.engines import EMBED
from .models import engine_for

from .responses import with_usage
from .schemas import EmbedAllRequest, items

router = APIRouter()


class EmbedMultiVectorRequest(EmbedAllRequest):
    # Queries get the model's query marker and expansion tokens; documents its document marker and skiplist.
    is_query: bool = False


@router.post("/embed_multi_vector", tags=["Text Embeddings Inference"],
             summary="Get multi-vector (ColBERT) embeddings: one vector per token")
async def embed_multi_vector(req: EmbedMultiVectorRequest, engine: Engine = engine_for(EMBED)):
    result = await engine.embed_multi_vector(
        items(req.inputs), truncate=req.truncate, truncation_direction=req.truncation_direction.lower(),
        prompt_name=req.prompt_name, is_query=req.is_query,
    )
    return with_usage(result.values, result.usage)

"""/rerank (TEI's and Cohere/Jina's dialects, one handler on three paths) and /predict.

The dialect follows the body, not the path: `texts` is TEI's and gets a bare list, `documents` is
Cohere's and Jina's and gets `{"results": ...}`. Dify's OpenAI-compatible provider and FastGPT send
`documents` to `/rerank` or `/v1/rerank`; Dify's TEI provider and tei-client send `texts` to `/rerank`.
Scores stay numpy float32, which orjson writes as TEI does (the shortest f32 form: 0.9997739).
"""
from __future__ import annotations

import uuid

from fastapi import APIRouter, Request

from ..engine import scores
from ..engine.engine import Engine
from ..engine.engines import PREDICT, RERANK
from ..engine.errors import EmptyInput
from .models import engine_for, engine_of
from .responses import with_usage
from .schemas_rerank import COHERE, TEI, PredictRequest, RerankRequest

router = APIRouter()
RERANK_PATHS = ("/rerank", "/v1/rerank", "/v2/rerank")


async def rerank(req: RerankRequest, request: Request):
    return await rerank_with(engine_of(request, RERANK, req.model), req)


async def rerank_with(engine: Engine, req: RerankRequest):
    texts = req.document_texts
    if not texts:  # named as the client named it
        raise EmptyInput(f"`{'texts' if req.dialect == TEI else 'documents'}` cannot be empty")
    result = await engine.rerank(
        req.query_text,
        texts,
        truncate=req.truncate,
        truncation_direction=req.truncation_direction.lower(),
        raw_scores=req.raw_scores,
        instruction=req.instruction,
    )
    values = result.values
    order = scores.ranking(values, req.top_n)
    if req.dialect == COHERE:
        body = _cohere_body(req, values, order, engine.name, result.usage.tokens)
    else:
        body = [_tei_rank(int(i), values[i], texts, req.want_text) for i in order]
    return with_usage(body, result.usage)


def _tei_rank(index: int, score, texts, want_text: bool) -> dict:
    rank = {"index": index, "score": score}
    if want_text:  # TEI omits the key (never null) unless asked
        rank["text"] = texts[index]
    return rank


def _cohere_body(req: RerankRequest, values, order, model_name: str, tokens: int) -> dict:
    results = []
    for i in order:
        i = int(i)
        item = {"index": i, "relevance_score": values[i]}
        if req.want_text:
            doc = req.documents[i]
            # Cohere echoes an object document with all its fields; never a bare string (Dify reads `.text`).
            item["document"] = doc if isinstance(doc, dict) else {"text": doc}
        results.append(item)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        # The model that ranked: the served name, whatever alias (or, with one model, name) the client sent.
        "model": model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "meta": {"tokens": {"input_tokens": tokens, "output_tokens": 0}},
    }


for _path in RERANK_PATHS:
    router.add_api_route(
        _path,
        rerank,
        methods=["POST"],
        tags=["Rerank"],
        summary="Rerank documents: TEI's `texts` or Cohere/Jina's `documents`",
    )


@router.post("/predict", tags=["Text Embeddings Inference"], summary="Classify texts or pairs")
async def predict(req: PredictRequest, engine: Engine = engine_for(PREDICT)):
    result = await engine.predict(
        req.sequences,
        truncate=req.truncate,
        truncation_direction=req.truncation_direction.lower(),
        raw_scores=req.raw_scores,
    )
    labels = engine.spec.id2label
    rows = [[{"score": row[j], "label": labels[str(int(j))]} for j in scores.ranking(row)] for row in result.values]
    return with_usage(rows if req.is_batch else rows[0], result.usage)

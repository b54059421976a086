"""GET /metrics on the main port: TEI's Prometheus text (the gRPC mode's own port lives in tei.metrics)."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .. import metrics

router = APIRouter()


@router.get("/metrics", tags=["Text Embeddings Inference"], summary="Prometheus metrics",
            response_class=Response)
async def prometheus_metrics():
    return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

"""The FastAPI application: routes grouped by dialect, TEI's errors, and the default `POST /` task."""
from __future__ import annotations

from fastapi import FastAPI, Request

from .. import __version__
from . import errors, routes_openai, routes_rerank, routes_tei
from .schemas import EmbedRequest, read_json, validate
from .schemas_rerank import PredictRequest, RerankRequest


def create_app(engine, settings) -> FastAPI:
    app = FastAPI(
        title="Text Embeddings Inference",
        version=__version__,
        description="A TEI-compatible text embedding, reranker and sequence-classification server",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.info = routes_tei.info_body(settings, engine)
    errors.install(app)
    app.include_router(routes_tei.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_rerank.router)

    @app.get("/api-doc/openapi.json", include_in_schema=False)
    async def _openapi_alias():
        return app.openapi()

    @app.post("/", tags=["Text Embeddings Inference"], summary="Default task of the model")
    @app.post("/invocations", include_in_schema=False)
    async def _default_task(request: Request):
        # TEI dispatches by model type: classifier → /predict, reranker → /rerank, embedding → /embed.
        data = await read_json(request)
        kind = engine.spec.kind
        if kind == "embedding":
            return await routes_tei.embed(validate(EmbedRequest, data), request)
        if kind == "reranker" and not (isinstance(data, dict) and "inputs" in data):
            return await routes_rerank.rerank(validate(RerankRequest, data), request)
        # A classifier, or a reranker sent `inputs` (huggingface_hub's text_classification): /predict.
        return await routes_rerank.predict(validate(PredictRequest, data), request)

    return app

"""The FastAPI application: routes grouped by dialect, TEI's errors, and the default `POST /` task."""
from __future__ import annotations

from fastapi import FastAPI, Request

from .. import __version__
from ..engine.errors import WrongModelType
from . import errors, routes_openai, routes_tei
from .schemas import EmbedRequest, parse_body


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

    @app.get("/api-doc/openapi.json", include_in_schema=False)
    async def _openapi_alias():
        return app.openapi()

    @app.post("/", tags=["Text Embeddings Inference"], summary="Default task of the model")
    @app.post("/invocations", include_in_schema=False)
    async def _default_task(request: Request):
        # TEI dispatches by model type: embedding → /embed (classifier → /predict, reranker → /rerank).
        if engine.spec.kind == "embedding":
            return await routes_tei.embed(await parse_body(EmbedRequest, request), request)
        raise WrongModelType(f"no default task for a {engine.spec.kind} model yet")

    return app

"""The FastAPI application: routes grouped by dialect, TEI's errors, and the default `POST /` task."""
from __future__ import annotations

from fastapi import FastAPI, Request

from .. import __version__
from ..engine.engine import Engine
from ..engine.engines import Engines
from . import edge, errors, metrics, models, routes_late, routes_openai, routes_rerank, routes_tei
from .limits import PayloadLimit
from .schemas import EmbedAllRequest, EmbedRequest, SimilarityRequest, read_json, validate
from .schemas_rerank import PredictRequest, RerankRequest
from .tracing import RequestSpans


def create_app(engines, settings) -> FastAPI:
    """The HTTP app over `engines` (an Engines registry, or one Engine: then served as the only model)."""
    if isinstance(engines, Engine):
        engines = Engines([(settings.model, engines)])
    app = FastAPI(
        title="Text Embeddings Inference",
        version=__version__,
        description="A TEI-compatible text embedding, reranker and sequence-classification server",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.engines = engines
    app.state.settings = settings
    app.state.infos = routes_tei.info_bodies(engines)
    errors.install(app)
    app.include_router(routes_tei.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_rerank.router)
    app.include_router(routes_late.router)
    app.include_router(metrics.router)
    app.include_router(models.router)
    install_middleware(app, settings, engines.names)

    @app.get("/api-doc/openapi.json", include_in_schema=False)
    async def _openapi_alias():
        return app.openapi()

    @app.post("/", tags=["Text Embeddings Inference"], summary="Default task of the model")
    @app.post("/invocations", include_in_schema=False)
    async def _default_task(request: Request, engine: Engine = models.engine_for()):
        # TEI dispatches by model type: classifier → /predict, reranker → /rerank, embedding → /embed
        # (/embed_sparse with SPLADE pooling). With several models: the default (or prefix's) model.
        data = await read_json(request)
        kind = engine.spec.kind
        if kind == "embedding" and _similarity_body(data, settings):
            # huggingface_hub's InferenceClient.sentence_similarity sends this body whatever TASK says
            return await routes_tei.similarity(validate(SimilarityRequest, data), engine)
        if engine.splade:
            return await routes_tei.embed_sparse(validate(EmbedAllRequest, data), engine)
        if kind == "embedding":
            return await routes_tei.embed(validate(EmbedRequest, data), engine)
        if kind == "reranker" and not (isinstance(data, dict) and "inputs" in data):
            return await routes_rerank.rerank_with(engine, validate(RerankRequest, data))
        # A classifier, or a reranker sent `inputs` (huggingface_hub's text_classification): /predict.
        return await routes_rerank.predict(validate(PredictRequest, data), engine)

    return app


def _similarity_body(data, settings) -> bool:
    inputs = data.get("inputs") if isinstance(data, dict) else None
    return isinstance(inputs, dict) or getattr(settings, "task", None) == "sentence-similarity"


def under_root_path(app: FastAPI, prefix: str):
    """--root-path: every route served under `prefix` (and nothing outside it)."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[Mount(prefix, app=app)])


def install_middleware(app: FastAPI, settings, names: list[str]) -> None:
    """Outermost first: the edge layers (CORS, auth, model prefix: server/edge.py), payload limit,
    request span. (Starlette runs the last added first.)"""
    if settings.otlp_endpoint or (settings.json_output and not settings.disable_spans):
        app.add_middleware(RequestSpans)
    app.add_middleware(PayloadLimit, limit=settings.payload_limit)
    for cls, options in reversed(edge.layers(settings, names)):
        app.add_middleware(cls, **options)

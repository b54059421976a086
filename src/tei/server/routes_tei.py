"""TEI's native routes: /embed, /embed_all, /embed_sparse, /similarity, /tokenize, /decode, /info, /health."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .. import __version__
from ..engine.engine import Engine
from ..engine.engines import EMBED, SPARSE, Engines
from ..engine.errors import EmptyInput
from ..settings import DEFAULT_MODEL_ID
from .models import engine_for, engines_of, model_card, prefixed
from .responses import JSON, with_usage
from .schemas import (
    DecodeRequest, EmbedAllRequest, EmbedRequest, SimilarityParameters, SimilarityRequest, TokenizeRequest, items,
)

router = APIRouter()


def _input_options(body) -> dict:
    """A body's truncate, truncation_direction and prompt_name, as the Engine's operations take them."""
    return {"truncate": body.truncate, "truncation_direction": body.truncation_direction.lower(),
            "prompt_name": body.prompt_name}


@router.post("/embed", tags=["Text Embeddings Inference"], summary="Get embeddings")
async def embed(req: EmbedRequest, engine: Engine = engine_for(EMBED)):
    result = await engine.embed(
        items(req.inputs), **_input_options(req), normalize=req.normalize, dimensions=req.dimensions
    )
    return with_usage(result.values, result.usage)


@router.post("/embed_all", tags=["Text Embeddings Inference"], summary="Get all token embeddings")
async def embed_all(req: EmbedAllRequest, engine: Engine = engine_for(EMBED)):
    result = await engine.embed_all(items(req.inputs), **_input_options(req))
    return with_usage(result.values, result.usage)


@router.post("/embed_sparse", tags=["Text Embeddings Inference"], summary="Get sparse embeddings (SPLADE)")
async def embed_sparse(req: EmbedAllRequest, engine: Engine = engine_for(SPARSE)):
    result = await engine.embed_sparse(items(req.inputs), **_input_options(req))
    sparse = [[{"index": i, "value": v} for i, v in zip(indices.tolist(), values)] for indices, values in result.values]
    return with_usage(sparse, result.usage)


@router.post("/similarity", tags=["Text Embeddings Inference"], summary="Cosine similarity to a source")
async def similarity(req: SimilarityRequest, engine: Engine = engine_for(EMBED)):
    if not req.inputs.sentences:
        raise EmptyInput("`inputs.sentences` cannot be empty")
    result = await engine.embed(
        [req.inputs.source_sentence, *req.inputs.sentences],
        **_input_options(req.parameters or SimilarityParameters()),
        normalize=True,
    )
    vectors = result.values
    return with_usage(vectors[1:] @ vectors[0], result.usage)


@router.post("/tokenize", tags=["Text Embeddings Inference"], summary="Tokenize inputs")
async def tokenize(req: TokenizeRequest, engine: Engine = engine_for()):
    texts = [req.inputs] if isinstance(req.inputs, str) else req.inputs
    tokens = await engine.tokenize(texts, req.add_special_tokens, req.prompt_name)
    return JSON(tokens)


@router.post("/decode", tags=["Text Embeddings Inference"], summary="Decode token ids")
async def decode(req: DecodeRequest, engine: Engine = engine_for()):
    ids = req.ids
    batches = [ids] if not ids or isinstance(ids[0], int) else ids
    return JSON(await engine.decode(batches, req.skip_special_tokens))


@router.get("/info", tags=["Text Embeddings Inference"], summary="Model and server info")
async def info(request: Request):
    """The default model's /info (a prefix's model under /models/{name}/info); with several models
    served, the unprefixed one also lists them all."""
    infos = request.app.state.infos
    name = prefixed(request)
    return JSON(infos[name] if name else infos[None])


async def _health(request: Request):
    """Every model (unprefixed), or the prefix's model: a real one-token forward each."""
    name = prefixed(request)
    healthy = await (engines_of(request).get(name).health() if name else engines_of(request).health())
    if healthy:
        return Response(status_code=200)
    return JSON({"error": "unhealthy", "error_type": "Unhealthy"}, status_code=503)


for _path in ("/health", "/ping", "/"):
    router.add_api_route(_path, _health, methods=["GET"], tags=["Text Embeddings Inference"], summary="Health")


def info_bodies(engines: Engines) -> dict:
    """/info per served name, and under None the unprefixed one: the default model's, plus a
    `models` list when there is more than one (a one-model server answers exactly as TEI)."""
    bodies = {name: info_body(engines.settings(name), engines.get(name)) for name in engines.names}
    bodies[None] = dict(bodies[engines.default.name])
    if len(engines) > 1:
        bodies[None]["models"] = [model_card(engines, name) for name in engines.names]
    return bodies


def info_body(settings, engine) -> dict:
    """/info of one model, keys in TEI's order."""
    spec = engine.spec
    if spec.kind == "embedding":
        model_type = {"embedding": {"pooling": spec.pooling}}
    else:
        model_type = {spec.kind: {"id2label": spec.id2label, "label2id": spec.label2id}}
    cfg = engine.config
    return {
        "model_id": settings.model_id or DEFAULT_MODEL_ID,
        "model_sha": settings.revision,
        "model_dtype": engine.model.placement.dtype_name,
        "served_model_name": engine.name,
        "model_type": model_type,
        "max_concurrent_requests": cfg.max_concurrent_requests,
        "max_input_length": engine.max_input_length,
        "max_batch_tokens": cfg.max_batch_tokens,
        "max_batch_requests": cfg.max_batch_requests,
        "max_client_batch_size": cfg.max_client_batch_size,
        "auto_truncate": cfg.auto_truncate,
        "tokenization_workers": cfg.tokenization_workers,
        "version": __version__,
        "sha": None,
        "docker_label": None,
        # Not in TEI (clients ignore unknown keys): how /rerank scores, and how many documents it takes.
        "rerank": _rerank_info(engine),
    }


RERANK_SCORING = {"reranker": "cross-encoder", "embedding": "cosine-similarity"}


def _rerank_info(engine) -> dict | None:
    scoring = "maxsim" if getattr(engine, "maxsim_rerank", False) else RERANK_SCORING.get(engine.spec.kind)
    if scoring is None:  # a multi-label classifier cannot rank
        return None
    return {"scoring": scoring, "max_documents": engine.rerank_limit}


"""Which served model a request reaches, and GET /v1/models.

In order: a `/models/{served-name}/...` prefix (every route is served under one per model, so a
client that takes only a base URL, like Dify's TEI provider, can be pointed at one model); then the
body's `model` field (OpenAI, Cohere and Jina bodies); then the first model fit for the route's task. (The prefix itself is cut by
server/edge.py's ModelPrefix, outside the routes.)
"""
from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from ..engine.engine import Engine
from ..engine.engines import ANY, Engines
from .edge import SCOPE_KEY
from .responses import JSON

STARTED = int(time.time())


def engines_of(request: Request) -> Engines:
    return request.app.state.engines


def prefixed(request: Request) -> str | None:
    """The served name the URL prefix selected, if any."""
    return request.scope.get(SCOPE_KEY)


def engine_of(request: Request, task: str = ANY, model: str | None = None) -> Engine:
    """The Engine for this request: the URL prefix wins over the body's `model`, which wins over the
    task's default. UnknownModel (404) for a name that is not served."""
    engines = engines_of(request)
    name = prefixed(request)
    return engines.get(name) if name else engines.resolve(model, task)


def engine_for(task: str = ANY):
    """A FastAPI dependency: the Engine of a route whose body names no model."""

    async def dependency(request: Request) -> Engine:  # async: FastAPI runs a plain def on a worker thread
        return engine_of(request, task)

    return Depends(dependency)


def model_card(engines: Engines, name: str) -> dict:
    """One model as OpenAI's /v1/models lists it, plus its kind (what Open WebUI and Dify filter on)."""
    engine = engines.get(name)
    kind = "sparse-embedding" if engine.splade else engine.spec.kind
    return {"id": name, "object": "model", "created": STARTED, "owned_by": "tei", "kind": kind,
            "model_id": getattr(engines.settings(name), "model_id", None) or name}


router = APIRouter()


@router.get("/v1/models", tags=["OpenAI"], summary="The served models (OpenAI format)")
async def list_models(request: Request):
    engines = engines_of(request)
    return JSON({"object": "list", "data": [model_card(engines, name) for name in engines.names]})


@router.get("/v1/models/{name:path}", tags=["OpenAI"], summary="One served model (OpenAI format)")
async def retrieve_model(name: str, request: Request):
    engines = engines_of(request)
    return JSON(model_card(engines, engines.get(name).name))

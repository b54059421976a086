"""TEI's error body `{"error", "error_type"}` and status codes, for every failure a client can cause."""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.errors import BatchTooLarge, EngineError, UnknownModel, WrongModelType
from .responses import JSON

log = logging.getLogger(__name__)

STATUS = {
    "Validation": 422,
    "Empty": 422,
    "Tokenizer": 422,
    "Overloaded": 429,
    "Backend": 424,
    "Unhealthy": 503,
    "NotFound": 404,
}
OPENAI_PREFIXES = ("/v1/embeddings", "/embeddings")


def error_json(path: str, status: int, message: str, kind: str, headers: dict | None = None) -> JSON:
    body = {"error": message, "error_type": kind}
    if path in OPENAI_PREFIXES:
        # TEI's OpenAI route answers {"message", "code", "type"}; keep TEI's keys too.
        body.update({"message": message, "code": status, "type": kind})
    return JSON(body, status_code=status, headers=headers)


def error_response(request: Request, status: int, message: str, kind: str) -> JSON:
    return error_json(request.url.path, status, message, kind)


def unknown_model_json(path: str, exc: UnknownModel) -> JSON:
    """OpenAI's `model_not_found` body on /v1/... (the SDKs raise NotFoundError with its message),
    TEI's shape elsewhere."""
    if path.startswith("/v1/"):
        body = {"error": {"message": exc.message, "type": "invalid_request_error", "param": "model",
                          "code": "model_not_found"}}
        return JSON(body, status_code=404)
    return error_json(path, 404, exc.message, exc.kind)


def status_of(exc: EngineError) -> int:
    if isinstance(exc, BatchTooLarge):
        return 413
    return STATUS.get(exc.kind, 424)


def _describe(errors) -> tuple[int, str]:
    for err in errors:
        if err.get("type") == "json_invalid":
            return 400, f"Failed to parse the request body as JSON: {err.get('msg', '')}"
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", "invalid"))
    return 422, "Failed to deserialize the JSON body into the target type: " + "; ".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, exc: UnknownModel):
        log.warning("%s", exc.message)
        return unknown_model_json(request.url.path, exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError):
        # As TEI, every refused request leaves a line (inside the request's span in JSON logs).
        # A route that does not fit the model is the caller's mistake: a warning, not a backend error.
        failed = exc.kind == "Backend" and not isinstance(exc, WrongModelType)
        log.log(logging.ERROR if failed else logging.WARNING, "%s", exc.message)
        return error_response(request, status_of(exc), exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        status, message = _describe(exc.errors())
        return error_response(request, status, message, "Validation")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        kind = "Validation" if exc.status_code < 500 else "Backend"
        return error_response(request, exc.status_code, str(exc.detail), kind)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("Unhandled error on %s", request.url.path)
        return error_response(request, 424, f"Backend error: {exc}", "Backend")

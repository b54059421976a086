"""OpenAI batch files: each input line is a request (`custom_id`, `method`, `url`, `body`), each
output line its answer, in the shape `vllm run-batch` and OpenAI's Batch API write:

    {"id": "batch_req_…", "custom_id": "…", "response": {"status_code": 200, "request_id": "…",
     "body": {…the /v1/embeddings answer…}}, "error": null}

A request that fails gets its status code in `response` (body null) and `{"code", "message"}` in
`error`; the job goes on.
"""
from __future__ import annotations

import orjson

from ..engine.errors import EngineError
from .job import dumps, request_id

URLS = ("/v1/embeddings",)


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


async def answer(engine, model_name: str, line: str | None, invalid: str | None) -> tuple[str, str | None]:
    """(the output line, the error message or None)."""
    from ..server.errors import status_of
    from ..server.routes_openai import embeddings_body

    request = orjson.loads(line) if line else {}
    custom_id = request.get("custom_id")
    try:
        if invalid:
            raise RequestError(400, invalid)
        req = _parse(request)
        result = await engine.embed(req["input"], normalize=True, dimensions=req["dimensions"])
        body = embeddings_body(result.values, req["encoding_format"], model_name, result.usage.tokens)
        return _line(custom_id, 200, body, None), None
    except RequestError as exc:
        return _line(custom_id, exc.status, None, exc.message), exc.message
    except EngineError as exc:
        return _line(custom_id, status_of(exc), None, exc.message), exc.message


def waves(requests: list, errors: list, budget: int) -> list[list[int]]:
    """Consecutive groups of request indexes whose inputs add up to at most `budget` items."""
    out: list[list[int]] = [[]]
    used = 0
    for i, (line, error) in enumerate(zip(requests, errors)):
        n = 1 if error or not line else _size(orjson.loads(line).get("body"))
        if out[-1] and used + n > budget:
            out.append([])
            used = 0
        out[-1].append(i)
        used += n
    return [w for w in out if w]


def _size(body) -> int:
    inputs = body.get("input") if isinstance(body, dict) else None
    if isinstance(inputs, list) and inputs and not all(isinstance(x, int) for x in inputs):
        return len(inputs)
    return 1


def _parse(request: dict) -> dict:
    from pydantic import ValidationError

    from ..server.schemas import OpenAIEmbedRequest, items

    url = request.get("url")
    if url not in URLS:
        raise RequestError(400, f"url {url!r} is not supported; supported: {', '.join(URLS)}")
    method = str(request.get("method", "POST")).upper()
    if method != "POST":
        raise RequestError(400, f"method {method} is not supported; use POST")
    try:
        body = OpenAIEmbedRequest.model_validate(request.get("body"))
    except ValidationError as exc:
        raise RequestError(400, f"invalid body: {exc.errors()[0].get('msg', 'invalid')}") from None
    return {"input": items(body.input), "dimensions": body.dimensions, "encoding_format": body.encoding_format}


def _line(custom_id, status: int, body: dict | None, error: str | None) -> str:
    return dumps({
        "id": f"batch_req_{request_id()}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"req_{request_id()}", "body": body},
        "error": None if error is None else {"code": str(status), "message": error},
    })

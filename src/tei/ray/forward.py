"""One HTTP exchange as plain data, so that it can cross a Ray Serve DeploymentHandle: the ingress
reads a Request off the wire, a replica runs our FastAPI app on it in-process and hands back a
Response. No Ray import here, and nothing that loads the engine."""
from __future__ import annotations

import asyncio
import dataclasses

# What the app reads from an ASGI http scope: plain values, which pickle (Serve's own keys stay behind).
SCOPE_KEYS = ("type", "asgi", "http_version", "method", "scheme", "path", "raw_path", "root_path",
              "query_string", "headers", "client", "server")


@dataclasses.dataclass
class Request:
    scope: dict
    body: bytes


@dataclasses.dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


async def read_request(scope, receive, limit: int) -> Request | None:
    """The request, its body read up to `limit` bytes (and one chunk more); None if the client left.

    A body over the limit is not buffered here: the replica's --payload-limit layer then refuses it
    with TEI's 413 at the same point of the middleware stack as the plain server (a declared length
    over the limit is refused on the header alone, a chunked body on the bytes that did come)."""
    plain = {k: scope[k] for k in SCOPE_KEYS if k in scope}
    plain["headers"] = [(bytes(k), bytes(v)) for k, v in scope["headers"]]
    declared = _content_length(plain["headers"])
    chunks, size = [], 0
    if declared is None or declared <= limit:
        more = True
        while more and size <= limit:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
    return Request(plain, b"".join(chunks))


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def call_app(app, request: Request) -> Response:
    """Run the ASGI `app` on `request` in this process and collect its answer.

    Cancelling this call (the client left, Serve cancels the request) cancels the app's work, as a
    disconnect does under uvicorn."""
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await asyncio.Event().wait()  # never set: the client stays connected until the answer is sent
        return {"type": "http.disconnect"}

    start: dict | None = None
    chunks: list[bytes] = []

    async def send(message):
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(dict(request.scope), receive, send)
    except Exception:
        # Starlette's ServerErrorMiddleware sends the error handler's answer (our TEI body), then
        # re-raises for the server to log; the app has already logged it. The answer stands.
        if start is None:
            raise
    if start is None:
        raise RuntimeError(f"the app sent no answer to {request.scope.get('method')} {request.scope.get('path')}")
    headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
    return Response(start["status"], headers, b"".join(chunks))


async def send_response(response: Response, send) -> None:
    await send({"type": "http.response.start", "status": response.status, "headers": response.headers})
    await send({"type": "http.response.body", "body": response.body})


async def lifespan(receive, send) -> None:
    """An app with nothing to start or stop: Serve runs the ASGI lifespan and waits for the answers."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

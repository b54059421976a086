"""`--payload-limit`: request bodies above it get 413 before any route parses them."""
from __future__ import annotations

from .errors import error_json

MESSAGE = "Failed to buffer the request body: length limit exceeded"  # TEI's wording


class PayloadLimit:
    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared, chunked = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = int(value)  # the HTTP parser has already refused a malformed length
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > self.limit:
            return await self._refuse(scope, receive, send)
        if not chunked:  # a declared length within the limit, or no body at all
            return await self.app(scope, receive, send)
        # Chunked upload: no length up front. Read it here, up to the limit, then hand it on.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        await error_json(scope["path"], 413, MESSAGE, "Validation")(scope, receive, send)

"""Per-request context for traces and JSON logs: one server span per HTTP request."""
from __future__ import annotations

from .. import tracing
from .auth import is_public


class RequestSpans:
    """Sets the request that JSON log lines name, and with `--otlp-endpoint` opens its server span
    (parent: the caller's W3C `traceparent`). Health checks, metrics and docs are not traced."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_public(scope["method"], scope["path"]):
            return await self.app(scope, receive, send)
        method, path = scope["method"], scope["path"]
        token = tracing.current_request.set({"name": "request", "method": method, "path": path})
        try:
            if tracing.tracer is None:
                return await self.app(scope, receive, send)
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                       if k in (b"traceparent", b"tracestate")]
            with tracing.request_span(f"{method} {path}", headers, **{"http.request.method": method,
                                                                      "url.path": path}) as span:
                status = 500

                async def send_and_note(message):
                    nonlocal status
                    if message["type"] == "http.response.start":
                        status = message["status"]
                    await send(message)

                await self.app(scope, receive, send_and_note)
                route = scope.get("route")
                # Name by route template so unknown paths do not make new span names.
                span.update_name(f"{method} {route.path}" if route is not None else method)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR))
        finally:
            tracing.current_request.reset(token)

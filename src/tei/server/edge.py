"""The outer ASGI layers every answer passes, outermost first: CORS, --api-key, the model prefix.

The FastAPI app installs them (server/app.py); Ray Serve's ingress (tei.ray.serve) wraps its own
refusals in them, so a 429 written there has the same CORS headers, 401 and OpenAI-shaped body as
one written by a replica. Nothing here loads the engine (or torch): the ingress stays small."""
from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware

from ..engine.errors import UnknownModel
from .auth import ApiKeyAuth
from .errors import error_json

PREFIX = "/models/"
SCOPE_KEY = "tei.model"  # the served name a prefix selected, set by ModelPrefix


class ModelPrefix:
    """ASGI middleware: `/models/{name}/rest` is served as `/rest` for model `name`. Names may hold
    `/` (hub ids do), so the longest served name that fits wins."""

    def __init__(self, app, names: list[str]):
        self.app = app
        self.names = sorted(names, key=len, reverse=True)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)
        tail = scope["path"][len(PREFIX):]
        for name in self.names:
            if tail == name or tail.startswith(name + "/"):
                scope = {**scope, "path": tail[len(name):] or "/", SCOPE_KEY: name}
                return await self.app(scope, receive, send)
        message = UnknownModel(tail.split("/")[0], self.names).message
        await error_json(scope["path"], 404, message, "NotFound")(scope, receive, send)


def layers(settings, names: list[str]) -> list[tuple[type, dict]]:
    """(middleware class, options), outermost first. Auth sees the prefixed path: an unknown
    model's 404 needs the key too."""
    origins = list(settings.cors_allow_origin or ["*"])
    # TEI: any origin unless told, GET and POST, and only the content-type header.
    out: list[tuple[type, dict]] = [(CORSMiddleware, {
        "allow_origins": ["*"] if "*" in origins else origins,
        "allow_methods": ["GET", "POST"],
        "allow_headers": ["content-type"],
    })]
    if settings.api_key:
        out.append((ApiKeyAuth, {"api_key": settings.api_key}))
    out.append((ModelPrefix, {"names": names}))
    return out


def wrap(app, settings, names: list[str]):
    """`app` inside every edge layer."""
    for cls, options in reversed(layers(settings, names)):
        app = cls(app, **options)
    return app

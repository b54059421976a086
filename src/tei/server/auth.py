"""`--api-key`: one middleware guards every route except TEI's public ones, so routes added later
are protected without a line of their own."""
from __future__ import annotations

import hmac

from .errors import error_json

# TEI leaves health checks, metrics and the API docs open (GET / is a health check; POST / is not).
PUBLIC_GET = frozenset({"/health", "/", "/ping"})
PUBLIC_ANY = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/api-doc/openapi.json"})


def is_public(method: str, path: str) -> bool:
    if path.startswith("/models/"):  # a model's prefix (server/models.py): its health checks are as open
        path = "/" + path.rsplit("/", 1)[-1]
    return path in PUBLIC_ANY or (path in PUBLIC_GET and method in ("GET", "HEAD"))


class ApiKeyAuth:
    """Requires `Authorization: Bearer <key>`, byte for byte (TEI's rule), compared in constant time."""

    def __init__(self, app, api_key: str):
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or is_public(scope["method"], scope["path"]) or self._authorized(scope):
            return await self.app(scope, receive, send)
        # TEI answers 401 with an empty body; a JSON error in TEI's shape says why.
        response = error_json(scope["path"], 401, "No valid auth token", "Unauthorized",
                              headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _authorized(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                return hmac.compare_digest(value, self.expected)  # the first one counts, as in TEI
        return False

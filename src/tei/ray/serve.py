"""The whole TEI server on Ray Serve, in two deployments:

  TEIIngress  receives every HTTP request (Serve's proxy routes them all to it) and forwards it, as
              plain data (forward.py), through a DeploymentHandle. No engine, no torch, 0 CPUs.
  TEIReplica  N of them (or autoscaled): each builds our Engine and runs our FastAPI app (create_app)
              in-process on the forwarded request, so routes, dialects, headers and error bodies are
              the plain server's, byte for byte. Answers carry `x-tei-replica`.

Backpressure, from the inside out; every refusal is TEI's 429 body
(`{"error": "Model is overloaded", "error_type": "Overloaded"}`, OpenAI's keys added on /v1/embeddings):
  1. each replica's Engine admits --max-concurrent-requests items and refuses the rest;
  2. Serve sends a replica at most --ray-max-ongoing-requests requests at once;
  3. when every replica is full, each ingress replica's handle queues at most
     --ray-max-queued-requests and raises BackPressureError beyond that: the ingress answers it
     with TEI's 429 and Retry-After (Serve's proxy would write a plain-text body);
  4. the ingress itself takes twice what the replicas can hold, and Serve's proxy queues as many
     for it (options.py); only past both does the proxy refuse, with its own 429 + Retry-After (a
     plain-text body): never a 500, never an unbounded queue.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import threading

from ..settings import ServerSettings

log = logging.getLogger("tei")
APP_NAME = "tei"
REPLICA_HEADER = b"x-tei-replica"


class _ReplicaHeader:
    """Names the replica that answered (x-tei-replica): which one is slow, or did it spread out?"""

    def __init__(self, app, replica: str):
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self.replica)]}
            await send(message)

        await self.app(scope, receive, tagged)


class Ingress:
    """The ingress's ASGI app: every request to a replica through `handle`, and Serve's refusals
    answered in TEI's words, inside the same edge layers as the app (CORS, auth, model prefix)."""

    def __init__(self, handle, settings: ServerSettings):
        self.handle = handle.options(method_name="forward")
        self.settings = settings
        self.names = [model.name for model in settings.models]
        self.retry_after_s = settings.ray_serve.retry_after_s

    async def __call__(self, scope, receive, send):
        from .forward import lifespan, read_request, send_response

        if scope["type"] == "lifespan":
            return await lifespan(receive, send)
        if scope["type"] != "http":
            return  # TEI has no websocket routes
        request = await read_request(scope, receive, self.settings.payload_limit)
        if request is None:
            return  # the client left before its body arrived
        try:
            response = await self.handle.remote(request)
        except Exception as exc:
            return await self._refuse(exc, scope, receive, send)
        await send_response(response, send)

    async def _refuse(self, exc: Exception, scope, receive, send) -> None:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import (
            BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError, RequestCancelledError,
        )

        from ..engine.errors import Overloaded
        from ..server.edge import wrap
        from ..server.errors import error_json

        if isinstance(exc, RequestCancelledError):
            raise exc  # the client left: Serve logs it (499), nobody reads an answer
        headers = None
        if isinstance(exc, BackPressureError):
            # Every replica is full and this ingress's queue for them too: TEI's answer.
            error = Overloaded()
            status, message, kind = 429, error.message, error.kind
            retry = getattr(exc, "retry_after_s", None) or self.retry_after_s
            headers = {"Retry-After": str(max(0, math.ceil(retry)))}
        elif isinstance(exc, (DeploymentUnavailableError, ReplicaUnavailableError, RayActorError)):
            # No replica could take it (failed to deploy, or died with the request): /health's words.
            log.warning("No engine replica answered %s: %s", scope.get("path"), _first_line(exc))
            status, message, kind = 503, "unhealthy", "Unhealthy"
        else:
            # As the app's own handler for the unexpected (server/errors.py): logged, then 424.
            log.error("Forwarding %s failed", scope.get("path"), exc_info=exc)
            status, message, kind = 424, f"Backend error: {_first_line(exc)}", "Backend"

        async def refusal(scope, receive, send):
            await error_json(scope["path"], status, message, kind, headers)(scope, receive, send)

        await wrap(refusal, self.settings, self.names)(scope, receive, send)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _ingress_class():
    from ray import serve

    @serve.ingress()
    class TEIIngress:
        def __init__(self, replicas, settings: ServerSettings):
            self.asgi = Ingress(replicas, settings)

        def __serve_build_asgi_app__(self):
            return self.asgi

    return TEIIngress


def _replica_class():
    from ray import serve

    class TEIReplica:
        def __init__(self, settings: ServerSettings):
            from ..app import build_engines
            from ..server.app import create_app
            from .cluster import use_assigned_cpus

            use_assigned_cpus()
            self.settings = settings
            self.engines = build_engines(settings)
            replica = serve.get_replica_context().replica_id.unique_id
            # Called per request, without an ASGI lifespan: create_app has no start-up or shutdown
            # hooks (the engines are built above and closed in __del__).
            self.app = _ReplicaHeader(create_app(self.engines, settings), replica)

        async def forward(self, request):
            """One HTTP request from the ingress (forward.Request) -> forward.Response."""
            from .forward import call_app

            return await call_app(self.app, request)

        async def check_health(self) -> None:
            if not await self.engines.health():  # a real forward of a tiny input through every model
                raise RuntimeError("a model failed its health check")

        def __del__(self):
            engines = getattr(self, "engines", None)
            if engines is not None:
                engines.close()

    return TEIReplica


def application(settings: ServerSettings):
    from ray import serve

    options = settings.ray_serve
    replicas = serve.deployment(_replica_class(), name="TEIReplica", **options.deployment())
    ingress = serve.deployment(_ingress_class(), name="TEIIngress", **options.ingress_deployment())
    return ingress.bind(replicas.bind(settings), settings)


def application_from_args(args: dict):
    return application(settings_from_args(args))


def settings_from_args(args: dict) -> ServerSettings:
    """`key=value` builder arguments (Serve CLI or serveConfigV2 `args`) parsed as router flags."""
    from ..cli import build_parser, parse_settings

    switches = {flag for a in build_parser()._actions if a.nargs == 0 for flag in a.option_strings}
    argv = []
    for key, value in args.items():
        flag = "--" + str(key).lstrip("-").replace("_", "-")
        if flag in switches:
            argv += [flag] if str(value).lower() in ("true", "1", "yes", "") else []
        elif value is not None:
            argv += [flag, str(value)]
    settings = parse_settings(argv)
    if settings.ray_serve is None:
        settings = parse_settings([*argv, "--ray-replicas", "1"])
    return settings


def run(settings: ServerSettings) -> int:
    """`text-embeddings-router --ray-replicas N`: deploy, serve until SIGTERM/SIGINT, tear down."""
    from ..app import setup_logging
    from .cluster import connect

    setup_logging(settings)
    started = connect()
    from ray import serve

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": settings.hostname, "port": settings.port})
        options = settings.ray_serve
        log.info("Starting Ray Serve: %d replica(s) of %s on %s:%d", options.replicas, settings.model.name,
                 settings.hostname, settings.port)
        serve.run(application(settings), name=APP_NAME, route_prefix="/")
        log.info("Ready")
        stop.wait()
        log.info("Stopping Ray Serve")
        serve.delete(APP_NAME)
        return 0
    except Exception as exc:  # a replica that cannot start: Serve raises after its retries
        print(f"error: Ray Serve could not deploy: {exc}".splitlines()[0], file=sys.stderr, flush=True)
        return 1
    finally:
        serve.shutdown()
        if started:
            import ray

            ray.shutdown()

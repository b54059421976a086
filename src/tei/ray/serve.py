"""The whole TEI server as a Ray Serve deployment: every replica builds our Engine and serves our
FastAPI app (create_app) as its ingress, so routes, dialects and error bodies are the plain
server's, byte for byte.

Backpressure, from the inside out:
  1. each replica's Engine admits --max-concurrent-requests items and answers TEI's 429 body
     (`{"error": "Model is overloaded", "error_type": "Overloaded"}`) beyond that;
  2. Serve sends a replica at most --ray-max-ongoing-requests requests at once;
  3. when every replica is full, Serve queues at most --ray-max-queued-requests per proxy and refuses
     the rest with 429 and Retry-After (Serve writes that body: plain text, not TEI's JSON).
"""
from __future__ import annotations

import logging
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


def _replica_class():
    from ray import serve

    @serve.ingress()
    class TEIReplica:
        def __init__(self, settings: ServerSettings):
            from ..app import build_engines
            from .cluster import use_assigned_cpus

            use_assigned_cpus()
            self.settings = settings
            self.engines = build_engines(settings)

        def __serve_build_asgi_app__(self):
            from ..server.app import create_app

            replica = serve.get_replica_context().replica_id.unique_id
            return _ReplicaHeader(create_app(self.engines, self.settings), replica)

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
    deployment = serve.deployment(_replica_class(), name="TEIReplica", **options.deployment())
    return deployment.bind(settings)


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

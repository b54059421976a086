"""TEI's gRPC API (package tei.v1) served from the Engine, as TEI's `-grpc` builds serve it.

Each message carries one input; the engine's batcher groups concurrent calls and stream messages into
forward passes. Semantics follow TEI's router/src/grpc/server.rs:
- unary Embed, EmbedAll, EmbedSparse, Predict and PredictPair fail fast with RESOURCE_EXHAUSTED when
  every permit is taken; Rerank and all streams wait for permits instead;
- streams answer in request order, run at most `grpc_max_parallel_stream_requests` messages of one
  stream at a time, and end with the status of the first message that fails;
- `truncate` is taken as sent (the server's --auto-truncate does not apply), an unset `normalize`
  means true;
- unary replies carry the x-compute-* headers as initial metadata and a `Metadata` message.
With several models served, a call's `model` metadata key picks its model (ModelInterceptor); without
it, the first model fit for the service.
"""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hmac
import logging
import signal
import time
from typing import AsyncIterator, Awaitable, Callable

import grpc
from grpc_health.v1 import health as grpc_health
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .. import __version__, tracing
from ..engine import scores
from ..engine.engines import ANY, EMBED, PREDICT, RERANK, SPARSE
from ..engine.errors import BackendError, EmptyInput, EngineError, Overloaded, UnknownModel, ValidationError
from ..server.responses import compute_headers
from ..server.routes_tei import info_body
from . import tei_pb2 as pb
from . import tei_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# In-flight calls get this long to finish after SIGTERM, as HTTP does (uvicorn's graceful timeout).
GRACE_SECONDS = 30.0
PACKAGE = "tei.v1"

CODES = {
    "Validation": grpc.StatusCode.INVALID_ARGUMENT,
    "Empty": grpc.StatusCode.INVALID_ARGUMENT,
    "Tokenizer": grpc.StatusCode.FAILED_PRECONDITION,
    "Backend": grpc.StatusCode.FAILED_PRECONDITION,
    "Overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "Unhealthy": grpc.StatusCode.UNAVAILABLE,
    "NotFound": grpc.StatusCode.NOT_FOUND,
}
_DIRECTIONS = {pb.TRUNCATION_DIRECTION_RIGHT: "right", pb.TRUNCATION_DIRECTION_LEFT: "left"}
_MODEL_TYPES = {
    "embedding": pb.MODEL_TYPE_EMBEDDING,
    "classifier": pb.MODEL_TYPE_CLASSIFIER,
    "reranker": pb.MODEL_TYPE_RERANKER,
}
# Services that need the model; Info and Tokenize work whatever its state (TEI's health service does the same).
_MODEL_SERVICES = {
    "embedding": ("Embed", "Rerank"),  # Rerank ranks by cosine similarity on an embedding model
    "classifier": ("Predict",),
    "reranker": ("Predict", "Rerank"),
}
_ALL_SERVICES = ("Info", "Embed", "Predict", "Rerank", "Tokenize")
# A call waiting for permits looks again after this pause (doubling up to the maximum).
_RETRY_FIRST, _RETRY_MAX = 0.001, 0.05


# ---- message helpers ----------------------------------------------------------------------------


def _direction(value: int) -> str:
    try:
        return _DIRECTIONS[value]
    except KeyError:
        raise ValidationError(f"unknown `truncation_direction` {value}") from None


def _optional(message, field: str):
    return getattr(message, field) if message.HasField(field) else None


def _input_options(message) -> dict:
    """An embed message's truncate, truncation_direction and prompt_name, as the Engine takes them."""
    return {"truncate": message.truncate, "truncation_direction": _direction(message.truncation_direction),
            "prompt_name": _optional(message, "prompt_name")}


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


def _metadata(usage, start: float) -> pb.Metadata:
    usage.total_time = time.perf_counter() - start
    return pb.Metadata(
        compute_chars=usage.chars,
        compute_tokens=usage.tokens,
        total_time_ns=_ns(usage.total_time),
        tokenization_time_ns=_ns(usage.tokenization_time),
        queue_time_ns=_ns(usage.queue_time),
        inference_time_ns=_ns(usage.inference_time),
    )


def _combined(usages: list):
    """Several one-item calls as one batch: chars and tokens add up, stage times are means (as TEI)."""
    total = type(usages[0])()
    for u in usages:
        total.chars += u.chars
        total.tokens += u.tokens
        total.tokenization_time += u.tokenization_time / len(usages)
        total.queue_time += u.queue_time / len(usages)
        total.inference_time += u.inference_time / len(usages)
    return total


async def _abort(context, exc: Exception):
    if not isinstance(exc, EngineError):
        log.exception("Unhandled error in a gRPC call", exc_info=exc)
        exc = BackendError(str(exc) or type(exc).__name__)
    await context.abort(CODES.get(exc.kind, grpc.StatusCode.FAILED_PRECONDITION), exc.message)


async def _in_order(requests: AsyncIterator, handle: Callable[[object], Awaitable], limit: int) -> AsyncIterator:
    """Run `handle` on each request as it arrives, at most `limit` at a time; yield results in request order.

    `handle(request)` is called on the reading task, in arrival order. Leaving early (a failure, the
    client going away) cancels whatever is still running."""
    slots = asyncio.Semaphore(limit)
    pending: asyncio.Queue = asyncio.Queue()

    def finished(task: asyncio.Task) -> None:
        slots.release()
        if not task.cancelled():
            task.exception()  # read here too: a failure after the one that ends the stream is not news

    async def read():
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.ensure_future(handle(request))
                task.add_done_callback(finished)
                pending.put_nowait(task)
        finally:
            pending.put_nowait(None)

    reader = asyncio.ensure_future(read())
    try:
        while (task := await pending.get()) is not None:
            yield await task
        await reader  # a broken request stream surfaces here
    finally:
        reader.cancel()
        while not pending.empty():
            task = pending.get_nowait()
            if task is not None:
                task.cancel()


def _streaming(handle: str, wait: bool = True):
    """A bidirectional-stream RPC that runs method `handle` per message (grpc.aio wants an async generator function)."""

    async def rpc(self, request_iterator, context):
        async for message in self._stream(context, request_iterator, getattr(self, handle), wait):
            yield message

    return rpc


# ---- the services -------------------------------------------------------------------------------


class TeiServicer(
    pb_grpc.InfoServicer, pb_grpc.EmbedServicer, pb_grpc.PredictServicer, pb_grpc.RerankServicer,
    pb_grpc.TokenizeServicer,
):
    def __init__(self, engines, settings):
        self.engines = engines
        self.max_parallel = max(1, settings.grpc_max_parallel_stream_requests)
        self.infos = {engine.name: _info_message(engine, engines.settings(engine.name)) for engine in engines}

    @property
    def engine(self):
        """The model this call selected (ModelInterceptor), or the default one."""
        return _call_engine.get(None) or self.engines.default

    # -- plumbing: unary replies, streams, permits

    async def _reply(self, context, work: Awaitable):
        """Await `work` → (message, usage or None); send TEI's x-compute-* headers, or the error status."""
        try:
            message, usage = await work
        except Exception as exc:
            await _abort(context, exc)
        if usage is not None:
            await context.send_initial_metadata(tuple(compute_headers(usage).items()))
        return message

    async def _stream(self, context, requests, handle, wait: bool):
        call = (lambda r: self._waiting(handle, r)) if wait else handle
        try:
            async for message, _usage in _in_order(requests, call, self.max_parallel):
                yield message
        except Exception as exc:
            await _abort(context, exc)

    async def _waiting(self, handle, request, need: int = 1):
        """TEI's streams and Rerank wait for permits where unary calls fail fast. The engine only refuses,
        so wait here while other calls hold the permits (with nothing in flight, waiting cannot help).
        Checking before calling keeps a waiting call from being counted as refused again and again."""
        engine, delay = self.engine, _RETRY_FIRST
        while True:
            if not (engine.in_flight and engine.in_flight + need > engine.config.max_concurrent_requests):
                try:
                    return await handle(request)
                except Overloaded:
                    if engine.in_flight == 0:
                        raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    # -- Info

    async def Info(self, request, context):
        return self.infos[self.engine.name]

    # -- Embed

    async def _embed(self, req):
        start = time.perf_counter()
        normalize = _optional(req, "normalize")
        result = await self.engine.embed(
            [req.inputs],
            **_input_options(req),
            normalize=True if normalize is None else normalize,
            dimensions=_optional(req, "dimensions"),
        )
        message = pb.EmbedResponse(embeddings=result.values[0].tolist(), metadata=_metadata(result.usage, start))
        return message, result.usage

    async def _embed_all(self, req):
        start = time.perf_counter()
        result = await self.engine.embed_all([req.inputs], **_input_options(req))
        tokens = [pb.TokenEmbedding(embeddings=row) for row in result.values[0].tolist()]
        return pb.EmbedAllResponse(token_embeddings=tokens, metadata=_metadata(result.usage, start)), result.usage

    async def _embed_sparse(self, req):
        start = time.perf_counter()
        result = await self.engine.embed_sparse([req.inputs], **_input_options(req))
        indices, values = result.values[0]
        sparse = [pb.SparseValue(index=i, value=v) for i, v in zip(indices.tolist(), values.tolist())]
        return pb.EmbedSparseResponse(sparse_embeddings=sparse, metadata=_metadata(result.usage, start)), result.usage

    async def Embed(self, request, context):
        return await self._reply(context, self._embed(request))

    EmbedStream = _streaming("_embed")

    async def EmbedAll(self, request, context):
        return await self._reply(context, self._embed_all(request))

    EmbedAllStream = _streaming("_embed_all")

    async def EmbedSparse(self, request, context):
        return await self._reply(context, self._embed_sparse(request))

    EmbedSparseStream = _streaming("_embed_sparse")

    async def _embed_multi_vector(self, req):
        start = time.perf_counter()
        result = await self.engine.embed_multi_vector([req.inputs], **_input_options(req), is_query=req.is_query)
        tokens = [pb.TokenEmbedding(embeddings=row) for row in result.values[0].tolist()]
        return pb.EmbedMultiVectorResponse(token_embeddings=tokens, metadata=_metadata(result.usage, start)), result.usage

    async def EmbedMultiVector(self, request, context):
        return await self._reply(context, self._embed_multi_vector(request))

    EmbedMultiVectorStream = _streaming("_embed_multi_vector")

    # -- Predict

    async def _predict(self, req, item=None):
        start = time.perf_counter()
        result = await self.engine.predict(
            [req.inputs if item is None else item],
            truncate=req.truncate,
            truncation_direction=_direction(req.truncation_direction),
            raw_scores=req.raw_scores,
        )
        row = result.values[0]
        labels = self.engine.spec.id2label
        predictions = [pb.Prediction(score=float(row[i]), label=labels[str(i)]) for i in scores.ranking(row)]
        return pb.PredictResponse(predictions=predictions, metadata=_metadata(result.usage, start)), result.usage

    async def _predict_pair(self, req):
        texts = list(req.inputs)
        if len(texts) not in (1, 2):
            raise ValidationError(
                f"`inputs` must have a single or two elements. Given: {len(texts)}", prefixed=False
            )
        return await self._predict(req, texts[0] if len(texts) == 1 else (texts[0], texts[1]))

    async def Predict(self, request, context):
        return await self._reply(context, self._predict(request))

    async def PredictPair(self, request, context):
        return await self._reply(context, self._predict_pair(request))

    PredictStream = _streaming("_predict")
    PredictPairStream = _streaming("_predict_pair")

    # -- Rerank

    def _ranks(self, values, texts, return_text: bool) -> list:
        return [
            pb.Rank(index=int(i), score=float(values[i]), text=texts[i] if return_text else None)
            for i in scores.ranking(values)
        ]

    async def _rerank(self, req):
        start = time.perf_counter()
        texts = list(req.texts)
        result = await self.engine.rerank(
            req.query,
            texts,
            truncate=req.truncate,
            truncation_direction=_direction(req.truncation_direction),
            raw_scores=req.raw_scores,
            instruction=req.instruction if req.HasField("instruction") else None,
        )
        ranks = self._ranks(result.values, texts, req.return_text)
        return pb.RerankResponse(ranks=ranks, metadata=_metadata(result.usage, start)), result.usage

    async def _rerank_stream(self, requests):
        start = time.perf_counter()
        first = None

        def score(req):
            nonlocal first
            if first is None:  # raw_scores and return_text come from the first message (TEI)
                first = req
            return self._waiting(functools.partial(self._score_pair, raw_scores=first.raw_scores), req)

        pairs = [pair async for pair in _in_order(requests, score, self.max_parallel)]
        if not pairs:
            raise EmptyInput("`texts` cannot be empty")
        texts = [text for text, _, _ in pairs]
        values = [value for _, value, _ in pairs]
        usage = _combined([u for _, _, u in pairs])
        ranks = self._ranks(values, texts, first.return_text)
        return pb.RerankResponse(ranks=ranks, metadata=_metadata(usage, start)), usage

    async def _score_pair(self, req, raw_scores: bool):
        result = await self.engine.rerank(
            req.query,
            [req.text],
            truncate=req.truncate,
            truncation_direction=_direction(req.truncation_direction),
            raw_scores=raw_scores,
        )
        return req.text, float(result.values[0]), result.usage

    async def Rerank(self, request, context):
        return await self._reply(context, self._waiting(self._rerank, request, need=len(request.texts)))

    async def RerankStream(self, request_iterator, context):
        return await self._reply(context, self._rerank_stream(request_iterator))

    # -- Tokenize

    async def _tokenize(self, req):
        texts = await self.engine.tokenize([req.inputs], req.add_special_tokens, _optional(req, "prompt_name"))
        tokens = [pb.SimpleToken(**{k: v for k, v in t.items() if v is not None}) for t in texts[0]]
        return pb.EncodeResponse(tokens=tokens), None

    async def _decode(self, req):
        texts = await self.engine.decode([list(req.ids)], req.skip_special_tokens)
        return pb.DecodeResponse(text=texts[0]), None

    async def Tokenize(self, request, context):
        return await self._reply(context, self._tokenize(request))

    TokenizeStream = _streaming("_tokenize", wait=False)

    async def Decode(self, request, context):
        return await self._reply(context, self._decode(request))

    DecodeStream = _streaming("_decode", wait=False)


def _info_message(engine, model_settings) -> pb.InfoResponse:
    body = info_body(model_settings, engine)
    return pb.InfoResponse(
        version=__version__,
        sha=body["sha"],
        docker_label=body["docker_label"],
        model_id=body["model_id"],
        model_sha=body["model_sha"],
        model_dtype=body["model_dtype"],
        model_type=_MODEL_TYPES[engine.spec.kind],
        max_concurrent_requests=body["max_concurrent_requests"],
        max_input_length=body["max_input_length"],
        max_batch_tokens=body["max_batch_tokens"],
        max_batch_requests=body["max_batch_requests"],
        max_client_batch_size=body["max_client_batch_size"],
        tokenization_workers=body["tokenization_workers"],
    )


# ---- auth and health ----------------------------------------------------------------------------


# A method handler's kind (request streaming, response streaming) → its factory, and the attribute
# that holds its behaviour.
_HANDLER_KINDS = {
    (False, False): (grpc.unary_unary_rpc_method_handler, "unary_unary"),
    (False, True): (grpc.unary_stream_rpc_method_handler, "unary_stream"),
    (True, False): (grpc.stream_unary_rpc_method_handler, "stream_unary"),
    (True, True): (grpc.stream_stream_rpc_method_handler, "stream_stream"),
}


def _tei_handler(handler, details) -> bool:
    """Whether the call is one of TEI's services (health and reflection are not)."""
    return handler is not None and details.method.startswith(f"/{PACKAGE}.")


def _behavior(handler):
    return getattr(handler, _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)][1])


def _replaced(handler, behavior):
    """A handler of the same kind and (de)serializers as `handler` that runs `behavior` instead."""
    make, _ = _HANDLER_KINDS[(handler.request_streaming, handler.response_streaming)]
    return make(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """`--api-key`: every tei.v1 call needs `authorization: Bearer <key>` metadata (health and reflection
    stay open, as in TEI)."""

    def __init__(self, api_key: str):
        self._expected = f"Bearer {api_key}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if not _tei_handler(handler, details):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(given, str):
            given = given.encode()
        if hmac.compare_digest(given, self._expected):
            return handler
        return _replaced(handler, _deny)


async def _deny(request, context):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "No valid auth token")


def _around(handler, scope: Callable[[], contextlib.AbstractContextManager]):
    """`handler`, with each call run inside `scope()` (streamed replies included)."""
    behavior = _behavior(handler)
    if handler.response_streaming:

        async def wrapped(request, context):
            with scope():
                async for reply in behavior(request, context):
                    yield reply

    else:

        async def wrapped(request, context):
            with scope():
                return await behavior(request, context)

    return _replaced(handler, wrapped)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """With --otlp-endpoint: one server span per tei.v1 call (a `traceparent` in the metadata makes the
    caller's span its parent); the engine's tokenization, queue and inference spans nest under it."""

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if not _tei_handler(handler, details):
            return handler
        method = details.method.lstrip("/")
        metadata = [(k, v) for k, v in details.invocation_metadata or () if isinstance(v, str)]
        return _around(handler, lambda: tracing.request_span(method, metadata, **{"rpc.system": "grpc"}))


_call_engine: contextvars.ContextVar = contextvars.ContextVar("tei_grpc_engine")


def _task(method: str) -> str:
    """The task of a tei.v1 method (`/tei.v1.Embed/EmbedSparse` → embed_sparse): which model a call
    without `model` metadata gets."""
    name = method.rsplit("/", 1)[-1]
    for prefix, task in (("EmbedSparse", SPARSE), ("Embed", EMBED), ("Predict", PREDICT), ("Rerank", RERANK)):
        if name.startswith(prefix):
            return task
    return ANY


class ModelInterceptor(grpc.aio.ServerInterceptor):
    """The `model` metadata key picks the served model of a tei.v1 call (the first one fit for the
    method without it); an unknown name is NOT_FOUND."""

    def __init__(self, engines):
        self.engines = engines

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if not _tei_handler(handler, details):
            return handler
        name = dict(details.invocation_metadata or ()).get("model")
        try:
            engine = self.engines.resolve(name if isinstance(name, str) else None, _task(details.method))
        except UnknownModel as exc:
            message = exc.message

            async def not_found(request, context):
                await context.abort(grpc.StatusCode.NOT_FOUND, message)

            return _replaced(handler, not_found)

        @contextlib.contextmanager
        def selected():
            token = _call_engine.set(engine)
            try:
                yield
            finally:
                _call_engine.reset(token)

        return _around(handler, selected)


class HealthServicer(grpc_health.aio.HealthServicer):
    """grpc.health.v1. Asking about a model service (or the server, "") runs the same tiny forward as
    HTTP /health and updates the model services' status from it."""

    def __init__(self, engines):
        super().__init__()
        self.engines = engines
        services = {s for engine in engines for s in _MODEL_SERVICES[engine.spec.kind]}
        self.model_services = [f"{PACKAGE}.{s}" for s in _ALL_SERVICES if s in services]

    async def initialize(self) -> None:
        for name in _ALL_SERVICES:
            await self.set(f"{PACKAGE}.{name}", health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("Info", "Tokenize"):
            await self.set(f"{PACKAGE}.{name}", health_pb2.HealthCheckResponse.SERVING)
        await self.refresh()

    async def refresh(self) -> None:
        ok = await self.engines.health()  # every model, as HTTP /health
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.model_services]:
            await self.set(name, status)

    async def Check(self, request, context):
        if request.service == "" or request.service in self.model_services:
            await self.refresh()
        return await super().Check(request, context)


# ---- serving ------------------------------------------------------------------------------------


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(engines, settings, port: int) -> tuple[grpc.aio.Server, HealthServicer]:
    """Build and start the gRPC server on `port` in the running event loop. Raises OSError if it cannot bind."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ApiKeyInterceptor(settings.api_key)] if settings.api_key else []
    if tracing.enabled():
        interceptors.append(TracingInterceptor())
    interceptors.append(ModelInterceptor(engines))
    # No SO_REUSEPORT: a port another server holds must fail here, not share traffic silently.
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    servicer = TeiServicer(engines, settings)
    for add in (
        pb_grpc.add_InfoServicer_to_server,
        pb_grpc.add_EmbedServicer_to_server,
        pb_grpc.add_PredictServicer_to_server,
        pb_grpc.add_RerankServicer_to_server,
        pb_grpc.add_TokenizeServicer_to_server,
    ):
        add(servicer, server)
    health = HealthServicer(engines)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [f"{PACKAGE}.{s}" for s in _ALL_SERVICES]
    reflection.enable_server_reflection([*names, "grpc.health.v1.Health", reflection.SERVICE_NAME], server)
    address = _address(settings.hostname, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio ≥ 1.5x raises; older versions return 0
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    await server.start()
    await health.initialize()
    log.info("Starting gRPC server: %s", address)
    return server, health


async def stop(server: grpc.aio.Server, health: HealthServicer) -> None:
    """Refuse new calls, give those in flight GRACE_SECONDS to finish."""
    await health.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)


def start_metrics_listener(settings) -> None:
    """The separate Prometheus listener TEI's gRPC builds open on --prometheus-port."""
    from ..metrics import start_prometheus_listener

    start_prometheus_listener(settings.prometheus_port, settings.hostname)
    log.info("Serving Prometheus metrics: %s", _address(settings.hostname, settings.prometheus_port))


def serve(engines, settings) -> int:
    """`--grpc`: gRPC on --port (no HTTP) until SIGTERM or SIGINT, then a graceful stop; the exit status."""
    return asyncio.run(_serve(engines, settings))


async def _serve(engines, settings) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        server, health = await start(engines, settings, settings.port)
        start_metrics_listener(settings)
    except OSError as exc:
        log.error("%s", exc)
        return 1
    log.info("Ready")
    await stopping.wait()
    log.info("Shutting down")
    await stop(server, health)
    return 0


def attach(http_server, engines, settings) -> None:
    """`--grpc-port N`: run gRPC on N in the HTTP server's event loop, starting before it and stopping with it."""
    running: list = []
    http_startup, http_shutdown = http_server.startup, http_server.shutdown

    async def startup(*args, **kwargs):
        try:
            running.extend(await start(engines, settings, settings.grpc_port))
        except OSError as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
        await http_startup(*args, **kwargs)

    async def shutdown(*args, **kwargs):
        await asyncio.gather(http_shutdown(*args, **kwargs), stop(*running) if running else asyncio.sleep(0))

    http_server.startup, http_server.shutdown = startup, shutdown

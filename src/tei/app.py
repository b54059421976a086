"""Start-up: settings → device → model folder → spec → weights → engine → warm-up → HTTP server."""
from __future__ import annotations

import logging
import sys
import time

from .settings import Settings

log = logging.getLogger("tei")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        return orjson.dumps(
            {
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname,
                "message": record.getMessage(),
                "target": record.name,
                "filename": record.pathname,
                "line_number": record.lineno,
            }
        ).decode()


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_output:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper() if settings.log_level.upper() in logging._nameToLevel else "INFO")


def build_engine(settings: Settings):
    """Everything that can fail at start-up, in TEI's order. Raises StartupError with one sentence."""
    from .devices import DeviceError, place
    from .engine.engine import Engine, EngineConfig
    from .models.hub import ModelNotFound, resolve_model_dir
    from .models.loader import Model, UnsupportedModel
    from .models.spec import ModelSpecError, read_spec

    try:
        placement = place(settings.device, settings.dtype, compile=settings.torch_compile)
        placement.activate()
        folder = resolve_model_dir(
            settings.model_id, settings.revision, settings.huggingface_hub_cache, settings.hf_token
        )
        spec = read_spec(folder, settings.pooling)
        log.info("Model type: %s (pooling: %s)", spec.kind, spec.pooling)
        tokenizer_file = folder / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise StartupError(f"tokenizer.json not found in {folder}: only fast tokenizers are supported")
        log.info("Maximum number of tokens per request: %d", spec.max_input_length)
        model = Model(spec, placement)
        log.info("Starting model backend on %s (%s): %s, attention: %s%s", placement.device, placement.name,
                 placement.dtype_name, model.attention, ", torch.compile" if placement.compile else "")
        engine = Engine(
            spec,
            model,
            tokenizer_file.read_text(encoding="utf-8"),
            EngineConfig(
                max_concurrent_requests=settings.max_concurrent_requests,
                max_batch_tokens=settings.max_batch_tokens,
                max_batch_requests=settings.max_batch_requests,
                max_client_batch_size=settings.max_client_batch_size,
                auto_truncate=settings.auto_truncate,
                tokenization_workers=settings.tokenization_workers,
                default_prompt=settings.default_prompt,
                default_prompt_name=settings.default_prompt_name,
            ),
        )
    except (DeviceError, ModelNotFound, ModelSpecError, UnsupportedModel, FileNotFoundError, KeyError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    log.info("Warming up model")
    engine.warmup()
    return engine


class StartupError(RuntimeError):
    pass


def run(settings: Settings) -> int:
    setup_logging(settings)
    log.info("Args %s", _redacted(settings))
    try:
        engine = build_engine(settings)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the one line a user needs; no traceback
        return 1
    if settings.grpc:
        from .grpc.server import serve

        try:
            return serve(engine, settings)
        finally:
            engine.close()

    import uvicorn

    from .server.app import create_app

    app = create_app(engine, settings)
    log.info("Starting HTTP server: %s:%d", settings.hostname, settings.port)
    config = uvicorn.Config(
        app,
        host=settings.hostname,
        port=settings.port,
        log_level="warning",
        access_log=False,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    if settings.grpc_port is not None:
        from .grpc.server import attach

        attach(server, engine, settings)
    _announce_ready(server)
    try:
        server.run()
    finally:
        engine.close()
    return 0


def _announce_ready(server) -> None:
    """Log "Ready" once the socket listens: some tools wait for that line, as with TEI."""
    original = server.startup

    async def startup(*args, **kwargs):
        await original(*args, **kwargs)
        if server.started:
            log.info("Ready")

    server.startup = startup


def _redacted(settings: Settings) -> str:
    import dataclasses

    fields = dataclasses.asdict(settings)
    for key in ("hf_token", "api_key"):
        if fields.get(key):
            fields[key] = "***"
    return str(fields)

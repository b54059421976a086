"""Start-up: settings → per model: device → model folder → spec → weights → engine → warm-up; then the
Engines registry → HTTP (and/or gRPC) server."""
from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import time

from . import tracing
from .settings import ModelSettings, ServerSettings

log = logging.getLogger("tei")

_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}  # tracing's level names, as TEI prints them
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=256)
def _short_path(path: str) -> str:
    return os.path.relpath(path, _PACKAGE_ROOT) if path.startswith(_PACKAGE_ROOT) else path


class JsonFormatter(logging.Formatter):
    """One JSON object per line with TEI's fields; `span`/`spans` name the request being served."""

    def __init__(self, spans: bool = True):
        super().__init__()
        self.spans = spans

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        line = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": _LEVELS.get(record.levelname, record.levelname),
            "message": record.getMessage(),
            "target": record.name,
            "filename": _short_path(record.pathname),
            "line_number": record.lineno,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if self.spans:
            span = tracing.log_fields()
            if span is not None:
                line["span"] = span
                line["spans"] = [span]
        return orjson.dumps(line, default=str).decode()


def setup_logging(settings: ServerSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_output:
        handler.setFormatter(JsonFormatter(spans=not settings.disable_spans))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)5s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper() if settings.log_level.upper() in logging._nameToLevel else "INFO")


def build_engine(settings: ModelSettings, loaded: dict | None = None):
    """Everything that can fail at start-up, in TEI's order. Raises StartupError with one sentence.

    `loaded` maps what a Model was built from (folder, pooling, device, dtype, compile) to it: a model
    served twice under two names is then loaded once, and its two Engines share the weights."""
    from .devices import DeviceError, place
    from .engine.engine import Engine
    from .models.hub import ModelNotFound, resolve_model_dir
    from .models.loader import Model
    from .models.registry import UnsupportedModel
    from .models.spec import ModelSpecError, read_spec, tokenizer_json

    try:
        placement = place(_device(settings), settings.dtype, compile=settings.torch_compile)
        placement.activate()
        folder = resolve_model_dir(
            settings.model_id, settings.revision, settings.huggingface_hub_cache, settings.hf_token
        )
        spec = read_spec(folder, settings.pooling, settings.engine.default_prompt_name, model_id=settings.model_id,
                         model_kind=settings.model_kind, backend=settings.backend,
                         trust_remote_code=settings.trust_remote_code)
        placement = _family_dtype(spec, placement, settings)
        log.info("Model type: %s (pooling: %s)", spec.kind, spec.pooling)
        if spec.adapters:
            log.info("Task adapter merged at load: %s (of %s)", spec.adapter or "none, the base weights",
                     ", ".join(spec.adapters))
        tokenizer_file = spec.model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise StartupError(f"tokenizer.json not found in {spec.model_dir}: only fast tokenizers are supported")
        log.info("Maximum number of tokens per request: %s", spec.max_input_length or "no limit but --max-batch-tokens")
        tokenizer_text = tokenizer_json(spec)
        if spec.appended_token:
            from .engine.tokenization import appending

            tokenizer_text = appending(tokenizer_text, spec.appended_token)
        key = (str(folder.resolve()), spec.pooling, spec.kind, spec.adapter, spec.family.name, str(placement.device),
               placement.dtype_name, placement.compile)
        model = (loaded or {}).get(key)
        if model is None:
            model = placement.build(Model, spec, placement)
            log.info("Starting model backend on %s (%s): %s, attention: %s%s", placement.device, placement.name,
                     placement.dtype_name, model.attention, ", torch.compile" if placement.compile else "")
            if loaded is not None:
                loaded[key] = model
        else:
            log.info("Sharing the weights already loaded from %s", folder)
        engine = Engine(spec, model, tokenizer_text, settings.engine, name=settings.name)
    except (DeviceError, ModelNotFound, ModelSpecError, UnsupportedModel, FileNotFoundError, KeyError, ValueError) as exc:
        raise StartupError(str(exc)) from None
    log.info("Warming up model")
    engine.warmup()
    return engine


def build_engines(settings: ServerSettings):
    """Every served model, loaded one after another; the first that cannot load stops start-up,
    named in the one-line error when there are several."""
    from .engine.engines import Engines, check_unique

    check_unique([model.name for model in settings.models])  # before minutes of loading, not after
    loaded: dict = {}
    served = []
    try:
        for i, model in enumerate(settings.models, 1):
            if len(settings.models) > 1:
                log.info("Loading model %d of %d: %s (%s)", i, len(settings.models), model.name,
                         model.model_id or "bundled")
            try:
                served.append((model, build_engine(model, loaded)))
            except StartupError as exc:
                raise StartupError(f"model `{model.name}`: {exc}" if len(settings.models) > 1 else str(exc)) from None
        return Engines(served)
    except BaseException:
        for _, engine in served:
            engine.close()
        raise


class StartupError(RuntimeError):
    pass


def _family_dtype(spec, placement, settings: ModelSettings):
    """A family whose numbers break in float16 (EmbeddingGemma) refuses it, and runs its own default
    dtype when --dtype is unset (float32 on every device, as TEI does for Gemma3)."""
    from .devices import place

    family = spec.family
    if settings.dtype == "float16" and not family.float16:
        raise StartupError(f"`{spec.model_type}` models overflow in float16: use --dtype float32 or bfloat16.")
    if not settings.dtype and family.default_dtype and placement.dtype_name != family.default_dtype:
        log.info("`%s` models run in %s unless --dtype says otherwise", spec.model_type, family.default_dtype)
        placement = place(_device(settings), family.default_dtype, compile=settings.torch_compile)
        placement.activate()
    return placement


def _device(settings: ModelSettings) -> str | None:
    """--device-id N picks the Nth accelerator: cuda:N (npu:N with --device npu); ignored on CPU."""
    device, index = settings.device, settings.device_id
    if index is None or (device and ":" in device):
        return device
    if device in ("cuda", "npu"):
        return f"{device}:{index}"
    if device in (None, "auto"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{index}"
    log.info("--device-id %d ignored: no accelerator selected", index)
    return device


def _log_accepted_flags(settings: ServerSettings) -> None:
    if settings.onnx_filename:
        log.info("--onnx-filename %s ignored: this server runs the PyTorch weights", settings.onnx_filename)
    if settings.usage_stats:
        log.info("--usage-stats %s accepted: usage statistics are always off, nothing is ever sent",
                 settings.usage_stats)


def run(settings: ServerSettings) -> int:
    setup_logging(settings)
    log.info("Args %s", _redacted(settings))
    _log_accepted_flags(settings)
    if settings.otlp_endpoint:
        tracing.setup(settings.otlp_endpoint, settings.otlp_service_name)
    try:
        engines = build_engines(settings)
    except (StartupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)  # the one line a user needs; no traceback
        tracing.shutdown()
        return 1
    try:
        if settings.grpc:
            from .grpc.server import serve

            return serve(engines, settings)
        from .server.app import create_app

        serve_http(create_app(engines, settings), engines, settings)
        return 0
    finally:
        engines.close()
        tracing.shutdown()


GRACEFUL_SHUTDOWN_S = 30


def serve_http(app, engines, settings: ServerSettings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, let in-flight requests finish (up to
    GRACEFUL_SHUTDOWN_S) and return, so the process exits 0."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started:
                log.info("Ready")  # some tools wait for this line, as with TEI

        def handle_exit(self, sig, frame):
            if not self.should_exit:
                log.info("Received %s: finishing in-flight requests, then exiting", signal.Signals(sig).name)
            super().handle_exit(sig, frame)

    if settings.root_path:
        from .server.app import under_root_path

        app = under_root_path(app, settings.root_path)
        log.info("Serving every route under %s", settings.root_path)
    log.info("Starting HTTP server: %s:%d", settings.hostname, settings.port)
    config = uvicorn.Config(
        app,
        host=settings.hostname,
        port=settings.port,
        log_level="warning",
        log_config=None,  # uvicorn's records go through our handler (JSON lines with --json-output)
        access_log=False,
        loop="auto",
        http="auto",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    # uvicorn re-raises the signal it caught once it has drained; with the default handlers that
    # would kill the process (exit 143) after a clean shutdown. Handlers that do nothing keep exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _ignore)
    server = Server(config)
    if settings.grpc_port is not None:
        from .grpc.server import attach

        attach(server, engines, settings)
    server.run()


def _ignore(signum, frame) -> None:
    pass


def _redacted(settings: ServerSettings) -> str:
    import dataclasses

    fields = dataclasses.asdict(settings)
    for entry in (fields, *fields["models"]):
        for key in ("hf_token", "api_key"):
            if entry.get(key):
                entry[key] = "***"
    return str(fields)

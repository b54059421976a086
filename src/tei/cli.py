"""`text-embeddings-router`: TEI's flags and environment variables (and a models file) → ServerSettings with
one ModelSettings per served model → serve."""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .ray import options as ray_options
from .settings import ModelSettings, ServerSettings, default_tokenization_workers

_FALSE = {"false", "0", "no", "off", "n", "f", ""}
NOT_YET = "(accepted for TEI compatibility; not implemented yet)"


def _bool(value: str) -> bool:
    return value.strip().lower() not in _FALSE


def _hf_token_from_file() -> str | None:
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    path = os.path.join(home, "token")
    if os.path.isfile(path):
        return open(path, encoding="utf-8").read().strip() or None
    return None


class _EnvDefaults(argparse.ArgumentParser):
    """Each flag also reads the upper-snake-case environment variable named after it; the flag wins."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.env_lists: dict[str, list[str]] = {}

    def parse_args(self, *args, **kwargs):
        parsed = super().parse_args(*args, **kwargs)
        for dest, values in self.env_lists.items():
            if getattr(parsed, dest) is None:
                setattr(parsed, dest, values)
        return parsed

    def add(self, *flags: str, env: str | None = None, **kwargs):
        dest = flags[-1].lstrip("-").replace("-", "_")
        env = env or dest.upper()
        kwargs.setdefault("dest", dest)
        if env in os.environ:
            raw = os.environ[env]
            if kwargs.get("action") == "store_true":
                kwargs["default"] = _bool(raw)
            elif kwargs.get("action") == "append":
                # Not a default: argparse would append the flags to it, and the flags must replace it.
                self.env_lists[kwargs["dest"]] = [v for v in raw.split(",") if v]
            else:
                conv = kwargs.get("type", str)
                kwargs["default"] = conv(raw)
        help_text = kwargs.get("help", "")
        kwargs["help"] = f"{help_text} [env: {env}]".strip()
        return self.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = _EnvDefaults(prog="text-embeddings-router", description="Text Embedding Webserver")
    p.add_argument("-V", "--version", action="version", version=f"text-embeddings-router {__version__}")
    p.add("--model-id", action=_InOrder,
          help="Hub model id or local folder; repeat it to serve several models. Default: the bundled all-MiniLM-L6-v2")
    p.add("--models", help="YAML file listing the models to serve, each with its own options (see README)")
    p.add("--revision", help="Hub revision (branch, tag or commit), e.g. refs/pr/2")
    p.add("--tokenization-workers", type=int, default=default_tokenization_workers(),
          help="Number of tokenizer threads")
    p.add("--dtype", choices=["float32", "float16", "bfloat16", "int8"],
          help="Model dtype. Default: float16 on CUDA/NPU, float32 on CPU/MPS. bfloat16 is the fast choice on "
          "CPUs with AMX (slower than float32 without it); int8 (CPU only) quantizes the encoder's linear layers dynamically")
    p.add("--served-model-name", action=_InOrder,
          help="Model name reported by /info and the OpenAI route, and used to route to it; one per --model-id, "
          "given after it (or all in the same order)")
    p.add("--pooling", choices=["cls", "mean", "splade", "last-token", "last_token"],
          help="Override the sentence-transformers pooling (splade: *ForMaskedLM models, /embed_sparse)")
    p.add("--model-kind", choices=["auto", "embedding", "reranker"], default="auto",
          help="How to serve a causal LM checkpoint: auto (default) serves Qwen3-Reranker-style checkpoints as "
          "rerankers when the model id or folder name contains `reranker` or sentence-transformers declares a "
          "LogitScore cross-encoder, else as an embedding model")
    p.add("--max-concurrent-requests", type=int, default=512,
          help="Maximum number of concurrent items; more gets 429")
    p.add("--max-batch-tokens", type=int, default=16384, help="Token budget of one forward pass")
    p.add("--max-batch-requests", type=int, help="Maximum number of sequences in one forward pass")
    p.add("--max-client-batch-size", type=int, default=32, help="Maximum number of inputs in one request")
    p.add("--auto-truncate", nargs="?", const=True, default=True, type=_bool,
          help="Truncate inputs longer than the model's limit when a request does not say (default true)")
    p.add("--default-prompt-name", help="Prompt from config_sentence_transformers.json to prepend by default")
    p.add("--default-prompt", help="Prompt text to prepend by default")
    p.add("--dense-path", help=f"Dense module folder override {NOT_YET}")
    p.add("--hf-token", help="Hugging Face Hub token (falls back to $HF_HOME/token)")
    p.add("--hf-api-token", help=argparse.SUPPRESS)
    p.add("--hostname", default="0.0.0.0", help="IP address to listen on")
    p.add("-p", "--port", type=int, default=3000, help="Port to listen on")
    p.add("--uds-path", default="/tmp/text-embeddings-inference-server",
          help="Unix socket of TEI's Python backend (unused: this server is Python)")
    p.add("--huggingface-hub-cache", help="Hugging Face cache folder for downloads")
    p.add("--payload-limit", type=int, default=2_000_000, help="Maximum request body in bytes; larger bodies get 413")
    p.add("--api-key", help="Require `Authorization: Bearer <key>` on every route but health, metrics and docs")
    p.add("--json-output", action="store_true", help="Log as JSON lines")
    p.add("--disable-spans", action="store_true", help="Omit the span fields from JSON logs")
    p.add("--otlp-endpoint", help="OpenTelemetry OTLP/gRPC endpoint for traces, e.g. http://localhost:4317")
    p.add("--otlp-service-name", default="text-embeddings-inference.server", help="OpenTelemetry service.name")
    p.add("--prometheus-port", type=int, default=9000, help="Prometheus port of the gRPC mode (HTTP serves /metrics on the main port, as TEI does)")
    p.add("--cors-allow-origin", action="append", help="Allowed CORS origin, repeatable; any origin when unset")
    p.add("--device", help="auto (default), cpu, cuda, cuda:N, npu, npu:N or mps")
    p.add("--grpc", action="store_true",
          help="Serve TEI's gRPC API on --port instead of HTTP (as TEI's -grpc images), metrics on --prometheus-port")
    p.add("--grpc-port", type=int, help="Also serve TEI's gRPC API on this port, beside HTTP on --port")
    p.add("--grpc-max-parallel-stream-requests", type=int, default=1024,
          help="Messages of one gRPC stream processed at a time")
    p.add("--torch-compile", action="store_true", env="TEI_TORCH_COMPILE",
          help="torch.compile the encoder layers (experimental; off by default)")
    p.add("--backend", choices=["auto", "transformers"], default="auto",
          help="auto: own model code, and the transformers fallback for architectures without it; "
          "transformers: always the fallback (for comparing)")
    p.add("--trust-remote-code", action="store_true",
          help="Let the transformers fallback run a model's own modeling code (config.json auto_map)")
    p.add("--auto-chunk", action="store_true",
          help="Embed inputs longer than the model as overlapping windows, pooled back into one vector "
          "(token-weighted mean), instead of truncating them")
    p.add("--warmup-tokens", type=int, help="Tokens in the warm-up batch (default: a full batch)")
    p.add("--root-path", help="Serve every HTTP route under this prefix, e.g. /tei")
    p.add("--onnx-filename", help="ONNX weights file of TEI's ORT backend (ignored: this server runs PyTorch)")
    p.add("--usage-stats", help="TEI's usage telemetry setting (accepted; always off: nothing is ever sent)")
    p.add("--device-id", type=int, help="Index of the accelerator to use (as cuda:N / npu:N)")
    ray_options.add_flags(p)
    return p


class _InOrder(argparse.Action):
    """--model-id and --served-model-name keep the order they came in: a name names the model before it."""

    def __call__(self, parser, namespace, values, option_string=None):
        order = getattr(namespace, "model_flags", None) or []
        namespace.model_flags = [*order, (self.dest, values)]


def _named_models(args) -> list[tuple[str | None, str | None]]:
    """(model id, served name) pairs from the repeated flags (or MODEL_ID / SERVED_MODEL_NAME)."""
    flags = getattr(args, "model_flags", None) or []
    ids = [v for dest, v in flags if dest == "model_id"] or [args.model_id or None]
    named = [v for dest, v in flags if dest == "served_model_name"]
    names = named or ([args.served_model_name] if args.served_model_name else [])
    if len(names) == len(ids):
        return list(zip(ids, names))
    if len(names) > len(ids):
        raise ValueError(f"{len(names)} --served-model-name for {len(ids)} --model-id")
    pairs: list[list] = [[model_id, None] for model_id in ids]
    current = -1
    for dest, value in flags:  # fewer names than models: each names the --model-id before it
        if dest == "model_id":
            current += 1
        elif pairs[max(current, 0)][1] is not None:
            raise ValueError(f"--model-id {pairs[max(current, 0)][0]} is given two --served-model-name")
        else:
            pairs[max(current, 0)][1] = value
    return [tuple(pair) for pair in pairs]


def _model_options(args) -> dict:
    """The per-model flags: given once, they apply to every model (a models file entry overrides them)."""
    return dict(
        revision=args.revision,
        tokenization_workers=max(1, args.tokenization_workers),
        dtype=args.dtype,
        pooling=args.pooling,
        max_concurrent_requests=args.max_concurrent_requests,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_requests=args.max_batch_requests,
        max_client_batch_size=args.max_client_batch_size,
        auto_truncate=bool(args.auto_truncate),
        default_prompt_name=args.default_prompt_name,
        default_prompt=args.default_prompt,
        hf_token=args.hf_token or args.hf_api_token or _hf_token_from_file(),
        huggingface_hub_cache=args.huggingface_hub_cache,
        device=args.device,
        device_id=args.device_id,
        torch_compile=args.torch_compile,
        model_kind=args.model_kind,
        backend=None if args.backend == "auto" else args.backend,
        trust_remote_code=args.trust_remote_code,
        auto_chunk=args.auto_chunk,
        warmup_tokens=args.warmup_tokens,
    )


def _models(args) -> tuple[ModelSettings, ...]:
    base = _model_options(args)
    if args.models:
        if getattr(args, "model_flags", None):
            raise ValueError("--models and --model-id / --served-model-name cannot be used together")
        from .models_file import read_models_file

        return tuple(ModelSettings.from_options(**{**base, **entry}) for entry in read_models_file(args.models))
    return tuple(ModelSettings.from_options(**base, model_id=model_id, served_model_name=name)
                 for model_id, name in _named_models(args))


def parse_settings(argv: list[str] | None = None) -> ServerSettings:
    """Raises ValueError with one sentence when the model flags or the models file do not add up."""
    args = build_parser().parse_args(argv)
    hostname = args.hostname
    try:
        import ipaddress

        ipaddress.ip_address(hostname)
    except ValueError:
        # TEI parses --hostname as an IP; Docker sets HOSTNAME to a container name, so fall back.
        hostname = "0.0.0.0"
    return ServerSettings(
        models=_models(args),
        hostname=hostname,
        port=args.port,
        payload_limit=args.payload_limit,
        api_key=args.api_key or None,
        json_output=args.json_output,
        disable_spans=args.disable_spans,
        otlp_endpoint=args.otlp_endpoint,
        otlp_service_name=args.otlp_service_name,
        prometheus_port=args.prometheus_port,
        cors_allow_origin=tuple(args.cors_allow_origin) if args.cors_allow_origin else None,
        log_level=os.environ.get("LOG_LEVEL", "info"),
        grpc=args.grpc,
        grpc_port=args.grpc_port,
        grpc_max_parallel_stream_requests=args.grpc_max_parallel_stream_requests,
        root_path=_root_path(args.root_path),
        onnx_filename=args.onnx_filename,
        usage_stats=args.usage_stats,
        task=os.environ.get("TASK") or None,
        ray_serve=ray_options.from_args(args),
    )


def _root_path(value: str | None) -> str | None:
    value = (value or "").strip().rstrip("/")
    if not value:
        return None
    return value if value.startswith("/") else "/" + value


def main(argv: list[str] | None = None) -> None:
    try:
        settings = parse_settings(argv)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if any(m.engine.default_prompt and m.engine.default_prompt_name for m in settings.models):
        sys.exit("error: --default-prompt and --default-prompt-name cannot be used together")
    if settings.grpc and settings.grpc_port is not None:
        sys.exit("error: --grpc serves gRPC on --port, --grpc-port serves it beside HTTP: use one of them")
    if settings.ray_serve is not None:
        from .ray.serve import run as run_on_ray_serve

        sys.exit(run_on_ray_serve(settings))
    from .app import run

    sys.exit(run(settings))

"""ServerSettings (one per process) and ModelSettings (one per served model), built by the CLI.
Nothing else reads the environment for configuration."""
from __future__ import annotations

import dataclasses
import os

from .engine.config import EngineConfig

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def default_tokenization_workers() -> int:
    return max(1, min((os.cpu_count() or 1) - 1, 64))


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What one served model is: where its weights come from, how they are placed, how it is batched."""

    model_id: str | None = None
    revision: str | None = None
    served_model_name: str | None = None
    dtype: str | None = None
    pooling: str | None = None
    model_kind: str = "auto"  # auto | embedding | reranker: how a causal LM checkpoint is served
    device: str | None = None
    device_id: int | None = None  # TEI's --device-id: cuda:N / npu:N
    torch_compile: bool = False
    huggingface_hub_cache: str | None = None
    backend: str | None = None  # "transformers" forces the transformers fallback (models/families/transformers.py)
    trust_remote_code: bool = False  # TEI's Python backend TRUST_REMOTE_CODE
    hf_token: str | None = None
    engine: EngineConfig = dataclasses.field(
        default_factory=lambda: EngineConfig(tokenization_workers=default_tokenization_workers())
    )

    @property
    def name(self) -> str:
        """What /info, /v1/models, the `model` fields and the metrics' `model` label call it."""
        return self.served_model_name or self.model_id or DEFAULT_MODEL_ID

    @classmethod
    def from_options(cls, **options) -> "ModelSettings":
        """Flat options (flags, a models-file entry, a test's keywords), each to its own dataclass."""
        unknown = options.keys() - MODEL_OPTIONS
        if unknown:
            raise ValueError(f"unknown model option(s) {sorted(unknown)}; known: {sorted(MODEL_OPTIONS)}")
        engine = {k: v for k, v in options.items() if k in _ENGINE_FIELDS}
        engine.setdefault("tokenization_workers", default_tokenization_workers())
        own = {k: v for k, v in options.items() if k not in _ENGINE_FIELDS}
        return cls(**own, engine=EngineConfig(**engine))


_ENGINE_FIELDS = frozenset(f.name for f in dataclasses.fields(EngineConfig))
MODEL_OPTIONS = frozenset(f.name for f in dataclasses.fields(ModelSettings) if f.name != "engine") | _ENGINE_FIELDS


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    models: tuple[ModelSettings, ...] = (ModelSettings(),)
    hostname: str = "0.0.0.0"
    port: int = 3000
    payload_limit: int = 2_000_000
    api_key: str | None = None
    json_output: bool = False
    disable_spans: bool = False
    otlp_endpoint: str | None = None
    otlp_service_name: str = "text-embeddings-inference.server"
    prometheus_port: int = 9000
    cors_allow_origin: tuple[str, ...] | None = None
    log_level: str = "info"
    grpc: bool = False  # serve gRPC instead of HTTP on `port`
    grpc_port: int | None = None  # serve gRPC on this port as well as HTTP on `port`
    grpc_max_parallel_stream_requests: int = 1024
    # TEI flags accepted for compatibility
    root_path: str | None = None
    onnx_filename: str | None = None
    usage_stats: str | None = None
    task: str | None = None  # TASK=sentence-similarity: POST / serves /similarity
    ray_serve: object | None = None  # tei.ray.options.RayServeOptions: serve through Ray Serve (--ray-replicas)

    @property
    def model(self) -> ModelSettings:
        """The default (first) model."""
        return self.models[0]

    @classmethod
    def single(cls, model: ModelSettings | None = None, **server) -> "ServerSettings":
        return cls(models=(model or ModelSettings(),), **server)

"""One frozen Settings object, built by the CLI. Nothing else reads the environment for configuration."""
from __future__ import annotations

import dataclasses
import os


def default_tokenization_workers() -> int:
    return max(1, min((os.cpu_count() or 1) - 1, 64))


@dataclasses.dataclass(frozen=True)
class Settings:
    model_id: str | None = None
    revision: str | None = None
    tokenization_workers: int = dataclasses.field(default_factory=default_tokenization_workers)
    dtype: str | None = None
    served_model_name: str | None = None
    pooling: str | None = None
    max_concurrent_requests: int = 512
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_client_batch_size: int = 32
    auto_truncate: bool = True
    default_prompt_name: str | None = None
    default_prompt: str | None = None
    dense_path: str | None = None
    hf_token: str | None = None
    hostname: str = "0.0.0.0"
    port: int = 3000
    uds_path: str = "/tmp/text-embeddings-inference-server"
    huggingface_hub_cache: str | None = None
    payload_limit: int = 2_000_000
    api_key: str | None = None
    json_output: bool = False
    disable_spans: bool = False
    otlp_endpoint: str | None = None
    otlp_service_name: str = "text-embeddings-inference.server"
    prometheus_port: int = 9000
    cors_allow_origin: tuple[str, ...] | None = None
    device: str | None = None
    torch_compile: bool = False
    log_level: str = "info"
    grpc: bool = False  # serve gRPC instead of HTTP on `port`
    grpc_port: int | None = None  # serve gRPC on this port as well as HTTP on `port`
    grpc_max_parallel_stream_requests: int = 1024
    ray_serve: object | None = None  # tei.ray.options.RayServeOptions: serve through Ray Serve (--ray-replicas)

    @property
    def model_name(self) -> str:
        """What /info and the OpenAI route call the model."""
        return self.served_model_name or self.model_id or "sentence-transformers/all-MiniLM-L6-v2"

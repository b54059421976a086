"""How an Engine batches and admits requests: per served model, light enough for the CLI to import."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    max_concurrent_requests: int = 512
    max_batch_tokens: int = 16384
    max_batch_requests: int | None = None
    max_client_batch_size: int = 32
    auto_truncate: bool = True
    tokenization_workers: int = 1
    default_prompt: str | None = None
    default_prompt_name: str | None = None
    auto_chunk: bool = False  # /embed: window inputs longer than the model instead of truncating them
    warmup_tokens: int | None = None  # --warmup-tokens: the warm-up batch's size (default: a full batch)
    prompts: dict | None = None  # added to (and over) the model's config_sentence_transformers.json prompts

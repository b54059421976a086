"""The Engine: request-level operations (embed, predict, rerank, tokenize, decode) over the batcher."""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Sequence

import numpy as np

from .. import metrics, tracing
from ..models.loader import Model
from ..models.spec import ModelSpec
from .config import EngineConfig
from .batcher import EMBED, EMBED_ALL, PREDICT, Batcher, Job
from . import scores
from .errors import BackendError, BatchTooLarge, EmptyInput, Overloaded, ValidationError, WrongModelType
from .late import LateInteraction
from .tokenization import Encoded, Input, PairTemplate, TokenizeOptions, TokenizerPool

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Usage:
    """What TEI reports in x-compute-* headers and gRPC Metadata. Times in seconds, means per item."""

    chars: int = 0
    tokens: int = 0
    tokenization_time: float = 0.0
    queue_time: float = 0.0
    inference_time: float = 0.0
    total_time: float = 0.0


@dataclasses.dataclass
class Result:
    values: object  # np.ndarray [n, D] / [n, C], or list of arrays (embed_all)
    usage: Usage


class Engine(LateInteraction):
    def __init__(self, spec: ModelSpec, model: Model, tokenizer_json: str, config: EngineConfig, name: str = "model"):
        self.name = name  # the served model name: response bodies, the metrics' `model` label
        self.spec = spec
        self.model = model
        self.config = config
        # A model without a positional limit (static embeddings) takes inputs as long as a batch.
        self.max_input_length = spec.max_input_length or config.max_batch_tokens
        if self.max_input_length > config.max_batch_tokens:
            if not config.auto_truncate:
                raise ValueError(
                    f"`max_input_length` ({self.max_input_length}) must be <= `max_batch_tokens` "
                    f"({config.max_batch_tokens}); set --auto-truncate or raise --max-batch-tokens."
                )
            log.warning("Capping max_input_length at max_batch_tokens=%d", config.max_batch_tokens)
            self.max_input_length = config.max_batch_tokens
        self.prompts = {**spec.prompts, **(config.prompts or {})}
        self.default_prompt = self._resolve_default_prompt()
        # LLM rerankers read each pair through their family's template; a server prompt is its instruction.
        self.template = PairTemplate(**spec.prompt_template) if spec.prompt_template else None
        self.tokenizers = TokenizerPool(tokenizer_json, config.tokenization_workers, self.max_input_length)
        self.metrics = metrics.Metrics(name, self.max_input_length)
        self.batcher = Batcher(model, config.max_batch_tokens, config.max_batch_requests, self.metrics)
        self.metrics.watch_queue(self.batcher)
        self._permits = config.max_concurrent_requests

    # ---- lifecycle --------------------------------------------------------------------------

    def _resolve_default_prompt(self) -> str | None:
        cfg = self.config
        if cfg.default_prompt is not None:
            return cfg.default_prompt
        name = cfg.default_prompt_name or None
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(
                f"--default-prompt-name `{name}` is not in config_sentence_transformers.json "
                f"(available: {sorted(self.prompts)})"
            )
        return self.prompts[name]

    def warmup(self) -> None:
        """One forward pass (at full batch size, as TEI does, where devices.Placement.warmup_pass says
        so): an out-of-memory shows up at start-up. Devices that compile per shape then run one batch
        per shape gear; on CPU, oneDNN builds its kernels for the common gears now and for the others
        once ready, while idle. All of it on the inference thread (Batcher.call says why)."""
        self.tokenizers.warm()
        placement = self.model.placement
        budget = self.batcher.max_batch_tokens  # the device's own budget where it is below the flag
        # --warmup-tokens sizes the first (full) batch only; the shape gears still cover every batch.
        first = max(1, min(budget, self.config.warmup_tokens)) if self.config.warmup_tokens else budget
        length = min(self.max_input_length, first)
        count = max(1, min(first // length, self.config.max_batch_requests or 1 << 30, 64))
        gears = placement.warmup_lengths(budget, min(self.max_input_length, budget))
        if gears:
            log.info("Warming up %d shape gears, up to %d tokens", len(gears), sum(gears[-1]))
        for lengths in [placement.warmup_pass(length, count), *gears]:
            ids = np.full(sum(lengths), 100, dtype=np.int32)
            self.batcher.call(lambda: self.model.forward(self.model.make_batch(ids, np.zeros_like(ids), lengths)))
        kernels = placement.kernel_gears(budget)
        lengths = placement.attention_lengths(self.max_input_length)
        if kernels or lengths:
            now_kernels, now_lengths = placement.before_ready(kernels, lengths)
            later = self.model.kernel_steps(sorted(set(kernels) - set(now_kernels)),
                                            sorted(set(lengths) - set(now_lengths)))
            log.info("Building kernels for %d batch sizes and %d sequence lengths (%d more when idle)",
                     len(now_kernels), len(now_lengths), len(later))
            self.batcher.call(self.model.warm_kernels, now_kernels, now_lengths)
            self.batcher.when_idle(later)

    def close(self) -> None:
        self.batcher.stop()
        self.tokenizers.shutdown()

    @property
    def in_flight(self) -> int:
        return self.config.max_concurrent_requests - self._permits

    # ---- shared plumbing --------------------------------------------------------------------

    def _check_batch(self, n: int) -> None:
        if n == 0:
            raise EmptyInput("`inputs` cannot be empty")
        if n > self.config.max_client_batch_size:
            raise BatchTooLarge(n, self.config.max_client_batch_size)

    def _prompt(self, prompt_name: str | None) -> str | None:
        if prompt_name is None:
            return self.default_prompt
        if prompt_name not in self.prompts:
            if not self.prompts:
                raise ValidationError(f"`prompt_name` `{prompt_name}` was given but the model has no prompts")
            raise ValidationError(
                f"`prompt_name` `{prompt_name}` was not found. Available prompts: {sorted(self.prompts)}"
            )
        return self.prompts[prompt_name]

    def _truncate(self, truncate: bool | None) -> bool:
        return self.config.auto_truncate if truncate is None else truncate

    async def _run(self, kind: str, inputs: Sequence[Input], opts: TokenizeOptions, expand=None) -> Result:
        """Admit, tokenize, queue, wait: the path every model call takes. `expand(encoded)` → (what to
        run, finish(output) → values) reshapes the work (engine/late.py); usage counts the inputs' tokens."""
        finish = None
        start = time.perf_counter()
        n = len(inputs)
        self.metrics.items_received(kind, n)
        if n > self._permits:
            raise Overloaded()
        self._permits -= n
        try:
            encoded = await self.tokenizers.encode_async(inputs, opts)
            tokenized = time.perf_counter()
            work, finish = expand(encoded) if expand is not None else (encoded, None)
            job = self._submit(kind, work)
            await job.future
        finally:
            self._permits += n
        usage = Usage(
            chars=sum(e.chars for e in encoded),
            tokens=sum(len(e.ids) for e in encoded),
            tokenization_time=(tokenized - start) / n,
            queue_time=job.queue_time / n,
            inference_time=job.inference_time / n,
            total_time=time.perf_counter() - start,
        )
        self.metrics.items_done(kind, [len(e.ids) for e in encoded], usage)
        if tracing.tracer is not None:
            tracing.record_phases(start, tokenized, usage)
        return Result(job.output if finish is None else finish(job.output), usage)

    def _submit(self, kind: str, encoded: list[Encoded]) -> Job:
        loop = asyncio.get_running_loop()
        n = len(encoded)
        job = Job(kind=kind, n=n, loop=loop, future=loop.create_future())
        if kind == EMBED:
            job.output = np.empty((n, self.model.output_size), dtype=np.float32)
        elif kind == PREDICT:
            job.output = np.empty((n, max(1, self.spec.num_labels)), dtype=np.float32)
        else:
            job.output = [None] * n
        self.batcher.submit(job, encoded)
        return job

    async def _embed_run(self, kind: str, inputs, truncate, truncation_direction: str, prompt_name) -> Result:
        """What the embedding operations share: the batch check, tokenization options, the run."""
        if prompt_name in self.spec.adapters and prompt_name != self.spec.adapter:
            merged = f"`{self.spec.adapter}`" if self.spec.adapter else "none (the base weights)"
            raise ValidationError(
                f"`prompt_name` `{prompt_name}` selects a task adapter, but this server merged {merged} at start-up; "
                f"start one with --default-prompt-name {prompt_name} to serve it"
            )
        self._check_batch(len(inputs))
        opts = TokenizeOptions(self._truncate(truncate), truncation_direction, self._prompt(prompt_name))
        return await self._run(kind, inputs, opts)

    def _require(self, *kinds: str, message: str) -> None:
        if self.spec.kind not in kinds:
            raise WrongModelType(message)

    # ---- operations -------------------------------------------------------------------------

    @metrics.metered("inputs")
    async def embed(
        self,
        inputs: Sequence[Input],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
        normalize: bool = True,
        dimensions: int | None = None,
    ) -> Result:
        self._require("embedding", message="Model is not an embedding model")
        if normalize and self.splade:
            raise WrongModelType("`normalize` is not available for SPLADE models")
        if dimensions is not None:
            if dimensions <= 0:
                raise ValidationError("`dimensions` should be positive")
            if dimensions > self.model.output_size:
                raise ValidationError(
                    f"`dimensions` should be smaller than the maximum embedding dimension ({self.model.output_size})."
                )
        if self.config.auto_chunk:
            result = await self._chunked_embed(inputs, truncation_direction, prompt_name)
        else:
            result = await self._embed_run(EMBED, inputs, truncate, truncation_direction, prompt_name)
        vectors = result.values
        if dimensions is not None:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
        if normalize:
            vectors = _normalized(vectors)
        result.values = vectors
        return result

    @metrics.metered("inputs")
    async def embed_all(
        self,
        inputs: Sequence[Input],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> Result:
        self._require("embedding", message="Model is not an embedding model")
        if self.splade:
            raise WrongModelType("`embed_all` is not available for SPLADE models")
        return await self._embed_run(EMBED_ALL, inputs, truncate, truncation_direction, prompt_name)

    @property
    def splade(self) -> bool:
        return self.spec.kind == "embedding" and self.spec.pooling == "splade"

    @metrics.metered("inputs")
    async def embed_sparse(
        self,
        inputs: Sequence[Input],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        prompt_name: str | None = None,
    ) -> Result:
        """SPLADE vectors as (vocabulary indices, weights) per input: the non-zero entries, ascending.
        BGE-M3's lexical weights come in the same form."""
        if self.lexical:
            return await self._lexical_weights(inputs, truncate, truncation_direction, prompt_name)
        if not self.splade:
            raise WrongModelType("Model is not an embedding model with SPLADE pooling")
        result = await self._embed_run(EMBED, inputs, truncate, truncation_direction, prompt_name)
        result.values = [(np.flatnonzero(row), row[row != 0]) for row in result.values]
        return result

    @metrics.metered("inputs")
    async def predict(
        self,
        inputs: Sequence[Input],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        raw_scores: bool = False,
    ) -> Result:
        """Single texts or (first, second) pairs → scores [n, num_labels] in label order."""
        self._require("classifier", "reranker", message="Model is not a classifier model")
        self._check_batch(len(inputs))
        opts = self._pair_options(truncate, truncation_direction, None) or TokenizeOptions(
            self._truncate(truncate), truncation_direction, self.default_prompt)
        result = await self._run(PREDICT, inputs, opts)
        result.values = self._checked(scores.activate(result.values, raw_scores))
        return result

    @property
    def rerank_limit(self) -> int:
        """Documents per rerank. Wider than `max_client_batch_size`, which Dify reads as its embedding
        batch size: FastGPT and Dify send every retrieved chunk in one rerank call."""
        return max(self.config.max_client_batch_size, self.config.max_concurrent_requests)

    @metrics.metered("texts")
    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        truncate: bool | None = None,
        truncation_direction: str = "right",
        raw_scores: bool = False,
        instruction: str | None = None,
    ) -> Result:
        """Relevance of each text to the query → scores [n] in the order of `texts`.

        A reranker scores each (query, text) pair, cutting the text, never the query, to fit. An
        embedding model ranks by cosine similarity instead (TEI answers 424 there)."""
        if not texts:
            raise EmptyInput("`texts` cannot be empty")
        if len(texts) > self.rerank_limit:
            raise BatchTooLarge(len(texts), self.rerank_limit)
        # `instruction` only fills an LLM reranker's template; other models ignore it, as they ignore
        # any unknown field (FastGPT and other clients send one whatever the model).
        if self.spec.kind == "reranker":
            opts = self._pair_options(truncate, truncation_direction, instruction) or TokenizeOptions(
                self._truncate(truncate), truncation_direction, self.default_prompt, pair_strategy="only_second"
            )
            result = await self._run(PREDICT, [(query, t) for t in texts], opts)
            result.values = self._checked(scores.activate(result.values, raw_scores)[:, 0])
            return result
        if self.maxsim_rerank:
            return await self._maxsim(query, texts, truncate, truncation_direction)
        if self.spec.kind == "embedding":
            if not query:
                raise EmptyInput("`query` cannot be empty")
            opts = TokenizeOptions(self._truncate(truncate), truncation_direction, self.default_prompt)
            result = await self._run(EMBED, [query, *texts], opts)
            vectors = _normalized(result.values)
            result.values = vectors[1:] @ vectors[0]
            return result
        raise WrongModelType("model is not a re-ranker model")

    def _pair_options(self, truncate, direction: str, instruction: str | None) -> TokenizeOptions | None:
        if self.template is None:
            return None
        return TokenizeOptions(self._truncate(truncate), direction, template=self.template,
                               instruction=instruction or self.default_prompt)

    @staticmethod
    def _checked(values: np.ndarray) -> np.ndarray:
        if np.isnan(values).any():
            raise BackendError("score is NaN")
        return values

    @metrics.metered(None)
    async def tokenize(self, texts: Sequence[str], add_special_tokens: bool = True, prompt_name: str | None = None):
        self._check_batch(len(texts))
        prompt = self._prompt(prompt_name)
        return await self.tokenizers.run(self.tokenizers.tokenize, texts, add_special_tokens, prompt)

    @metrics.metered(None)
    async def decode(self, batches: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        self._check_batch(len(batches))
        for ids in batches:
            if not ids:
                raise EmptyInput("`ids` cannot be empty")
        return await self.tokenizers.run(self.tokenizers.decode, batches, skip_special_tokens)

    async def health(self, timeout: float = 30.0) -> bool:
        """A real forward of one tiny sequence through the queue."""
        tok = self.tokenizers.main
        ids = tok.encode("a", add_special_tokens=True).ids[:2] or [0]
        ids_arr = np.asarray(ids, dtype=np.int32)
        kind = EMBED if self.spec.kind == "embedding" else PREDICT
        job = self._submit(kind, [Encoded(ids_arr, np.zeros_like(ids_arr), 0)])
        try:
            await asyncio.wait_for(job.future, timeout)
        except Exception:
            return False
        return bool(np.isfinite(job.output).all())


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return vectors / norms

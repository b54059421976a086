"""Build a runnable model from a folder: the family's encoder and heads, weights, pooling, Dense layers."""
from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import torch
from torch import nn

from ..devices import Placement, chunks
from . import late, splade
from .attention import AttentionPlan, choose
from .batch import PackedBatch
from .layers import Linear, use_int8, use_onednn
from .pooling import pool
from .spec import SPLADE_ACTIVATIONS, DenseSpec, ModelSpec
from .weights import Weights, check_fits, load_state_dict

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelOutput:
    pooled: np.ndarray | None = None  # [B, D] float32: embeddings after pooling and Dense (SPLADE: D = vocabulary)
    hidden: np.ndarray | None = None  # [T, H] float32: per-token states, for /embed_all
    logits: np.ndarray | None = None  # [B, C] float32
    # Per-sequence outputs keyed by Batcher job kind (late.SPARSE, late.MULTI_VECTOR), one entry per sequence.
    per_seq: dict = dataclasses.field(default_factory=dict)


class Dense(nn.Module):
    def __init__(self, spec: DenseSpec, placement: Placement):
        super().__init__()
        w = Weights(load_state_dict(spec.path), (), placement.head_dtype, placement.device)
        self.linear = Linear(w.get("linear.weight"), w.get("linear.bias") if spec.bias else None)
        self.tanh = spec.activation == "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        return torch.tanh(x) if self.tanh else x


class Model:
    """Tensors in, numpy out. Knows nothing about requests."""

    def __init__(self, spec: ModelSpec, placement: Placement):
        family = spec.family.load()
        self.spec = spec
        self.placement = placement
        check_fits(spec.model_dir, placement)
        # A family that loads its checkpoint itself (the transformers fallback) gets the folder instead.
        own = getattr(family, "OWN_WEIGHTS", False)
        state = {} if own else load_state_dict(spec.model_dir)
        weights = Weights(state, family.PREFIXES, placement.dtype, placement.device)
        cfg = {**spec.config, "_folder": str(spec.folder), "_trust_remote_code": spec.trust_remote_code} if own \
            else spec.config
        if hasattr(family, "adapt"):  # checkpoint tensors the family rewrites first (LoRA merged at load)
            family.adapt(weights, spec)
        self.encoder = family.encoder(weights, cfg)
        self.hidden_size = self.encoder.hidden_size
        # An encoder without attention (static embeddings) needs no kernel; SDPA's plan costs nothing.
        self.attention = choose(placement.attention, self.encoder.needs) if self.encoder.attention else "sdpa"
        if spec.yes_no is not None:  # float32 whatever the dtype: two rows, one dot product per sequence
            self.head = family.yes_no_head(weights, cfg, spec.yes_no)
        elif spec.kind != "embedding":
            if not hasattr(family, "classifier"):
                raise ValueError(f"`{spec.model_type}` classifiers and rerankers are not supported (embedding models are)")
            self.head = family.classifier(weights, cfg).to(placement.head_dtype)
        else:
            self.head = None
        self.mlm = family.mlm_head(weights, cfg).to(placement.head_dtype) if spec.pooling == "splade" else None
        self.sparse = (late.SparseHead(spec.sparse_head, set(spec.sparse_special_ids), placement.head_dtype,
                                       placement.device) if spec.sparse_head else None)
        self.multi_vector = self._multi_vector_head(spec.multi_vector, weights) if spec.multi_vector else None
        weights.ignore(*family.IGNORED)
        weights.check_all_used(spec.family.name)
        self.dense = nn.ModuleList(Dense(d, placement) for d in spec.dense)
        self.encoder.eval()
        if placement.int8:
            use_int8(self.encoder)
        if placement.onednn_linear:
            # The encoder only: heads and Dense layers see one row per sequence, a count that would
            # need a oneDNN kernel each, for work too small to gain from it.
            use_onednn(self.encoder)
        if placement.compile:
            for layer in self.encoder.layers:
                layer.compile(dynamic=True)
        # An encoder may project its states (EmbeddingGemma 2's `embedding_projection`): `output_size`.
        self.output_size = spec.dense[-1].out_features if spec.dense else getattr(
            self.encoder, "output_size", self.hidden_size)
        # Encoders that can pool by mean without building each token's state (static embeddings)
        self._fused_mean = (hasattr(self.encoder, "pooled_mean") and spec.pooling == "mean"
                            and self.head is None and self.mlm is None)
        if self.mlm is not None:
            self.output_size = self.mlm.vocab_size

    def _multi_vector_head(self, mv: late.MultiVectorSpec, weights: Weights) -> late.MultiVectorHead:
        states = []
        for layer in mv.layers:
            if layer.path is not None:
                states.append(late.read_torch_state(layer.path))
            else:  # stanford-nlp: the projection lives in the encoder's own checkpoint
                states.append({layer.prefix + n: weights.raw(layer.prefix + n) for n in ("weight", "bias")
                               if weights.has(layer.prefix + n)})
        head = late.MultiVectorHead(mv, states, self.placement.head_dtype, self.placement.device)
        if head.stages[0].linear.in_features != self.hidden_size:
            raise ValueError(f"The multi-vector head takes {head.stages[0].linear.in_features} inputs, but the "
                             f"encoder's hidden size is {self.hidden_size}")
        return head

    @torch.inference_mode()
    def forward(self, batch: PackedBatch, want_hidden: bool = False, kinds=()) -> ModelOutput:
        self.placement.prepare_forward(len(batch.input_ids))
        real = batch.real_seqs
        out = ModelOutput()
        if self._fused_mean and not want_hidden and not kinds:
            out.pooled = self._dense(self.encoder.pooled_mean(batch)[:real]).float().cpu().numpy()
            return out
        plan = late.ExpansionPlan(batch) if batch.attend is not None else AttentionPlan(batch, self.attention)
        hidden = self.encoder(batch, plan)
        if late.SPARSE in kinds and self.sparse is not None:
            out.per_seq[late.SPARSE] = self.sparse(hidden.to(self.placement.head_dtype), batch, real)
        if late.MULTI_VECTOR in kinds and self.multi_vector is not None:
            out.per_seq[late.MULTI_VECTOR] = self.multi_vector(hidden.to(self.placement.head_dtype), batch, real)
        if self.head is not None:
            pooled = pool(hidden, batch, self.head.pooling)[:real]
            out.logits = self.head(pooled.to(self.placement.head_dtype)).float().cpu().numpy()
            return out
        if self.mlm is not None:
            pooled = splade.pool(hidden.to(self.placement.head_dtype), batch, self.mlm, real,
                                 SPLADE_ACTIVATIONS[self.spec.splade_activation])
        else:
            pooled = self._dense(pool(hidden, batch, self.spec.pooling)[:real])
        out.pooled = pooled.float().cpu().numpy()
        if want_hidden:
            out.hidden = hidden[: sum(batch.lengths[:real])].float().cpu().numpy()
        return out

    def _dense(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = pooled.to(self.placement.head_dtype)
        for layer in self.dense:
            pooled = layer(pooled)
        return pooled

    def warm_kernels(self, token_counts: list[int], lengths: list[int]) -> None:
        for step in self.kernel_steps(token_counts, lengths):
            step()

    def kernel_steps(self, token_counts: list[int], lengths: list[int]) -> list:
        """Steps that build the kernels batches will need, once (devices.Placement.kernel_gears and
        attention_lengths): the first encoder layer once per token count, in sequences of 16 tokens
        that keep attention cheap (every layer and every later batch of that size reuses the linear
        layers' kernels); then attention alone once per sequence length, for each kind of attention
        the model has (ModernBERT's local and global layers differ). One step per count or length,
        so the engine can run some before it is ready and the rest when idle (Batcher.when_idle)."""
        kinds = {(a.heads, a.kv_heads, a.head_dim, a.causal, a.window, a.bias): a for a in self.encoder.attention}
        counts = token_counts if len(self.encoder.layers) else []  # static embeddings: nothing to warm
        return ([functools.partial(self._warm_linears, n) for n in counts]
                + [functools.partial(self._warm_attention, n, list(kinds.values())) for n in lengths if kinds])

    @torch.inference_mode()
    def _warm_linears(self, tokens: int) -> None:
        self.placement.prepare_forward(0)
        batch = self._dummy_batch(chunks(tokens, 16))
        x = torch.zeros(len(batch.input_ids), self.hidden_size, dtype=self.placement.dtype, device=self.placement.device)
        self.encoder.layers[0](x, AttentionPlan(batch, self.attention))

    @torch.inference_mode()
    def _warm_attention(self, length: int, kinds: list) -> None:
        self.placement.prepare_forward(0)
        dtype, device = self.placement.dtype, self.placement.device
        batch = self._dummy_batch([length])
        plan, tokens = AttentionPlan(batch, self.attention), len(batch.input_ids)  # gears pad the batch
        for a in kinds:
            # One k/v head (and its group of q heads) builds the same kernels as all of them: the
            # kernels are per length and head size, the heads an outer loop. An 8192-token step then
            # costs a twelfth (ModernBERT-base) and keeps requests that wait on it waiting less. A
            # per-head bias needs every head.
            heads, kv_heads = (a.heads, a.kv_heads) if a.bias is not None else (a.heads // a.kv_heads, 1)
            q = torch.zeros(tokens, heads, a.head_dim, dtype=dtype, device=device)
            kv = torch.zeros(tokens, kv_heads, a.head_dim, dtype=dtype, device=device)
            plan.attend(q, kv, kv, causal=a.causal, window=a.window, bias=a.bias, scale=a.scale)

    def _dummy_batch(self, lengths: list[int]) -> PackedBatch:
        ids = np.zeros(sum(lengths), dtype=np.int32)
        return self.make_batch(ids, ids, lengths)

    def make_batch(self, ids: np.ndarray, type_ids: np.ndarray, lengths: list[int], attend=None) -> PackedBatch:
        """Host arrays → device tensors; positions restart at `position_offset` for each sequence.
        `attend`: per sequence, the keys attention may use (PackedBatch.attend), or None."""
        device = self.placement.device
        padded = self.placement.pad_lengths(list(lengths), max(lengths))
        pad_seqs = len(padded) - len(lengths)
        if attend is not None and all(a is None for a in attend):
            attend = None
        if attend is not None:
            attend = list(attend) + [None] * pad_seqs
        if pad_seqs:
            filler = np.zeros(sum(padded) - len(ids), dtype=ids.dtype)
            ids, type_ids, lengths = np.concatenate([ids, filler]), np.concatenate([type_ids, filler]), padded
        cu = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        starts = np.repeat(cu[:-1], lengths)
        positions = np.arange(len(ids), dtype=np.int64) - starts + self.spec.position_offset
        return PackedBatch(
            input_ids=torch.from_numpy(ids.astype(np.int64, copy=False)).to(device, non_blocking=True),
            token_type_ids=torch.from_numpy(type_ids.astype(np.int64, copy=False)).to(device, non_blocking=True),
            position_ids=torch.from_numpy(positions).to(device, non_blocking=True),
            cu_seqlens=torch.from_numpy(cu).to(device, non_blocking=True),
            lengths=list(lengths),
            max_len=max(lengths),
            pad_seqs=pad_seqs,
            attend=attend,
        )

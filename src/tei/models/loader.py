"""Build a runnable model from a folder: the family's encoder and heads, weights, pooling, Dense layers."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import nn

from ..devices import Placement, chunks
from . import splade
from .attention import AttentionPlan, choose
from .batch import PackedBatch
from .layers import Linear, use_int8, use_onednn
from .pooling import pool
from .spec import SPLADE_ACTIVATIONS, DenseSpec, ModelSpec
from .weights import Weights, load_state_dict

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ModelOutput:
    pooled: np.ndarray | None = None  # [B, D] float32: embeddings after pooling and Dense (SPLADE: D = vocabulary)
    hidden: np.ndarray | None = None  # [T, H] float32: per-token states, for /embed_all
    logits: np.ndarray | None = None  # [B, C] float32


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
        weights = Weights(load_state_dict(spec.folder), family.PREFIXES, placement.dtype, placement.device)
        cfg = spec.config
        self.encoder = family.encoder(weights, cfg)
        self.hidden_size = self.encoder.hidden_size
        self.attention = choose(placement.attention, self.encoder.needs)
        self.head = family.classifier(weights, cfg).to(placement.head_dtype) if spec.kind != "embedding" else None
        self.mlm = family.mlm_head(weights, cfg).to(placement.head_dtype) if spec.pooling == "splade" else None
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
        self.output_size = spec.dense[-1].out_features if spec.dense else self.hidden_size
        if self.mlm is not None:
            self.output_size = self.mlm.vocab_size

    @torch.inference_mode()
    def forward(self, batch: PackedBatch, want_hidden: bool = False) -> ModelOutput:
        self.placement.prepare_forward(len(batch.input_ids))
        hidden = self.encoder(batch, AttentionPlan(batch, self.attention))
        real = batch.real_seqs
        out = ModelOutput()
        if self.head is not None:
            pooled = pool(hidden, batch, self.head.pooling)[:real]
            out.logits = self.head(pooled.to(self.placement.head_dtype)).float().cpu().numpy()
            return out
        if self.mlm is not None:
            pooled = splade.pool(hidden.to(self.placement.head_dtype), batch, self.mlm, real,
                                 SPLADE_ACTIVATIONS[self.spec.splade_activation])
        else:
            pooled = pool(hidden, batch, self.spec.pooling)[:real].to(self.placement.head_dtype)
            for layer in self.dense:
                pooled = layer(pooled)
        out.pooled = pooled.float().cpu().numpy()
        if want_hidden:
            out.hidden = hidden[: sum(batch.lengths[:real])].float().cpu().numpy()
        return out

    @torch.inference_mode()
    def warm_kernels(self, token_counts: list[int], lengths: list[int]) -> None:
        """Build the kernels batches will need, once, at start-up (devices.Placement.kernel_gears and
        attention_lengths): the first encoder layer once per token count, in sequences of 16 tokens
        that keep attention cheap (every layer and every later batch of that size reuses the linear
        layers' kernels); then attention alone once per sequence length, for each kind of attention
        the model has (ModernBERT's local and global layers differ)."""
        self.placement.prepare_forward(0)
        first = self.encoder.layers[0]
        dtype, device = self.placement.dtype, self.placement.device
        for tokens in token_counts:
            batch = self._dummy_batch(chunks(tokens, 16))
            first(torch.zeros(len(batch.input_ids), self.hidden_size, dtype=dtype, device=device),
                  AttentionPlan(batch, self.attention))
        kinds = {(a.heads, a.kv_heads, a.head_dim, a.causal, a.window, a.bias): a for a in self.encoder.attention}
        for length in lengths:
            batch = self._dummy_batch([length])
            plan, tokens = AttentionPlan(batch, self.attention), len(batch.input_ids)  # gears pad the batch
            for a in kinds.values():
                q = torch.zeros(tokens, a.heads, a.head_dim, dtype=dtype, device=device)
                kv = torch.zeros(tokens, a.kv_heads, a.head_dim, dtype=dtype, device=device)
                plan.attend(q, kv, kv, causal=a.causal, window=a.window, bias=a.bias, scale=a.scale)

    def _dummy_batch(self, lengths: list[int]) -> PackedBatch:
        ids = np.zeros(sum(lengths), dtype=np.int32)
        return self.make_batch(ids, ids, lengths)

    def make_batch(self, ids: np.ndarray, type_ids: np.ndarray, lengths: list[int]) -> PackedBatch:
        """Host arrays → device tensors; positions restart at `position_offset` for each sequence."""
        device = self.placement.device
        padded = self.placement.pad_lengths(list(lengths), max(lengths))
        pad_seqs = len(padded) - len(lengths)
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
        )

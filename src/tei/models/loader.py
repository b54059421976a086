"""Build a runnable model from a folder: architecture registry, weights, pooling, Dense layers, heads."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
from torch import nn

from ..devices import Placement, chunks
from . import bert, distilbert, splade
from .linear import Linear, use_int8, use_onednn
from .packed import AttentionPlan, PackedBatch, pool
from .spec import SPLADE_ACTIVATIONS, DenseSpec, ModelSpec
from .weights import Weights, load_state_dict

log = logging.getLogger(__name__)

# config.json `model_type` → module with PREFIXES, build(weights, cfg, attention, classifier) and
# mlm_head(weights, cfg) (SPLADE)
ARCHITECTURES = {
    "bert": bert,
    "roberta": bert,
    "xlm-roberta": bert,
    "camembert": bert,
    "distilbert": distilbert,
}


class UnsupportedModel(ValueError):
    pass


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
        arch = ARCHITECTURES.get(spec.model_type)
        if arch is None:
            raise UnsupportedModel(
                f"Model type `{spec.model_type}` is not supported; supported: {', '.join(sorted(ARCHITECTURES))}."
            )
        self.spec = spec
        self.placement = placement
        weights = Weights(load_state_dict(spec.folder), arch.PREFIXES, placement.dtype, placement.device)
        classifier = spec.kind != "embedding"
        cfg = spec.config
        self.hidden_size = int(cfg.get("hidden_size", cfg.get("dim")))
        heads = int(cfg.get("num_attention_heads", cfg.get("n_heads", 1)))
        self.attention = placement.kernel_for(self.hidden_size // heads)
        self.encoder, self.head = arch.build(weights, spec.config, self.attention, classifier)
        if self.head is not None:
            self.head.to(placement.head_dtype)
        self.dense = nn.ModuleList(Dense(d, placement) for d in spec.dense)
        self.mlm = arch.mlm_head(weights, cfg).to(placement.head_dtype) if spec.pooling == "splade" else None
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
        hidden = self.encoder(batch)
        real = batch.num_seqs - batch.pad_seqs
        out = ModelOutput()
        if self.head is not None:
            cls = pool(hidden, batch, "cls")[:real]
            out.logits = self.head(cls.to(self.placement.head_dtype)).float().cpu().numpy()
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
        layers' kernels); then attention alone once per sequence length."""
        self.placement.prepare_forward(0)
        first = self.encoder.layers[0]
        dtype, device = self.placement.dtype, self.placement.device
        for tokens in token_counts:
            ids = np.zeros(tokens, dtype=np.int32)
            batch = self.make_batch(ids, ids, chunks(tokens, 16))
            first(torch.zeros(len(batch.input_ids), self.hidden_size, dtype=dtype, device=device),
                  AttentionPlan(batch, self.attention))
        for length in lengths:
            batch = self.make_batch(np.zeros(length, dtype=np.int32), np.zeros(length, dtype=np.int32), [length])
            qkv = torch.zeros(len(batch.input_ids), 3 * self.hidden_size, dtype=dtype, device=device)
            AttentionPlan(batch, self.attention).attend(qkv, first.num_heads)

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

"""Per-batch attention state, built once per forward pass and used by every layer."""
from __future__ import annotations

import importlib
from typing import Callable

import torch
import torch.nn.functional as F

from ..batch import PackedBatch, runs

# Varlen kernels that hand a batch of one length (every single-text request) to SDPA on the `[B, L]`
# view. On an H100 in float16 (benchmarks/README.md), against transformers: batch 1 x 512 tokens, SDPA
# 2.0x and torch_varlen 1.6x; batch 32 x 512, 1.07x and 0.99x; nested tensors 0.1-0.2x.
SDPA_WHEN_UNIFORM = ("torch_varlen", "torch_nested")

# bias(length, device, dtype, rows=None) → [heads, L, L] (or the query rows start:stop of it, [heads,
# stop − start, L]), added to the attention scores of one sequence
Bias = Callable[..., torch.Tensor]

# An additive mask is [heads, L, L]: for one 8192-token sequence of a 12-head model, 3.2 GB in float32.
# Above this size it is built per block of query rows, in every layer, and never cached: building it
# is one multiply-add per score, where attention itself takes 4 x head size per score.
MASK_BYTES = 128 << 20


class AttentionPlan:
    """Index work done once per batch: the kernel's set-up, the runs of equal lengths, masks and
    rotary tables, each cached for the layers that follow.

    On SDPA, each stretch of consecutive equal-length sequences is a `[count, length]` view of the
    packed tensor: one SDPA call per stretch, with no padding and no gather; the batcher sorts each
    batch by length, so a stretch is every sequence of that length. Measured on all-MiniLM-L6-v2
    batches of real text (4096 tokens, ~40 distinct lengths), this takes half the time of padding
    length buckets through gather/scatter, and 40x less than nested-tensor SDPA (benchmarks/attention.py).
    A causal run is `is_causal=True` (no padding, so no mask); a window or a bias is a per-length
    mask, built once per batch.
    """

    def __init__(self, batch: PackedBatch, kernel: str):
        self.kernel = kernel
        self.batch = batch
        sdpa = kernel == "sdpa" or (kernel in SDPA_WHEN_UNIFORM and len(set(batch.lengths)) == 1)
        self.varlen = None if sdpa else varlen_kernel(kernel, batch)
        self.runs = runs(batch.lengths) if sdpa else []
        self._masks: dict = {}
        self._rope: dict = {}

    def rope(self, rotary, dtype: torch.dtype):
        """cos, sin [T, 1, dim] of this batch for one Rotary: computed by the first layer, reused."""
        key = (id(rotary), dtype)
        if key not in self._rope:
            self._rope[key] = rotary.cos_sin(self.batch.position_ids, self.batch.lengths, dtype)
        return self._rope[key]

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
               window: tuple[int, int] | None = None, bias: Bias | None = None,
               scale: float | None = None) -> torch.Tensor:
        """q [T, Hq, D], k and v [T, Hkv, D] (views of a fused projection are fine) → context [T, Hq·D].

        `window = (left, right)`: token i sees tokens i-left..i+right of its own sequence, never
        across a boundary (the runs and the varlen kernels are per sequence)."""
        total, heads, dim = q.shape
        if self.varlen is not None:
            return self.varlen(q, k, v, causal=causal, window=window, scale=scale).reshape(total, heads * dim)
        out = q.new_empty(total, heads, dim) if len(self.runs) > 1 else None
        for first, count, length in self.runs:
            rows = slice(first, first + count * length)
            if bias is not None and heads * length * length * q.element_size() > MASK_BYTES:
                ctx = _blocked_sdpa(q[rows], k[rows], v[rows], count, length, causal, window, bias, scale)
            else:
                mask = self._mask(length, causal, window, bias, q)
                ctx = _sdpa(q[rows], k[rows], v[rows], count, length, causal and mask is None, mask, scale)
            if out is None:
                return ctx.reshape(total, heads * dim)
            out[rows].view(count, length, heads, dim).copy_(ctx)
        return out.view(total, heads * dim)

    def _mask(self, length: int, causal: bool, window, bias: Bias | None, like: torch.Tensor):
        """None when plain SDPA (or is_causal) does the job; else a bool or additive mask for one length."""
        if window is not None and length - 1 <= min(window):
            window = None  # the window holds the whole sequence: SDPA's mask-free path is faster
        if window is None and bias is None:
            return None
        key = (length, causal, window, id(bias) if bias is not None else None)
        mask = self._masks.get(key)
        if mask is None:
            # Bands of the key − query offset, cut with triu/tril on one bool matrix: an int64 offset
            # matrix would take 512 MB for one 8192-token sequence.
            allowed = torch.ones(length, length, dtype=torch.bool, device=like.device)
            if window is not None:
                allowed = allowed.triu(-window[0]).tril(window[1])
            if causal:
                allowed = allowed.tril(0)
            if bias is None:
                mask = allowed
            else:
                mask = bias(length, like.device, like.dtype).masked_fill(~allowed, float("-inf"))
            self._masks[key] = mask
        return mask


def _heads_first(count: int, length: int, *tensors):
    """Rows of `count` sequences of `length` tokens → [count, heads, length, dim] views."""
    return (t.reshape(count, length, t.shape[1], t.shape[2]).transpose(1, 2) for t in tensors)


def _sdpa(q, k, v, count: int, length: int, is_causal: bool, mask, scale) -> torch.Tensor:
    """Rows of `count` sequences of `length` tokens → [count, length, heads, dim]."""
    q, k, v = _heads_first(count, length, q, k, v)
    gqa = k.shape[1] != q.shape[1]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)


def _blocked_sdpa(q, k, v, count: int, length: int, causal: bool, window, bias: Bias, scale) -> torch.Tensor:
    """As _sdpa with the bias (and band) mask, one block of query rows at a time, so that no mask
    larger than MASK_BYTES exists: every query row sees all keys, so blocks are independent."""
    q, k, v = _heads_first(count, length, q, k, v)
    heads, gqa = q.shape[1], k.shape[1] != q.shape[1]
    step = max(16, MASK_BYTES // (heads * length * q.element_size()))
    out = q.new_empty(q.shape)
    keys = torch.arange(length, device=q.device)
    for start in range(0, length, step):
        stop = min(length, start + step)
        mask = bias(length, q.device, q.dtype, rows=(start, stop))
        offset = keys[None, :] - torch.arange(start, stop, device=q.device)[:, None]  # key − query
        banned = None
        if window is not None:
            banned = (offset < -window[0]) | (offset > window[1])
        if causal:
            banned = offset > 0 if banned is None else banned | (offset > 0)
        if banned is not None:
            mask = mask.masked_fill(banned, float("-inf"))
        out[:, :, start:stop] = F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=mask,
                                                               scale=scale, enable_gqa=gqa)
    return out.transpose(1, 2)


def varlen_kernel(name: str, batch: PackedBatch):
    """A device kernel over the packed batch (cuda / npu), set up once per batch."""
    module = importlib.import_module(".npu" if name.startswith("npu_") else ".cuda", __package__)
    return module.KERNELS[name](batch)

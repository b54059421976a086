"""Packed batches and plain per-sequence attention references for the attention-kernel tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tei.models.batch import PackedBatch


def packed_batch(lengths: list[int]) -> PackedBatch:
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    ids = torch.zeros(sum(lengths), dtype=torch.int64)
    positions = torch.cat([torch.arange(n) for n in lengths])
    return PackedBatch(ids, ids, positions, cu, lengths, max(lengths))


def split_qkv(qkv: torch.Tensor, heads: int, kv_heads: int | None = None):
    """[T, (Hq + 2·Hkv)·D] → q [T, Hq, D], k and v [T, Hkv, D], as views (as SelfAttention makes them)."""
    kv_heads = kv_heads or heads
    dim = qkv.shape[1] // (heads + 2 * kv_heads)
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    return q.view(-1, heads, dim), k.view(-1, kv_heads, dim), v.view(-1, kv_heads, dim)


def reference_attention(q, k, v, lengths, *, causal=False, window=None, bias=None) -> torch.Tensor:
    """Each sequence alone through SDPA with an explicit float mask; k/v heads repeated for GQA."""
    outs, start = [], 0
    groups = q.shape[1] // k.shape[1]
    for n in lengths:
        qs, ks, vs = (t[start:start + n].transpose(0, 1).float() for t in (q, k, v))  # [H, n, D]
        ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
        mask = torch.zeros(n, n)
        i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
        if causal:
            mask.masked_fill_(j > i, float("-inf"))
        if window is not None:
            mask.masked_fill_((j < i - window[0]) | (j > i + window[1]), float("-inf"))
        full = mask if bias is None else bias(n, q.device, torch.float32) + mask
        outs.append(F.scaled_dot_product_attention(qs, ks, vs, attn_mask=full).transpose(0, 1).reshape(n, -1))
        start += n
    return torch.cat(outs)

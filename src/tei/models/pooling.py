"""Pooling over the packed layout: one vector per sequence from the per-token states."""
from __future__ import annotations

import torch

from .batch import PackedBatch


def pool(hidden: torch.Tensor, batch: PackedBatch, mode: str) -> torch.Tensor:
    """hidden [T, H] → [B, H]. Last-token is taken by position, never by token id: Qwen3-Embedding's
    appended <|endoftext|> is also its pad token."""
    cu = batch.cu_seqlens.to(torch.int64)
    if mode == "cls":
        return hidden.index_select(0, cu[:-1])
    if mode == "last_token":
        return hidden.index_select(0, cu[1:] - 1)
    if mode == "mean":
        lengths = torch.tensor(batch.lengths, device=hidden.device)
        seq_ids = torch.repeat_interleave(torch.arange(batch.num_seqs, device=hidden.device), lengths)
        sums = torch.zeros(batch.num_seqs, hidden.shape[1], device=hidden.device, dtype=torch.float32)
        sums.index_add_(0, seq_ids, hidden.float())
        return sums / lengths[:, None].to(torch.float32)
    raise ValueError(f"Pooling `{mode}` is not supported")

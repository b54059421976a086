"""T5-style bucketed relative-position bias, bidirectional (MPNet): one learned [buckets, heads] table,
looked up by the bucket of each key-minus-query distance and added to the scaled attention scores.

MPNet computes it once per sequence from `encoder.relative_attention_bias` and every layer adds the
same bias: one `RelativePositionBias` object is handed to every layer's SelfAttention, so the
attention plan (keyed by the callable) builds the [heads, L, L] block once per length per batch.
"""
from __future__ import annotations

import math

import torch


def relative_position_bucket(relative: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Half the buckets per direction; within one, distances below a quarter of all buckets get
    their own bucket, longer ones share logarithmically wider buckets up to `max_distance`."""
    n = -relative
    half = num_buckets // 2
    bucket = (n < 0).to(torch.long) * half
    n = n.abs()
    exact = half // 2
    # clamp(min=1) only keeps log() finite where the exact branch is taken anyway
    large = exact + (torch.log(n.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = large.clamp(max=half - 1)
    return bucket + torch.where(n < exact, n, large)


class RelativePositionBias:
    """bias(length) → [heads, L, L]: table[bucket(j − i)] for query i and key j (`rows=(start,
    stop)`: those query rows only)."""

    def __init__(self, table: torch.Tensor, num_buckets: int = 32, max_distance: int = 128):
        if table.shape[0] < num_buckets:
            raise ValueError(f"relative attention table has {table.shape[0]} rows, {num_buckets} buckets need as many")
        self.table = table  # [buckets, heads]
        self.num_buckets, self.max_distance = num_buckets, max_distance

    @property
    def heads(self) -> int:
        return self.table.shape[1]

    def __call__(self, length: int, device, dtype, rows: tuple[int, int] | None = None) -> torch.Tensor:
        start, stop = rows or (0, length)
        keys, queries = torch.arange(length, device=device), torch.arange(start, stop, device=device)
        buckets = relative_position_bucket(keys[None, :] - queries[:, None], self.num_buckets, self.max_distance)
        return self.table.to(device)[buckets].permute(2, 0, 1).to(dtype)

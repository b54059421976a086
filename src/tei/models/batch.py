"""The packed (unpadded) batch layout shared by every model.

A batch is one `[total_tokens]` row of ids plus `cu_seqlens` (sequence boundaries). Linear layers
then do no work on padding; only attention needs to know where sequences start and end.
"""
from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [T] int64
    token_type_ids: torch.Tensor  # [T] int64
    position_ids: torch.Tensor  # [T] int64
    cu_seqlens: torch.Tensor  # [B + 1] int32, on the model's device
    lengths: list[int]  # host copy: avoids device syncs when shaping
    max_len: int
    pad_seqs: int = 0  # trailing filler sequences that only round the shape up (devices.Placement.pad_lengths)

    @property
    def num_seqs(self) -> int:
        return len(self.lengths)

    @property
    def real_seqs(self) -> int:
        return self.num_seqs - self.pad_seqs


def runs(lengths: list[int]) -> list[tuple[int, int, int]]:
    """(first token, sequences, length) for each stretch of consecutive sequences of one length."""
    out: list[tuple[int, int, int]] = []
    start = 0
    for n in lengths:
        if out and out[-1][2] == n:
            first, count, _ = out[-1]
            out[-1] = (first, count + 1, n)
        else:
            out.append((start, 1, n))
        start += n
    return out

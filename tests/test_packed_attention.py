"""The packed attention layout against plain per-sequence SDPA."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from tei.models.packed import AttentionPlan, PackedBatch, pool


def _batch(lengths: list[int]) -> PackedBatch:
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    total = sum(lengths)
    zeros = torch.zeros(total, dtype=torch.int64)
    return PackedBatch(zeros, zeros, zeros, cu, lengths, max(lengths))


def _reference(qkv: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    outs, start = [], 0
    hidden = qkv.shape[1] // 3
    for n in lengths:
        q, k, v = qkv[start : start + n].view(n, 3, heads, hidden // heads).permute(1, 2, 0, 3)
        outs.append(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, hidden))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize(
    "lengths",
    [[7], [5, 5, 5], [3, 40, 9, 9, 120, 1, 64, 65, 2], [random.Random(s).randint(1, 200) for s in range(60)]],
)
def test_attention_matches_per_sequence_sdpa(lengths):
    torch.manual_seed(0)
    heads, hidden = 4, 32
    qkv = torch.randn(sum(lengths), 3 * hidden)
    plan = AttentionPlan(_batch(lengths), "sdpa")
    out = plan.attend(qkv, heads)
    assert torch.allclose(out, _reference(qkv, lengths, heads), atol=1e-5)


def test_sorted_batch_runs_once_per_length():
    lengths = sorted(random.Random(s).randint(1, 256) for s in range(200))
    plan = AttentionPlan(_batch(lengths), "sdpa")
    assert [n for _, _, n in plan.runs] == sorted(set(lengths))
    covered = [t for first, count, n in plan.runs for t in range(first, first + count * n)]
    assert covered == list(range(sum(lengths)))


def test_pooling_modes():
    hidden = torch.arange(12, dtype=torch.float32).view(6, 2)
    batch = _batch([2, 4])
    assert pool(hidden, batch, "cls").tolist() == [[0, 1], [4, 5]]
    assert pool(hidden, batch, "last_token").tolist() == [[2, 3], [10, 11]]
    assert pool(hidden, batch, "mean").tolist() == [[1, 2], [7, 8]]

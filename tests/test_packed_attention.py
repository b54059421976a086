"""The packed attention layout against plain per-sequence SDPA."""
from __future__ import annotations

import random

import pytest
import torch

from attention_util import packed_batch as _batch, reference_attention, split_qkv

from tei.models.attention import AttentionNeeds, AttentionPlan, choose
from tei.models.layers import SymmetricAlibi, alibi_slopes
from tei.models.pooling import pool


@pytest.mark.parametrize(
    "lengths",
    [[7], [5, 5, 5], [3, 40, 9, 9, 120, 1, 64, 65, 2], [random.Random(s).randint(1, 200) for s in range(60)]],
)
def test_attention_matches_per_sequence_sdpa(lengths):
    torch.manual_seed(0)
    heads, hidden = 4, 32
    q, k, v = split_qkv(torch.randn(sum(lengths), 3 * hidden), heads)
    plan = AttentionPlan(_batch(lengths), "sdpa")
    out = plan.attend(q, k, v)
    assert torch.allclose(out, reference_attention(q, k, v, lengths), atol=1e-5)


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


MIXED = [3, 40, 9, 9, 120, 1, 64, 65, 2]


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [None, (4, 4), (16, 0)])
def test_gqa_causal_and_windows_match_per_sequence_masks(kv_heads, causal, window):
    torch.manual_seed(1)
    q, k, v = split_qkv(torch.randn(sum(MIXED), (4 + 2 * kv_heads) * 8), 4, kv_heads)
    out = AttentionPlan(_batch(MIXED), "sdpa").attend(q, k, v, causal=causal, window=window)
    ref = reference_attention(q, k, v, MIXED, causal=causal, window=window)
    assert torch.allclose(out, ref, atol=1e-5)


def test_causal_attention_does_not_see_later_tokens_or_other_sequences():
    torch.manual_seed(2)
    lengths = [6, 6]
    q, k, v = split_qkv(torch.randn(12, 3 * 16), 2)
    before = AttentionPlan(_batch(lengths), "sdpa").attend(q, k, v, causal=True)
    k2, v2 = k.clone(), v.clone()
    k2[5], v2[5] = 10.0, 10.0  # the last token of the first sequence
    after = AttentionPlan(_batch(lengths), "sdpa").attend(q, k2, v2, causal=True)
    assert torch.equal(before[:5], after[:5]) and torch.equal(before[6:], after[6:])
    assert not torch.allclose(before[5], after[5])


def test_alibi_bias_matches_the_reference_and_the_paper_slopes():
    assert alibi_slopes(8).tolist() == pytest.approx([2 ** -(i + 1) for i in range(8)])
    assert alibi_slopes(12).shape == (12,)
    torch.manual_seed(3)
    q, k, v = split_qkv(torch.randn(sum(MIXED), 3 * 4 * 8), 4)
    bias = SymmetricAlibi(4)
    out = AttentionPlan(_batch(MIXED), "sdpa").attend(q, k, v, bias=bias)
    assert torch.allclose(out, reference_attention(q, k, v, MIXED, bias=bias), atol=1e-5)


class _Recorded:
    """A bias that records the size of every block asked of it."""

    def __init__(self, bias):
        self.bias, self.shapes = bias, []

    def __call__(self, length, device, dtype, rows=None):
        out = self.bias(length, device, dtype, rows=rows)
        self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("causal,window", [(False, None), (True, None), (False, (7, 3))])
@pytest.mark.parametrize("make_bias", ["alibi", "relative"])
def test_long_sequences_build_the_bias_per_block_of_queries(monkeypatch, causal, window, make_bias):
    """Above MASK_BYTES a length's [heads, L, L] mask is never built: blocks of query rows give the
    same result as the whole mask (the 8k-token ALiBi case, shrunk by lowering the threshold)."""
    import tei.models.attention.plan as plan
    from tei.models.layers.relative_bias import RelativePositionBias

    torch.manual_seed(4)
    heads, lengths = 4, [300, 300, 40, 5]
    bias = SymmetricAlibi(heads) if make_bias == "alibi" else RelativePositionBias(torch.randn(32, heads))
    q, k, v = split_qkv(torch.randn(sum(lengths), 3 * heads * 8), heads)
    ref = reference_attention(q, k, v, lengths, causal=causal, window=window, bias=bias)
    monkeypatch.setattr(plan, "MASK_BYTES", heads * 100 * 300 * 4)  # blocks of 100 rows for length 300
    recorded = _Recorded(bias)
    out = AttentionPlan(_batch(lengths), "sdpa").attend(q, k, v, causal=causal, window=window, bias=recorded)
    assert torch.allclose(out, ref, atol=1e-5)
    assert (heads, 100, 300) in recorded.shapes and (heads, 300, 300) not in recorded.shapes
    assert (heads, 40, 40) in recorded.shapes  # short lengths keep one cached mask
    assert max(h * r * c * 4 for h, r, c in recorded.shapes) <= plan.MASK_BYTES


def test_kernel_choice_falls_back_to_sdpa_for_needs_it_cannot_meet():
    plain = AttentionNeeds(head_dim=64)
    assert choose("torch_varlen", plain) == "torch_varlen"
    assert choose("torch_varlen", AttentionNeeds(head_dim=12)) == "sdpa"
    assert choose("torch_varlen", AttentionNeeds(head_dim=512)) == "sdpa"
    assert choose("torch_varlen", AttentionNeeds(head_dim=64, gqa=True, causal=True, window=True)) == "torch_varlen"
    assert choose("flash_attn", AttentionNeeds(head_dim=64, bias=True)) == "sdpa"
    assert choose("torch_nested", AttentionNeeds(head_dim=64, causal=True)) == "sdpa"
    assert choose("npu_fusion", AttentionNeeds(head_dim=12)) == "npu_fusion"
    assert choose("npu_fusion", AttentionNeeds(head_dim=1024)) == "sdpa"
    assert choose("npu_fusion", AttentionNeeds(head_dim=64, gqa=True, causal=True)) == "npu_fusion"
    assert choose("npu_prompt", AttentionNeeds(head_dim=64, causal=True)) == "sdpa"

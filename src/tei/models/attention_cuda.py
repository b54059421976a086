"""Packed attention on NVIDIA GPUs: one kernel call over the whole ragged batch, no padding.

Each kernel takes the batch once (per forward pass) and is then called by every layer with
`qkv` as `[T, 3, heads, head_dim]`; it returns `[T, heads, head_dim]`.

- `flash_attn`: the `flash-attn` package's varlen kernel, when it is installed.
- `torch_varlen`: `torch.nn.attention.varlen.varlen_attn` (PyTorch 2.10+), the same FlashAttention-2
  kernel shipped inside torch: needs no extra package.
- `torch_nested`: SDPA on a jagged NestedTensor (older PyTorch); torch picks flash or efficient attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .packed import PackedBatch


class FlashAttn:
    def __init__(self, batch: PackedBatch):
        self.cu_seqlens = batch.cu_seqlens
        self.max_len = batch.max_len

    def __call__(self, qkv: torch.Tensor) -> torch.Tensor:
        from flash_attn import flash_attn_varlen_qkvpacked_func

        return flash_attn_varlen_qkvpacked_func(qkv, self.cu_seqlens, self.max_len)


class TorchVarlen(FlashAttn):
    def __call__(self, qkv: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.varlen import varlen_attn

        q, k, v = qkv.unbind(1)
        cu, n = self.cu_seqlens, self.max_len
        return varlen_attn(q, k, v, cu, cu, n, n)


class TorchNested:
    def __init__(self, batch: PackedBatch):
        self.offsets = batch.cu_seqlens.to(torch.int64)
        self.max_len = batch.max_len
        self.min_len = min(batch.lengths)

    def _jagged(self, t: torch.Tensor) -> torch.Tensor:
        # Passing the bounds keeps torch from reading them back from the device (a sync per layer).
        nested = torch.nested.nested_tensor_from_jagged(
            t.contiguous(), self.offsets, min_seqlen=self.min_len, max_seqlen=self.max_len
        )
        return nested.transpose(1, 2)  # [B, heads, j, head_dim]

    def __call__(self, qkv: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._jagged(t) for t in qkv.unbind(1))
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).values()


KERNELS = {"flash_attn": FlashAttn, "torch_varlen": TorchVarlen, "torch_nested": TorchNested}


def self_test(kernel: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Does `kernel` run here, and agree with per-sequence SDPA on a small ragged batch?

    Run at start-up by the device layer, with the same call path as the model, so a kernel this
    GPU, torch build or head size can't run is never chosen."""
    lengths, heads, head_dim = [5, 33, 1, 64], 2, 64
    gen = torch.Generator().manual_seed(0)
    qkv = torch.randn(sum(lengths), 3, heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    ids = torch.zeros(sum(lengths), dtype=torch.int64, device=device)
    batch = PackedBatch(ids, ids, ids, cu.to(device), lengths, max(lengths))
    out = KERNELS[kernel](batch)(qkv).float()
    start, worst = 0, 0.0
    for n in lengths:
        q, k, v = qkv[start : start + n].float().permute(1, 2, 0, 3).unbind(0)  # [heads, n, head_dim]
        ref = F.scaled_dot_product_attention(q, k, v).transpose(0, 1)
        worst = max(worst, (out[start : start + n] - ref).abs().max().item())
        start += n
    # Rounding of O(1) values: ~1e-3 in fp16, ~1e-2 in bf16; a wrong layout or boundary is off by O(1).
    return worst < 5e-2

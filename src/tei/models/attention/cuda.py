"""Packed attention on NVIDIA GPUs: one kernel call over the whole ragged batch, no padding.

Each kernel takes the batch once (per forward pass) and is then called by every layer with q
`[T, Hq, D]` and k, v `[T, Hkv, D]`; it returns `[T, Hq, D]`. What each one supports is declared in
`attention.CAPABILITIES`.

- `flash_attn`: the `flash-attn` package's varlen kernel, when it is installed.
- `torch_varlen`: `torch.nn.attention.varlen.varlen_attn` (PyTorch 2.10+), the same FlashAttention-2
  kernel shipped inside torch: needs no extra package.
- `torch_nested`: SDPA on a jagged NestedTensor (older PyTorch); torch picks flash or efficient attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..batch import PackedBatch


def _window(causal: bool, window: tuple[int, int] | None) -> tuple[int, int]:
    """flash-attn's (left, right) convention, -1 meaning unbounded."""
    left, right = window if window is not None else (-1, -1)
    return left, (0 if causal else right)


class FlashAttn:
    def __init__(self, batch: PackedBatch):
        self.cu_seqlens = batch.cu_seqlens
        self.max_len = batch.max_len

    def __call__(self, q, k, v, *, causal=False, window=None, scale=None) -> torch.Tensor:
        from flash_attn import flash_attn_varlen_func

        cu, n = self.cu_seqlens, self.max_len
        return flash_attn_varlen_func(q, k, v, cu, cu, n, n, softmax_scale=scale, causal=causal,
                                      window_size=_window(False, window))


class TorchVarlen(FlashAttn):
    def __call__(self, q, k, v, *, causal=False, window=None, scale=None) -> torch.Tensor:
        from torch.nn.attention.varlen import varlen_attn

        cu, n = self.cu_seqlens, self.max_len
        return varlen_attn(q, k, v, cu, cu, n, n, scale=scale, window_size=_window(causal, window),
                           enable_gqa=k.shape[1] != q.shape[1])


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

    def __call__(self, q, k, v, *, causal=False, window=None, scale=None) -> torch.Tensor:
        q, k, v = (self._jagged(t) for t in (q, k, v))
        return F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(1, 2).values()


KERNELS = {"flash_attn": FlashAttn, "torch_varlen": TorchVarlen, "torch_nested": TorchNested}


def self_test(kernel: str, device: torch.device, dtype: torch.dtype, causal: bool = False, kv_heads: int = 2) -> bool:
    """Does `kernel` run here, and agree with per-sequence SDPA on a small ragged batch?

    Run at start-up by the device layer, with the same call path as the model, so a kernel this
    GPU, torch build or head size can't run is never chosen."""
    lengths, heads, head_dim = [5, 33, 1, 64], 2, 64
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(sum(lengths), heads, head_dim, generator=gen).to(device=device, dtype=dtype)
    k, v = (torch.randn(sum(lengths), kv_heads, head_dim, generator=gen).to(device=device, dtype=dtype) for _ in "kv")
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(torch.tensor(lengths), 0)
    ids = torch.zeros(sum(lengths), dtype=torch.int64, device=device)
    batch = PackedBatch(ids, ids, ids, cu.to(device), lengths, max(lengths))
    out = KERNELS[kernel](batch)(q, k, v, causal=causal).float()
    start, worst = 0, 0.0
    for n in lengths:
        qs, ks, vs = (t[start:start + n].float().transpose(0, 1) for t in (q, k, v))  # [heads, n, head_dim]
        ref = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, enable_gqa=kv_heads != heads)
        worst = max(worst, (out[start:start + n] - ref.transpose(0, 1)).abs().max().item())
        start += n
    # Rounding of O(1) values: ~1e-3 in fp16, ~1e-2 in bf16; a wrong layout or boundary is off by O(1).
    return worst < 5e-2

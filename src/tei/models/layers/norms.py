"""Normalization layers over packed `[T, H]` (or `[T, heads, D]`) tensors, built from checkpoint tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """LayerNorm with or without a bias (ModernBERT's norms have none)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """x / rms(x) * w, computed in float32 as Llama, Qwen and Gemma do. `offset=1` is Gemma's
    `(1 + w)` form, folded into the stored weight once."""

    def __init__(self, weight: torch.Tensor, eps: float, offset: float = 0.0):
        super().__init__()
        w = weight.float() + offset if offset else weight.float()
        self.weight = nn.Parameter(w, requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps).to(x.dtype)


def layer_norm(w, prefix: str, eps: float, bias: bool = True) -> LayerNorm:
    """The LayerNorm stored at `prefix` (`.weight`, and `.bias` unless the family has none)."""
    return LayerNorm(w.get(f"{prefix}.weight"), w.get(f"{prefix}.bias") if bias else None, eps)

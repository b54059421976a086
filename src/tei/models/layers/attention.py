"""Self-attention on packed tokens: one fused q/k/v projection, optional per-head q/k (and v) norms and
rotary positions, the batch's attention kernel, and the output projection (with the residual fused)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..attention import AttentionNeeds, AttentionPlan
from .linear import Linear
from .rotary import Rotary, apply_rotary


class SelfAttention(nn.Module):
    INT8_LINEARS = ("qkv", "out")

    def __init__(
        self,
        qkv: Linear,
        out: Linear,
        heads: int,
        kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        q_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        v_norm: nn.Module | None = None,
        rotary: Rotary | None = None,
        causal: bool = False,
        window: tuple[int, int] | None = None,
        bias: Callable | None = None,
        scale: float | None = None,
    ):
        super().__init__()
        self.qkv, self.out = qkv, out
        self.heads = heads
        self.kv_heads = kv_heads or heads
        self.head_dim = head_dim or qkv.out_features // (heads + 2 * self.kv_heads)
        self.q_norm, self.k_norm, self.v_norm = q_norm, k_norm, v_norm
        self.rotary = rotary
        self.causal, self.window, self.bias, self.scale = causal, window, bias, scale
        q_size, kv_size = heads * self.head_dim, self.kv_heads * self.head_dim
        if qkv.out_features != q_size + 2 * kv_size:
            raise ValueError(f"q/k/v projection has {qkv.out_features} outputs, expected {q_size + 2 * kv_size}")
        self.sizes = (q_size, kv_size, kv_size)

    @property
    def needs(self) -> AttentionNeeds:
        return AttentionNeeds(
            head_dim=self.head_dim,
            gqa=self.kv_heads != self.heads,
            causal=self.causal,
            window=self.window is not None,
            bias=self.bias is not None,
        )

    def forward(self, x: torch.Tensor, plan: AttentionPlan, residual: torch.Tensor | None = None) -> torch.Tensor:
        total = x.shape[0]
        q, k, v = self.qkv(x).split(self.sizes, dim=-1)
        q = q.view(total, self.heads, self.head_dim)  # [T, Hq, D]
        k = k.view(total, self.kv_heads, self.head_dim)  # [T, Hkv, D]
        v = v.view(total, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.v_norm is not None:
            v = self.v_norm(v)
        if self.rotary is not None:
            cos, sin = plan.rope(self.rotary, q.dtype)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        ctx = plan.attend(q, k, v, causal=self.causal, window=self.window, bias=self.bias, scale=self.scale)
        return self.out(ctx) if residual is None else self.out.add(ctx, residual)

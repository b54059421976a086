"""Transformer blocks and the encoder stack that every family assembles from its own weights."""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..attention import AttentionNeeds, AttentionPlan
from ..batch import PackedBatch


class PostNormLayer(nn.Module):
    """BERT's block: x = norm(x + attn(x)); x = norm(x + mlp(x)). The residual adds run inside the
    output projections (Linear.add)."""

    def __init__(self, attn: nn.Module, attn_norm: nn.Module, mlp: nn.Module, mlp_norm: nn.Module):
        super().__init__()
        self.attn, self.attn_norm, self.mlp, self.mlp_norm = attn, attn_norm, mlp, mlp_norm

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        x = self.attn_norm(self.attn(x, plan, residual=x))
        return self.mlp_norm(self.mlp(x, residual=x))


class PreNormLayer(nn.Module):
    """Decoders' and ModernBERT's block: x = x + attn(norm(x)); x = x + mlp(norm(x)). An identity
    `attn_norm` (ModernBERT's first layer) is allowed."""

    def __init__(self, attn_norm: nn.Module | None, attn: nn.Module, mlp_norm: nn.Module, mlp: nn.Module):
        super().__init__()
        self.attn_norm, self.attn, self.mlp_norm, self.mlp = attn_norm, attn, mlp_norm, mlp

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        h = x if self.attn_norm is None else self.attn_norm(x)
        x = self.attn(h, plan, residual=x)
        return self.mlp(self.mlp_norm(x), residual=x)


class SandwichLayer(nn.Module):
    """Gemma's block, four norms: x = x + post_attn(attn(pre_attn(x))); x = x + post_mlp(mlp(pre_mlp(x))).
    The residual cannot ride in the output projections: a norm sits between them and the add."""

    def __init__(self, attn_norm: nn.Module, attn: nn.Module, post_attn_norm: nn.Module,
                 mlp_norm: nn.Module, mlp: nn.Module, post_mlp_norm: nn.Module):
        super().__init__()
        self.attn_norm, self.attn, self.post_attn_norm = attn_norm, attn, post_attn_norm
        self.mlp_norm, self.mlp, self.post_mlp_norm = mlp_norm, mlp, post_mlp_norm

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        x = x + self.post_attn_norm(self.attn(self.attn_norm(x), plan))
        return x + self.post_mlp_norm(self.mlp(self.mlp_norm(x)))


def merge_needs(needs: list[AttentionNeeds]) -> AttentionNeeds:
    """What a kernel must support to run every layer."""
    first = needs[0]
    dims = {n.head_dim for n in needs}
    return dataclasses.replace(
        first,
        head_dim=max(dims),
        head_dim_gcd=math.gcd(*dims) if len(dims) > 1 else 0,
        gqa=any(n.gqa for n in needs),
        causal=any(n.causal for n in needs),
        window=any(n.window for n in needs),
        bias=any(n.bias for n in needs),
    )


class Encoder(nn.Module):
    """Packed ids → packed hidden states [T, H]: embeddings, layers, an optional final norm.

    The contract every family's encoder keeps (models/loader.py relies on nothing else):
    `hidden_size`, `layers` (each called as layer(x, plan)), `attention` (its SelfAttention modules,
    for the kernel's needs and the warm-up), and forward(batch, plan); optionally `output_size`, where
    the states it returns are not `hidden_size` wide."""

    def __init__(self, embeddings: nn.Module, layers: list[nn.Module], hidden_size: int,
                 final_norm: nn.Module | None = None):
        super().__init__()
        self.embeddings = embeddings
        self.layers = nn.ModuleList(layers)
        self.final_norm = final_norm
        self.hidden_size = hidden_size

    @property
    def attention(self) -> list[nn.Module]:
        from .attention import SelfAttention

        return [m for m in self.modules() if isinstance(m, SelfAttention)]

    @property
    def needs(self) -> AttentionNeeds:
        return merge_needs([a.needs for a in self.attention])

    def embed(self, batch: PackedBatch) -> torch.Tensor:
        return self.embeddings(batch)

    def forward(self, batch: PackedBatch, plan: AttentionPlan) -> torch.Tensor:
        x = self.embed(batch)
        for layer in self.layers:
            x = layer(x, plan)
        return x if self.final_norm is None else self.final_norm(x)

"""Feed-forward blocks: the plain two-layer MLP and the gated one (SwiGLU, GeGLU)."""
from __future__ import annotations

import torch
from torch import nn

from .linear import ACTIVATIONS, Linear, check_activation


class MLP(nn.Module):
    """down(act(up(x))), with the residual added inside `down` when given."""

    INT8_LINEARS = ("up",)

    def __init__(self, up: Linear, down: Linear):
        super().__init__()
        self.up, self.down = up, down

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        h = self.up(x)
        return self.down(h) if residual is None else self.down.add(h, residual)


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)) from one fused projection. `gate_first` says which half of the
    fused output is the gate: families store them in either order (Nomic's fc11/fc12, GTE's
    up_gate_proj, ModernBERT's Wi, Llama's gate_proj/up_proj)."""

    INT8_LINEARS = ("gate_up",)

    def __init__(self, gate_up: Linear, down: Linear, activation: str, gate_first: bool = True):
        super().__init__()
        self.gate_up, self.down = gate_up, down
        self.act = ACTIVATIONS[check_activation(activation)][0]
        self.gate_first = gate_first

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        a, b = self.gate_up(x).chunk(2, dim=-1)
        gate, up = (a, b) if self.gate_first else (b, a)
        h = self.act(gate) * up
        return self.down(h) if residual is None else self.down.add(h, residual)

"""Linear layers whose epilogue (bias, activation, residual add) runs inside the matrix multiply.

On x86 CPUs oneDNN (`torch.ops.mkldnn`, the kernels behind torch.compile's CPU backend) applies
the bias, the activation or the residual add while each output tile is still in cache, on weights
reordered once into its blocked layout; in bfloat16 it runs on AMX. That saves a full pass over
every activation tensor: all-MiniLM-L6-v2's up-projection + GELU takes 17% less time fused, and a
one-sequence batch's linear layers about half (benchmarks/README.md). Elsewhere the same calls
run as F.linear followed by the plain op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# config `hidden_act` → (eager function, oneDNN post-op, oneDNN algorithm)
ACTIVATIONS = {
    "gelu": (F.gelu, "gelu", "none"),
    "gelu_new": (lambda x: F.gelu(x, approximate="tanh"), "gelu", "tanh"),
    "relu": (F.relu, "relu", ""),
    "silu": (F.silu, "swish", ""),
    "tanh": (torch.tanh, "tanh", ""),
}
for _alias in ("gelu_pytorch_tanh", "gelu_fast", "gelu_approximate"):
    ACTIVATIONS[_alias] = ACTIVATIONS["gelu_new"]
ACTIVATIONS["swish"] = ACTIVATIONS["silu"]


def check_activation(name: str | None) -> str:
    name = (name or "gelu").lower()
    if name not in ACTIVATIONS:
        raise ValueError(f"Activation `{name}` is not supported")
    return name


class Linear(nn.Module):
    """y = act(x @ W.T + b), or x @ W.T + b + residual through `add`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, activation: str | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.activation = check_activation(activation) if activation else None
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.onednn = False

    def use_onednn(self) -> None:
        """Switch to oneDNN (where devices.Placement.onednn_linear says so). The weight is reordered
        into oneDNN's blocked layout once, and that copy replaces the plain one."""
        weight, bias = self.weight.detach().contiguous(), self.bias
        del self.weight, self.bias  # plain attributes from here: a oneDNN tensor cannot be a Parameter
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if bias is None else bias.detach().contiguous()
        self.onednn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.onednn:
            if self.activation is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
            _, post_op, algorithm = ACTIVATIONS[self.activation]
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, post_op, [], algorithm)
        y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else ACTIVATIONS[self.activation][0](y)

    def add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + x @ W.T + b (no activation): the residual connection of an encoder layer."""
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        return residual + F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} → {self.out_features}, activation={self.activation}, onednn={self.onednn}"


def concatenated(*parts: tuple[torch.Tensor, torch.Tensor | None]) -> Linear:
    """One Linear whose output is the concatenation of several (q, k, v → qkv)."""
    weight = torch.cat([w for w, _ in parts], 0)
    bias = None if parts[0][1] is None else torch.cat([b for _, b in parts], 0)
    return Linear(weight, bias)


def use_onednn(*modules: nn.Module | None) -> None:
    """Move every Linear inside these modules to oneDNN."""
    for module in modules:
        for layer in module.modules() if module is not None else ():
            if isinstance(layer, Linear):
                layer.use_onednn()

"""Linear layers whose epilogue (bias, activation, residual add) runs inside the matrix multiply.

On x86 CPUs oneDNN (`torch.ops.mkldnn`, the kernels behind torch.compile's CPU backend) applies
the bias, the activation or the residual add while each output tile is still in cache, on weights
reordered once into its blocked layout; in bfloat16 it runs on AMX. That saves a pass over every
activation tensor: an all-MiniLM-L6-v2 forward pass of 4096 tokens takes 11% less time in float32,
21% less in bfloat16 (benchmarks/README.md). Elsewhere (other devices, and torch.compile, which
fuses on its own) the same calls run as F.linear followed by the plain op.
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
        self.int8 = False

    def use_onednn(self) -> None:
        """Switch to oneDNN (where devices.Placement.onednn_linear says so). The weight is reordered
        into oneDNN's blocked layout once, and that copy replaces the plain one."""
        weight, bias = self.weight.detach().contiguous(), self.bias
        del self.weight, self.bias  # plain attributes from here: a oneDNN tensor cannot be a Parameter
        self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        self.bias = None if bias is None else bias.detach().contiguous()
        self.onednn = True

    def use_int8(self) -> None:
        """Dynamic int8 quantization through oneDNN (--dtype int8, float32 models on CPU): the weight is
        quantized once, per output channel; the input is quantized at every call, over the whole
        tensor (asymmetric uint8), so a row's result depends a little on what shares its batch, as
        with any dynamic quantization. Bias, activation and residual add stay fused."""
        weight = self.weight.detach().float()
        scale = (weight.abs().amax(1) / 127).clamp_(min=1e-12)
        qweight = torch.round(weight / scale[:, None]).clamp_(-128, 127).to(torch.int8)
        bias = self.bias
        del self.weight, self.bias
        self.weight = torch.ops.onednn.qlinear_prepack(qweight, None)
        self.bias = None if bias is None else bias.detach().float().contiguous()
        self.weight_scale = scale
        self.weight_zero = torch.zeros(scale.shape[0], dtype=torch.long)
        self.int8 = True

    def _int8(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        low, high = torch.aminmax(x)
        scale = ((high.clamp(min=0) - low.clamp(max=0)) / 255).clamp_(min=1e-12)
        zero = torch.round(-low.clamp(max=0) / scale).to(torch.int32)
        qx = x.div(scale).round_().add_(zero).clamp_(0, 255).to(torch.uint8)
        _, post_op, algorithm = ACTIVATIONS[self.activation] if self.activation else (None, "none", "")
        args = (qx, scale, zero, self.weight, self.weight_scale, self.weight_zero)
        if residual is None:
            return torch.ops.onednn.qlinear_pointwise.tensor(
                *args, self.bias, 1.0, 0, torch.float32, post_op, [], algorithm
            )
        return torch.ops.onednn.qlinear_pointwise.binary_tensor(
            *args, residual, self.bias, 1.0, 0, torch.float32, 1.0, 0, "add", 1.0, post_op, [], algorithm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8:
            return self._int8(x)
        if self.onednn:
            if self.activation is None:
                return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
            _, post_op, algorithm = ACTIVATIONS[self.activation]
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, post_op, [], algorithm)
        y = F.linear(x, self.weight, self.bias)
        return y if self.activation is None else ACTIVATIONS[self.activation][0](y)

    def add(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """residual + x @ W.T + b (no activation): the residual connection of an encoder layer."""
        if self.int8:
            return self._int8(x, residual)
        if self.onednn:
            return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.weight, self.bias, "add")
        return residual + F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        kind = "int8" if self.int8 else "onednn" if self.onednn else "eager"
        return f"{self.in_features} → {self.out_features}, activation={self.activation}, {kind}"


def linear(w, prefix: str, activation: str | None = None, bias: bool = True) -> Linear:
    """The Linear stored at `prefix` of a checkpoint (`.weight`, and `.bias` unless the layer has none)."""
    return Linear(w.get(f"{prefix}.weight"), w.get(f"{prefix}.bias") if bias else None, activation)


def fused_linear(w, prefixes, bias: bool = True) -> Linear:
    """One Linear over the Linears stored at `prefixes`, outputs concatenated in that order (q, k, v → qkv)."""
    return concatenated(*((w.get(f"{p}.weight"), w.get(f"{p}.bias") if bias else None) for p in prefixes))


def concatenated(*parts: tuple[torch.Tensor, torch.Tensor | None]) -> Linear:
    """One Linear whose output is the concatenation of several (q, k, v → qkv)."""
    weight = torch.cat([w for w, _ in parts], 0)
    bias = None if parts[0][1] is None else torch.cat([b for _, b in parts], 0)
    return Linear(weight, bias)


def use_onednn(*modules: nn.Module | None) -> None:
    """Move every Linear inside these modules to oneDNN (those already in int8 stay as they are)."""
    for module in modules:
        for layer in module.modules() if module is not None else ():
            if isinstance(layer, Linear) and not layer.int8:
                layer.use_onednn()


def use_int8(encoder: nn.Module) -> None:
    """Quantize the linear layers each module lists in INT8_LINEARS (attention's q/k/v and output
    projections, the MLP's up projection). The MLP's down projection stays in float32: its input,
    the GELU output, has outliers that per-tensor int8 cannot hold (all-MiniLM-L6-v2: min cos 0.93
    vs 0.99)."""
    for layer in encoder.modules():
        for name in getattr(layer, "INT8_LINEARS", ()):
            getattr(layer, name).use_int8()

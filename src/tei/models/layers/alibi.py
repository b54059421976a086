"""ALiBi: a per-head linear penalty on distance instead of position embeddings (JinaBERT)."""
from __future__ import annotations

import math

import torch


def alibi_slopes(heads: int) -> torch.Tensor:
    """The geometric slopes of the ALiBi paper, with the interleaved extension for head counts that
    are not a power of two."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(power_of_two(heads))
    closest = 2 ** math.floor(math.log2(heads))
    extra = power_of_two(2 * closest)[0::2][: heads - closest]
    return torch.tensor(power_of_two(closest) + extra)


class SymmetricAlibi:
    """bias(length) → [heads, L, L] = -slope · |i − j|: the same penalty both ways (bidirectional);
    `rows=(start, stop)`: those query rows only."""

    def __init__(self, heads: int):
        self.slopes = alibi_slopes(heads)

    def __call__(self, length: int, device, dtype, rows: tuple[int, int] | None = None) -> torch.Tensor:
        start, stop = rows or (0, length)
        keys, queries = torch.arange(length, device=device), torch.arange(start, stop, device=device)
        distance = (keys[None, :] - queries[:, None]).abs().to(torch.float32)
        return (-self.slopes.to(device)[:, None, None] * distance).to(dtype)

"""Attention over packed batches: what each kernel can do, and the choice made at load time.

A model states its `AttentionNeeds` (head size, grouped k/v heads, causal, a local window, an
additive bias). The device layer names the fastest kernel that runs on this hardware
(devices.select_attention); `choose` keeps it only if it covers every need, else falls back to
SDPA per run of equal lengths, which covers them all. A model a kernel cannot run is therefore
never given that kernel: no wrong answer and no failure at request time.
"""
from __future__ import annotations

import dataclasses

from .plan import AttentionPlan

__all__ = ["AttentionNeeds", "AttentionPlan", "CAPABILITIES", "choose"]


@dataclasses.dataclass(frozen=True)
class AttentionNeeds:
    head_dim: int  # the largest head size of the model's layers
    gqa: bool = False  # fewer k/v heads than q heads
    causal: bool = False
    window: bool = False  # a local window (ModernBERT, Gemma3, Mistral)
    bias: bool = False  # an additive score bias (ALiBi, MPNet's relative positions)
    # Where layers differ in head size (EmbeddingGemma 2's global layers): their common divisor, which a
    # kernel's size multiple must divide. 0: every layer has `head_dim`.
    head_dim_gcd: int = 0


@dataclasses.dataclass(frozen=True)
class Capabilities:
    head_dim_multiple: int = 1
    head_dim_max: int = 1 << 30
    gqa: bool = True
    causal: bool = True
    window: bool = True
    bias: bool = True

    def covers(self, needs: AttentionNeeds) -> bool:
        return (
            (needs.head_dim_gcd or needs.head_dim) % self.head_dim_multiple == 0
            and needs.head_dim <= self.head_dim_max
            and (self.gqa or not needs.gqa)
            and (self.causal or not needs.causal)
            and (self.window or not needs.window)
            and (self.bias or not needs.bias)
        )


CAPABILITIES = {
    "sdpa": Capabilities(),
    "flash_attn": Capabilities(8, 256, bias=False),
    "torch_varlen": Capabilities(8, 256, bias=False),
    # Nested-tensor SDPA: no per-sequence masks, and k/v must match q's heads.
    "torch_nested": Capabilities(8, 256, gqa=False, causal=False, window=False, bias=False),
    # FlashAttentionScore in TND layout: GQA and the compressed causal mask (sparse_mode 3).
    "npu_fusion": Capabilities(1, 768, window=False, bias=False),
    # Prompt-flash on 310P: a padded mask of our own, no GQA (its docs), bidirectional only here.
    "npu_prompt": Capabilities(16, 512, gqa=False, causal=False, window=False, bias=False),
}


def choose(preferred: str, needs: AttentionNeeds) -> str:
    caps = CAPABILITIES.get(preferred)
    return preferred if caps is not None and caps.covers(needs) else "sdpa"

"""SPLADE: a masked-language-model head over the encoder, pooled into one weight per vocabulary entry.

Each sequence's vector is max over its tokens of log(1 + relu(logits)) (sentence-transformers'
`SpladePooling`, strategy max, as TEI pools it). Both functions rise monotonically, so the max is
taken over the raw logits first and transformed once: the same numbers for a vocabulary-wide row per
sequence instead of one per token.
"""
from __future__ import annotations

import torch
from torch import nn

from .batch import PackedBatch
from .layers import Linear, layer_norm
from .weights import Weights

# Rows of logits computed at once: a [rows, vocabulary] block stays near 60 MB for a 30k vocabulary.
_ROWS_PER_BLOCK = 512


class MaskedLMHead(nn.Module):
    """transform (dense, activation, LayerNorm), then the decoder to vocabulary logits."""

    def __init__(self, w: Weights, names: dict[str, str], activation: str, eps: float):
        super().__init__()
        self.dense = Linear(w.get(f"{names['dense']}.weight"), w.get(f"{names['dense']}.bias"), activation)
        self.norm = layer_norm(w, names["norm"], eps)
        # The decoder is usually tied to the word embeddings, and then not stored on its own.
        decoder = names["decoder"] + ".weight"
        weight = w.get(decoder) if w.has(decoder) else w.get("embeddings.word_embeddings.weight")
        bias = next((w.get(n) for n in names["bias"] if w.has(n)), None)
        self.decoder = Linear(weight, bias)

    @property
    def vocab_size(self) -> int:
        return self.decoder.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.dense(x)))


def pool(hidden: torch.Tensor, batch: PackedBatch, head: MaskedLMHead, count: int, log1p_times: int) -> torch.Tensor:
    """hidden [T, H], in the head's dtype → [count, vocabulary]: the SPLADE vectors of the first
    `count` sequences."""
    ends = batch.cu_seqlens.tolist()
    out = torch.empty(count, head.vocab_size, dtype=torch.float32, device=hidden.device)
    first = 0
    while first < count:
        last = first + 1  # sequences [first, last) share one block of logits
        while last < count and ends[last + 1] - ends[first] <= _ROWS_PER_BLOCK:
            last += 1
        logits = head(hidden[ends[first]:ends[last]]).float()
        for i in range(first, last):
            out[i] = logits[ends[i] - ends[first]:ends[i + 1] - ends[first]].amax(0)
        first = last
    out.relu_()
    for _ in range(log1p_times):
        out.log1p_()
    return out

"""Token embeddings: word, then optional absolute positions and token types, then an optional norm."""
from __future__ import annotations

import torch
from torch import nn

from ..batch import PackedBatch


def _table(weight: torch.Tensor) -> nn.Embedding:
    return nn.Embedding.from_pretrained(weight, freeze=True)


class TokenEmbeddings(nn.Module):
    def __init__(self, word: torch.Tensor, position: torch.Tensor | None = None,
                 token_type: torch.Tensor | None = None, norm: nn.Module | None = None, scale: float | None = None):
        super().__init__()
        self.word = _table(word)
        self.position = None if position is None else _table(position)
        # RoBERTa-family tables have one row: every token gets it, whatever type id a BERT-style pair
        # template hands out (indexing row 1 would fail the batch, or assert on the GPU).
        self.token_type_row = token_type[0] if token_type is not None and token_type.shape[0] == 1 else None
        self.token_type = _table(token_type) if token_type is not None and self.token_type_row is None else None
        self.norm = norm
        self.scale = scale  # Gemma multiplies by √hidden, in the model's dtype

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.word(batch.input_ids)
        if self.scale is not None:
            x = x * torch.tensor(self.scale, dtype=x.dtype)
        if self.position is not None:
            x = x + self.position(batch.position_ids)
        if self.token_type is not None:
            x = x + self.token_type(batch.token_type_ids)
        elif self.token_type_row is not None:
            x = x + self.token_type_row
        return x if self.norm is None else self.norm(x)

"""LLM rerankers scored by two tokens (Qwen3-Reranker): relevance = sigmoid(logit_yes − logit_no) at the
last token of the rendered prompt.

Only the two LM-head rows are kept: the full vocabulary projection (151936 rows for Qwen3) would cost
more than the rest of a short pair's forward pass. logit_yes − logit_no = h · (w_yes − w_no), so one
row in float32 gives the raw score, and scores.activate's sigmoid gives the probability, as
softmax([no, yes])[1] does.
"""
from __future__ import annotations

import torch
from torch import nn


class YesNoHead(nn.Module):
    pooling = "last_token"

    def __init__(self, lm_head: torch.Tensor, token_ids: tuple[int, int]):
        super().__init__()
        yes, no = token_ids
        rows = lm_head[[yes, no]].float()  # before any dtype conversion of the stored table
        self.weight = nn.Parameter((rows[0] - rows[1])[None, :], requires_grad=False)  # [1, H]

    def forward(self, last: torch.Tensor) -> torch.Tensor:
        return last.float() @ self.weight.T  # [B, 1]: logit_yes − logit_no

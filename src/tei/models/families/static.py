"""Static embeddings: sentence-transformers `StaticEmbedding` (static-retrieval-mrl-en-v1, ...) and
model2vec (potion-*): one learned row per token, averaged over the text's tokens, which are cut
without special tokens (models/spec.py removes the tokenizer's post-processor). No attention, no
layers. Embeddings come from one fused `embedding_bag` (what sentence-transformers runs): with
nothing else to compute, materializing every token's row and then averaging them took 3-4x the time
of the sum in place. `/embed_all` and `/tokenize`-style per-token outputs still get each row.

model2vec files are folded once at load, as sentence-transformers does when it loads them: a
`mapping` (vocabulary-quantized models share rows) and per-token `weights` become one row per token
id. model2vec's own `encode` also drops the unknown token before averaging (a text of nothing but
unknown tokens gives a zero vector); folders written by model2vec (`config.json` `model_type:
model2vec`) follow it. sentence-transformers keeps that token, and so do its StaticEmbedding folders.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..batch import PackedBatch
from ..layers import Encoder, TokenEmbeddings
from ..weights import Weights

PREFIXES = ()
IGNORED = ()


def fold_model2vec(w: Weights) -> torch.Tensor:
    """embedding[token] = embeddings[mapping[token]] · weights[token], in float32."""
    rows = w.raw("embeddings").float()
    if w.has("mapping"):
        rows = rows[w.raw("mapping").long()]
    if w.has("weights"):
        rows = rows * w.raw("weights").float()[:, None]
    return rows.to(device=w.device, dtype=w.dtype)


class StaticRows(nn.Module):
    """Each token's row. With `drop_id` (model2vec's unknown token) that token's row is zero and the
    others are scaled by length / kept, so the shared mean over all tokens is the mean over the kept
    ones, and a sequence with none kept averages to zero."""

    def __init__(self, table: torch.Tensor, drop_id: int | None = None):
        super().__init__()
        self.rows = TokenEmbeddings(table)
        self.drop_id = drop_id

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.rows(batch)
        if self.drop_id is None:
            return x
        keep = batch.input_ids != self.drop_id
        lengths = torch.tensor(batch.lengths, device=x.device)
        seq = torch.repeat_interleave(torch.arange(batch.num_seqs, device=x.device), lengths)
        kept = torch.zeros(batch.num_seqs, device=x.device).index_add_(0, seq, keep.float())
        scale = torch.where(keep, lengths[seq] / kept[seq].clamp(min=1), 0.0)
        return x * scale[:, None].to(x.dtype)

    def mean(self, batch: PackedBatch) -> torch.Tensor:
        """[B, H]: the mean of each sequence's rows (of its kept rows, with `drop_id`), in float32."""
        table, ids = self.rows.word.weight, batch.input_ids
        offsets = batch.cu_seqlens[:-1].to(torch.int64)
        if self.drop_id is None:
            return F.embedding_bag(ids, table, offsets, mode="mean").float()
        keep = (ids != self.drop_id).to(table.dtype)
        lengths = torch.tensor(batch.lengths, device=ids.device)
        seq = torch.repeat_interleave(torch.arange(batch.num_seqs, device=ids.device), lengths)
        kept = torch.zeros(batch.num_seqs, device=ids.device, dtype=table.dtype).index_add_(0, seq, keep)
        weights = keep / kept.clamp(min=1)[seq]
        return F.embedding_bag(ids, table, offsets, mode="sum", per_sample_weights=weights).float()


class StaticEncoder(Encoder):
    """An Encoder whose mean pooling is fused (Model.forward asks `pooled_mean` when it needs no rows)."""

    def pooled_mean(self, batch: PackedBatch) -> torch.Tensor:
        return self.embeddings.mean(batch)


def encoder(w: Weights, cfg: dict) -> Encoder:
    table = w.get("embedding.weight") if w.has("embedding.weight") else fold_model2vec(w)
    # models/spec.py reads the unknown token's id from model2vec folders' tokenizers (none otherwise)
    return StaticEncoder(StaticRows(table, cfg.get("unk_token_id")), [], table.shape[1])

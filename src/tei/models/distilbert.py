"""DistilBERT on packed tokens: BERT without token types, with its own weight names and head."""
from __future__ import annotations

import torch
from torch import nn

from .linear import ENCODER_INT8_LINEARS, Linear, concatenated
from .packed import AttentionPlan, PackedBatch, make_layer_norm
from .splade import MaskedLMHead
from .weights import Weights

PREFIXES = ("distilbert",)
_EPS = 1e-12  # fixed in transformers' DistilBERT, not read from the config


class DistilBertLayer(nn.Module):
    INT8_LINEARS = ENCODER_INT8_LINEARS

    def __init__(self, w: Weights, p: str, cfg: dict):
        super().__init__()
        self.num_heads = cfg["n_heads"]
        a = f"{p}.attention"
        self.qkv = concatenated(*((w.get(f"{a}.{n}.weight"), w.get(f"{a}.{n}.bias")) for n in ("q_lin", "k_lin", "v_lin")))
        self.attn_out = Linear(w.get(f"{a}.out_lin.weight"), w.get(f"{a}.out_lin.bias"))
        self.attn_norm = make_layer_norm(w.get(f"{p}.sa_layer_norm.weight"), w.get(f"{p}.sa_layer_norm.bias"), _EPS)
        self.up = Linear(w.get(f"{p}.ffn.lin1.weight"), w.get(f"{p}.ffn.lin1.bias"), cfg.get("activation", "gelu"))
        self.down = Linear(w.get(f"{p}.ffn.lin2.weight"), w.get(f"{p}.ffn.lin2.bias"))
        self.out_norm = make_layer_norm(w.get(f"{p}.output_layer_norm.weight"), w.get(f"{p}.output_layer_norm.bias"), _EPS)

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        ctx = plan.attend(self.qkv(x), self.num_heads)
        x = self.attn_norm(self.attn_out.add(ctx, x))
        return self.out_norm(self.down.add(self.up(x), x))


class DistilBertModel(nn.Module):
    def __init__(self, w: Weights, cfg: dict, attention: str):
        super().__init__()
        self.attention = attention
        self.word = nn.Embedding.from_pretrained(w.get("embeddings.word_embeddings.weight"), freeze=True)
        self.position = nn.Embedding.from_pretrained(w.get("embeddings.position_embeddings.weight"), freeze=True)
        self.norm = make_layer_norm(w.get("embeddings.LayerNorm.weight"), w.get("embeddings.LayerNorm.bias"), _EPS)
        self.layers = nn.ModuleList(DistilBertLayer(w, f"transformer.layer.{i}", cfg) for i in range(cfg["n_layers"]))

    def forward(self, batch: PackedBatch) -> torch.Tensor:
        x = self.norm(self.word(batch.input_ids) + self.position(batch.position_ids))
        plan = AttentionPlan(batch, self.attention)
        for layer in self.layers:
            x = layer(x, plan)
        return x


class DistilBertClassifierHead(nn.Module):
    """`DistilBertForSequenceClassification`: pre_classifier + ReLU + classifier on [CLS]."""

    def __init__(self, w: Weights):
        super().__init__()
        self.pre = Linear(w.get("pre_classifier.weight"), w.get("pre_classifier.bias"))
        self.classifier = Linear(w.get("classifier.weight"), w.get("classifier.bias"))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.pre(cls)))


def build(w: Weights, cfg: dict, attention: str, classifier: bool):
    return DistilBertModel(w, cfg, attention), (DistilBertClassifierHead(w) if classifier else None)


def mlm_head(w: Weights, cfg: dict) -> MaskedLMHead:
    """The masked-LM head of `DistilBertForMaskedLM`."""
    names = {"dense": "vocab_transform", "norm": "vocab_layer_norm", "decoder": "vocab_projector",
             "bias": ("vocab_projector.bias",)}
    return MaskedLMHead(w, names, cfg.get("activation", "gelu"), _EPS)

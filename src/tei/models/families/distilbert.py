"""DistilBERT: BERT without token types, with its own weight names and head."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import MLP, Encoder, PostNormLayer, SelfAttention, TokenEmbeddings, fused_linear, layer_norm, linear
from ..splade import MaskedLMHead
from ..weights import Weights

PREFIXES = ("distilbert",)
IGNORED = ("vocab_*", "embeddings.position_ids")
_EPS = 1e-12  # fixed in transformers' DistilBERT, not read from the config


def _layer(w: Weights, p: str, cfg: dict) -> PostNormLayer:
    a = f"{p}.attention"
    qkv = fused_linear(w, [f"{a}.{n}" for n in ("q_lin", "k_lin", "v_lin")])
    attn = SelfAttention(qkv, linear(w, f"{a}.out_lin"), cfg["n_heads"])
    mlp = MLP(linear(w, f"{p}.ffn.lin1", cfg.get("activation", "gelu")), linear(w, f"{p}.ffn.lin2"))
    return PostNormLayer(attn, layer_norm(w, f"{p}.sa_layer_norm", _EPS), mlp, layer_norm(w, f"{p}.output_layer_norm", _EPS))


def encoder(w: Weights, cfg: dict) -> Encoder:
    embeddings = TokenEmbeddings(
        w.get("embeddings.word_embeddings.weight"),
        position=w.get("embeddings.position_embeddings.weight"),
        norm=layer_norm(w, "embeddings.LayerNorm", _EPS),
    )
    return Encoder(embeddings, [_layer(w, f"transformer.layer.{i}", cfg) for i in range(cfg["n_layers"])], cfg["dim"])


class DistilBertClassifierHead(nn.Module):
    """`DistilBertForSequenceClassification`: pre_classifier + ReLU + classifier on [CLS]."""

    pooling = "cls"

    def __init__(self, w: Weights):
        super().__init__()
        self.pre = linear(w, "pre_classifier", "relu")
        self.classifier = linear(w, "classifier")

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pre(cls))


def classifier(w: Weights, cfg: dict) -> nn.Module:
    return DistilBertClassifierHead(w)


def mlm_head(w: Weights, cfg: dict) -> MaskedLMHead:
    """The masked-LM head of `DistilBertForMaskedLM`."""
    names = {"dense": "vocab_transform", "norm": "vocab_layer_norm", "decoder": "vocab_projector",
             "bias": ("vocab_projector.bias",)}
    return MaskedLMHead(w, names, cfg.get("activation", "gelu"), _EPS)

"""BERT, RoBERTa, XLM-RoBERTa and CamemBERT: post-LayerNorm encoders with absolute positions.

The RoBERTa family is BERT with positions shifted by `pad_token_id + 1` (the registry's position
offset) and a different classification head.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import MLP, Encoder, PostNormLayer, SelfAttention, TokenEmbeddings, fused_linear, layer_norm, linear
from ..splade import MaskedLMHead
from ..weights import Weights

PREFIXES = ("bert", "roberta", "model")
IGNORED = ("pooler.*", "cls.*", "lm_head.*", "embeddings.position_ids")
ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")


def _layer(w: Weights, p: str, cfg: dict) -> PostNormLayer:
    eps = cfg.get("layer_norm_eps", 1e-12)
    a = f"{p}.attention"
    qkv = fused_linear(w, [f"{a}.self.{n}" for n in ("query", "key", "value")])
    attn = SelfAttention(qkv, linear(w, f"{a}.output.dense"), cfg["num_attention_heads"])
    mlp = MLP(linear(w, f"{p}.intermediate.dense", cfg.get("hidden_act", "gelu")), linear(w, f"{p}.output.dense"))
    return PostNormLayer(attn, layer_norm(w, f"{a}.output.LayerNorm", eps), mlp, layer_norm(w, f"{p}.output.LayerNorm", eps))


def encoder(w: Weights, cfg: dict) -> Encoder:
    if cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("Only absolute position embeddings are supported for BERT-family models")
    e = "embeddings"
    embeddings = TokenEmbeddings(
        w.get(f"{e}.word_embeddings.weight"),
        position=w.get(f"{e}.position_embeddings.weight"),
        token_type=w.optional(f"{e}.token_type_embeddings.weight"),
        norm=layer_norm(w, f"{e}.LayerNorm", cfg.get("layer_norm_eps", 1e-12)),
    )
    layers = [_layer(w, f"encoder.layer.{i}", cfg) for i in range(cfg["num_hidden_layers"])]
    return Encoder(embeddings, layers, cfg["hidden_size"])


class BertClassifierHead(nn.Module):
    """`BertForSequenceClassification`: pooler (dense + tanh on [CLS]) then a linear classifier."""

    pooling = "cls"

    def __init__(self, w: Weights):
        super().__init__()
        self.pooler = linear(w, "pooler.dense", "tanh")
        self.classifier = linear(w, "classifier")

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooler(cls))


class RobertaClassifierHead(nn.Module):
    """`RobertaClassificationHead`: dense + tanh + out_proj on the <s> token."""

    pooling = "cls"

    def __init__(self, w: Weights):
        super().__init__()
        self.dense = linear(w, "classifier.dense", "tanh")
        self.out_proj = linear(w, "classifier.out_proj")

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dense(cls))


def classifier(w: Weights, cfg: dict) -> nn.Module:
    return RobertaClassifierHead(w) if cfg.get("model_type") in ROBERTA_TYPES else BertClassifierHead(w)


def mlm_head(w: Weights, cfg: dict) -> MaskedLMHead:
    """The masked-LM head of `BertForMaskedLM` (`cls.predictions`) or `RobertaForMaskedLM` (`lm_head`)."""
    eps = cfg.get("layer_norm_eps", 1e-12)
    if cfg.get("model_type") in ROBERTA_TYPES:
        names = {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "decoder": "lm_head.decoder",
                 "bias": ("lm_head.bias", "lm_head.decoder.bias")}
        return MaskedLMHead(w, names, "gelu", eps)
    names = {"dense": "cls.predictions.transform.dense", "norm": "cls.predictions.transform.LayerNorm",
             "decoder": "cls.predictions.decoder", "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")}
    return MaskedLMHead(w, names, cfg.get("hidden_act", "gelu"), eps)

"""JinaBERT v2 (jina-embeddings-v2-*, jina-reranker-v1-*) and its code variant (jina-embeddings-v2-base-code).

`model_type: bert` checkpoints running Jina's remote code (the registry tells them apart by
`_name_or_path` / `auto_map`): no position table, a symmetric ALiBi bias instead, and a gated MLP
(GEGLU or ReGLU by `feed_forward_type`) that carries its own residual and LayerNorm.

The code variant (`jinaai/jina-bert-v2-qk-post-norm`) also normalizes q and k over their full width,
keeps the up half first in its fused MLP projection (the base model keeps the gate first), and adds
the layer input twice, as it was trained.
"""
from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionPlan
from ..layers import (AcrossHeads, Encoder, GatedMLP, PostNormLayer, SelfAttention, SymmetricAlibi, TokenEmbeddings,
                      fused_linear, layer_norm, linear)
from ..registry import is_jina_code
from ..weights import Weights

PREFIXES = ("bert",)
IGNORED = ("pooler.*", "cls.*", "embeddings.position_ids")
# `feed_forward_type` → the gate's activation: nn.ReLU / nn.GELU (exact) in Jina's code; `hidden_act`
# is not read for the gated MLP.
GLU_ACTIVATIONS = {"geglu": "gelu", "reglu": "relu"}


class DoubleResidualLayer(nn.Module):
    """JinaBERT-code's block: a = LN_out(attn(x) + x); h = LN_1(a + x); out = LN_2(mlp(h) + h)."""

    def __init__(self, attn: nn.Module, attn_norm: nn.Module, norm_1: nn.Module, mlp: nn.Module, norm_2: nn.Module):
        super().__init__()
        self.attn, self.attn_norm, self.norm_1, self.mlp, self.norm_2 = attn, attn_norm, norm_1, mlp, norm_2

    def forward(self, x: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        h = self.norm_1(self.attn_norm(self.attn(x, plan, residual=x)) + x)
        return self.norm_2(self.mlp(h, residual=h))


def _check(cfg: dict) -> str:
    if cfg.get("position_embedding_type", "alibi") != "alibi":
        raise ValueError(
            f"JinaBERT with position_embedding_type `{cfg['position_embedding_type']}` is not supported: only `alibi` is."
        )
    kind = cfg.get("feed_forward_type", "original")
    if kind not in GLU_ACTIVATIONS:
        raise ValueError(f"JinaBERT with feed_forward_type `{kind}` is not supported: {', '.join(GLU_ACTIVATIONS)} are.")
    return GLU_ACTIVATIONS[kind]


def encoder(w: Weights, cfg: dict) -> Encoder:
    activation = _check(cfg)
    code = is_jina_code(cfg)
    eps = cfg.get("layer_norm_eps", 1e-12)
    heads = cfg["num_attention_heads"]
    alibi = SymmetricAlibi(heads)  # one object for every layer: the plan builds each length's bias once
    embeddings = TokenEmbeddings(
        w.get("embeddings.word_embeddings.weight"),
        token_type=w.get("embeddings.token_type_embeddings.weight"),
        norm=layer_norm(w, "embeddings.LayerNorm", eps),
    )
    layers = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention"
        qkv = fused_linear(w, [f"{a}.self.{n}" for n in ("query", "key", "value")])
        norms = {}
        if code:
            norms = {"q_norm": AcrossHeads(layer_norm(w, f"{a}.self.layer_norm_q", eps)),
                     "k_norm": AcrossHeads(layer_norm(w, f"{a}.self.layer_norm_k", eps))}
        attn = SelfAttention(qkv, linear(w, f"{a}.output.dense"), heads, bias=alibi, **norms)
        attn_norm = layer_norm(w, f"{a}.output.LayerNorm", eps)
        if code:
            mlp = GatedMLP(linear(w, f"{p}.mlp.up_gated_layer", bias=False), linear(w, f"{p}.mlp.down_layer"),
                           activation, gate_first=False)
            layers.append(DoubleResidualLayer(attn, attn_norm, layer_norm(w, f"{p}.layer_norm_1", eps), mlp,
                                              layer_norm(w, f"{p}.layer_norm_2", eps)))
        else:
            mlp = GatedMLP(linear(w, f"{p}.mlp.gated_layers", bias=False), linear(w, f"{p}.mlp.wo"), activation,
                           gate_first=True)
            layers.append(PostNormLayer(attn, attn_norm, mlp, layer_norm(w, f"{p}.mlp.layernorm", eps)))
    return Encoder(embeddings, layers, cfg["hidden_size"])


class JinaClassifierHead(nn.Module):
    """`JinaBertForSequenceClassification`: BERT's pooler (dense + tanh on [CLS]) when the checkpoint
    has one, then the classifier (jina-reranker-v1 checkpoints may lack the pooler, as TEI allows)."""

    pooling = "cls"

    def __init__(self, w: Weights):
        super().__init__()
        self.pooler = linear(w, "pooler.dense", "tanh") if w.has("pooler.dense.weight") else None
        self.classifier = linear(w, "classifier")

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.classifier(cls if self.pooler is None else self.pooler(cls))


def classifier(w: Weights, cfg: dict) -> nn.Module:
    return JinaClassifierHead(w)

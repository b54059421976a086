"""Alibaba GTE "new" (gte-multilingual-base, gte-base-en-v1.5, gte-multilingual-reranker-base) and
Snowflake arctic-embed-m/l-v2.0 (`model_type: gte`): the rotary post-norm encoder with static-NTK
rotary, a GeGLU MLP whose fused `up_gate_proj` holds up first, and optionally no token types.

Hub checkpoints nest the encoder under `new.` (Alibaba) or nothing (Snowflake); transformers'
GteModel holds the native names (`gte.` in its heads); both load.
"""
from __future__ import annotations

from torch import nn

from ..layers import Encoder, Rotary, rope_parameters
from ..weights import Weights
from . import rope_bert
from .bert import BertClassifierHead

PREFIXES = ("new", "gte", "model")
# gte-multilingual-base ships a token-classification head (sparse term weights) that embedding ignores.
IGNORED = rope_bert.IGNORED + ("classifier.*",)

HUB = rope_bert.Layout(
    layer="encoder.layer.{i}", qkv=("attention.qkv_proj",), out="attention.o_proj", attn_norm="attn_ln",
    mlp_norm="mlp_ln", gate_up=("mlp.up_gate_proj",), gate_first=False, down="mlp.down_proj",
    emb_norm="embeddings.LayerNorm",
)


def encoder(w: Weights, cfg: dict) -> Encoder:
    rope_bert.refuse(cfg, "GTE", {
        f"position_embedding_type `{cfg.get('position_embedding_type')}`":
            cfg.get("position_embedding_type", "rope") != "rope",
        "logn_attention_scale": bool(cfg.get("logn_attention_scale")),
        f"layer_norm_type `{cfg.get('layer_norm_type')}`": cfg.get("layer_norm_type", "layer_norm") != "layer_norm",
    })
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    # The hub's `rope_scaling: {type: ntk}` is static NTK, applied at every length.
    rotary = Rotary(hidden // heads, rope_parameters(cfg, default_theta=160000.0),
                    max_positions=int(cfg.get("max_position_embeddings", 8192)))
    return rope_bert.build(
        w, cfg, rope_bert.layout(w, HUB), heads=heads, layers=int(cfg["num_hidden_layers"]), hidden=hidden,
        eps=float(cfg.get("layer_norm_eps", 1e-12)), activation=cfg.get("hidden_act", "gelu"), gated=True,
        rotary=rotary,
    )


def classifier(w: Weights, cfg: dict) -> nn.Module:
    """NewForSequenceClassification / GteForSequenceClassification: pooler (dense + tanh on [CLS]),
    then the classifier."""
    return BertClassifierHead(w)

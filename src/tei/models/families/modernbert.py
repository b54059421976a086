"""ModernBERT: a pre-norm encoder with rotary positions, GeGLU MLPs and bias-free LayerNorms, whose
layers alternate between full attention and a local window (architectures.md §6).

Layer i is global ("full_attention") every `global_attn_every_n_layers` layers, else local
("sliding_attention"): token i then sees tokens j of its own sequence with |i − j| <= local_attention // 2,
and the rotary base is the local one. transformers 5 writes the same facts as `layer_types` and
`rope_parameters` keyed by layer type; both forms are read.
"""
from __future__ import annotations

import torch
from torch import nn

from ..layers import (
    Encoder, GatedMLP, LayerNorm, PreNormLayer, Rotary, SelfAttention, TokenEmbeddings, check_activation, linear,
    rope_parameters,
)
from ..weights import Weights

PREFIXES = ("model",)
# The masked-LM head (ModernBertForMaskedLM, e.g. answerdotai/ModernBERT-base) is unused by embeddings.
IGNORED = ("head.*", "decoder.*")
LAYER_TYPES = ("full_attention", "sliding_attention")
# transformers' ModernBertConfig defaults, for legacy configs that leave a base out
_DEFAULT_THETA = {"full_attention": ("global_rope_theta", 160000.0), "sliding_attention": ("local_rope_theta", 10000.0)}


def layer_types(cfg: dict) -> list[str]:
    types = cfg.get("layer_types")
    n = cfg["num_hidden_layers"]
    if types is None:
        every = int(cfg.get("global_attn_every_n_layers", 3))
        types = ["sliding_attention" if i % every else "full_attention" for i in range(n)]
    unknown = sorted(set(types) - set(LAYER_TYPES))
    if unknown or len(types) != n:
        raise ValueError(f"ModernBERT `layer_types` {types} is not supported: {n} entries of {', '.join(LAYER_TYPES)}.")
    return list(types)


def _rotary(cfg: dict, layer_type: str, head_dim: int) -> Rotary:
    key, default = _DEFAULT_THETA[layer_type]
    legacy = dict(cfg)
    if legacy.get(key) is None:
        legacy[key] = default
    params = rope_parameters(legacy, layer_type, theta_key=key, default_theta=default)
    return Rotary(head_dim, params, int(cfg.get("max_position_embeddings", 8192)))


def _norm(w: Weights, prefix: str, cfg: dict) -> LayerNorm:
    bias = w.get(f"{prefix}.bias") if cfg.get("norm_bias", False) else None
    return LayerNorm(w.get(f"{prefix}.weight"), bias, float(cfg.get("norm_eps", 1e-5)))


def encoder(w: Weights, cfg: dict) -> Encoder:
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    head_dim = hidden // heads
    attn_bias, mlp_bias = bool(cfg.get("attention_bias", False)), bool(cfg.get("mlp_bias", False))
    act = check_activation(cfg.get("hidden_activation", "gelu"))
    half = int(cfg.get("local_attention", 128)) // 2
    rotary = {t: _rotary(cfg, t, head_dim) for t in LAYER_TYPES}
    embeddings = TokenEmbeddings(w.get("embeddings.tok_embeddings.weight"), norm=_norm(w, "embeddings.norm", cfg))
    layers = []
    for i, kind in enumerate(layer_types(cfg)):
        p = f"layers.{i}"
        attn = SelfAttention(
            linear(w, f"{p}.attn.Wqkv", bias=attn_bias), linear(w, f"{p}.attn.Wo", bias=attn_bias), heads,
            rotary=rotary[kind], window=(half, half) if kind == "sliding_attention" else None,
        )
        # Wi holds [input, gate]: the first half goes through the activation
        mlp = GatedMLP(linear(w, f"{p}.mlp.Wi", bias=mlp_bias), linear(w, f"{p}.mlp.Wo", bias=mlp_bias), act,
                       gate_first=True)
        attn_norm = None if i == 0 else _norm(w, f"{p}.attn_norm", cfg)  # layer 0 has none (nn.Identity)
        layers.append(PreNormLayer(attn_norm, attn, _norm(w, f"{p}.mlp_norm", cfg), mlp))
    return Encoder(embeddings, layers, hidden, final_norm=_norm(w, "final_norm", cfg))


class ModernBertClassifierHead(nn.Module):
    """`ModernBertForSequenceClassification`: pool (CLS or mean, per `classifier_pooling`: CLS sees only
    its window in local layers, so rerankers such as gte-reranker-modernbert-base pool by mean), then
    dense + activation + bias-free LayerNorm, then the classifier."""

    def __init__(self, w: Weights, cfg: dict):
        super().__init__()
        self.pooling = cfg.get("classifier_pooling", "cls")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"ModernBERT `classifier_pooling` `{self.pooling}` is not supported: cls or mean.")
        act = check_activation(cfg.get("classifier_activation", "gelu"))
        self.dense = linear(w, "head.dense", act, bias=bool(cfg.get("classifier_bias", False)))
        self.norm = _norm(w, "head.norm", cfg)
        self.classifier = linear(w, "classifier")

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(self.dense(pooled)))


def classifier(w: Weights, cfg: dict) -> nn.Module:
    return ModernBertClassifierHead(w, cfg)


def mlm_head(w: Weights, cfg: dict):
    raise ValueError("SPLADE pooling is not supported for ModernBERT models yet: serve it as an embedding model.")

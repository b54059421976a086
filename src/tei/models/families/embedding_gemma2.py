"""EmbeddingGemma 2 (`embedding_gemma2`, and its text model `embedding_gemma2_text`; transformers ≥ 5.2x,
models/embedding_gemma2): a Gemma 4-style bidirectional encoder. Only its text path is served; a
checkpoint's vision and audio towers are left unread.

What differs from Gemma3 text (families/gemma3.py), all read from the config:
- plain `x · w` RMSNorms (not `1 + w`), and a v norm without weight next to the q/k norms;
- attention scores unscaled (scale 1: the q/k norms set their size);
- layers that differ from the global config (`per_layer_config`: the full-attention layers are
  wider, with their own head size and k/v heads), each rotary table built for its layer type's head size;
- per-layer embeddings (PLE): one projection of the scaled token embeddings, normed per layer slice,
  gates a third residual block after the MLP in every layer;
- a learned `layer_scalar` per layer, and `embedding_projection` after the final norm, per token
  (sentence-transformers mean-pools its output).

Sliding layers see |i − j| <= sliding_window: the config holds the radius of its symmetric window.
"""
from __future__ import annotations

import torch
from torch import nn

from ..batch import PackedBatch
from ..layers import Encoder, GatedMLP, Linear, RMSNorm, Rotary, SandwichLayer, SelfAttention, TokenEmbeddings
from ..layers import fused_linear, linear, rope_parameters
from ..weights import Weights
from .gemma3 import layer_types as _gemma_layer_types

# The text model alone, or nested in the composite model (`language_model.`, under `model.` when a
# task model saved it).
PREFIXES = ("language_model", "model.language_model", "model")
IGNORED = ("vision_tower.*", "embed_vision.*", "audio_tower.*", "embed_audio.*", "*rotary_emb.*")
# Keys a layer may override in `per_layer_config` (what transformers' model reads per layer); `skip` (a
# layer without attention or MLP) and the rest are refused rather than silently ignored.
LAYER_KEYS = ("head_dim", "num_key_value_heads", "intermediate_size")


def text_config(config: dict) -> dict:
    """The text model's config: nested under `text_config` in the composite model's config.json."""
    nested = config.get("text_config")
    return nested if isinstance(nested, dict) else config


def layer_configs(cfg: dict) -> list[dict]:
    """Each layer's config: the global one with that layer's `per_layer_config` overrides (keys are
    layer indices, zero-padded when transformers writes them)."""
    overrides = {int(k): v for k, v in (cfg.get("per_layer_config") or {}).items()}
    for i, layer in overrides.items():
        unknown = sorted(set(layer) - set(LAYER_KEYS))
        if unknown:
            raise ValueError(f"embedding_gemma2 `per_layer_config` of layer {i} sets {', '.join(unknown)}: "
                             f"only {', '.join(LAYER_KEYS)} are supported")
    return [{**cfg, **overrides.get(i, {})} for i in range(cfg["num_hidden_layers"])]


def layer_types(cfg: dict) -> list[str]:
    types = _gemma_layer_types(cfg)
    return types[:-1] + ["full_attention"]  # transformers forces the last layer global


class PleLayer(nn.Module):
    """Gemma's four-norm block, then the per-layer-embedding block, then the layer's scalar:
    x = block(x); x = x + norm(up(act(gate(x)) · ple_i)); x = x · scalar."""

    def __init__(self, block: SandwichLayer, gate: Linear, up: Linear, norm: RMSNorm, scalar: torch.Tensor):
        super().__init__()
        self.block, self.gate, self.up, self.norm = block, gate, up, norm
        self.register_buffer("scalar", scalar, persistent=False)

    def forward(self, x: torch.Tensor, plan, per_layer: torch.Tensor | None = None) -> torch.Tensor:
        x = self.block(x, plan)
        if per_layer is None:  # the loader's kernel warm-up calls a layer alone: same shapes, same kernels
            per_layer = x.new_zeros(x.shape[0], self.gate.out_features)
        x = x + self.norm(self.up(self.gate(x) * per_layer))
        return x * self.scalar


class PleEncoder(Encoder):
    """The Encoder contract, with each layer given its slice of the per-layer embeddings, and the
    states projected to `output_size` at the end."""

    def __init__(self, embeddings: nn.Module, layers: list[PleLayer], hidden_size: int, final_norm: RMSNorm,
                 ple_projection: Linear, ple_norm: RMSNorm, projection: Linear):
        super().__init__(embeddings, layers, hidden_size, final_norm=final_norm)
        self.ple_projection, self.ple_norm, self.projection = ple_projection, ple_norm, projection
        self.ple_scale = hidden_size ** -0.5
        self.output_size = projection.out_features

    def forward(self, batch: PackedBatch, plan) -> torch.Tensor:
        x = self.embed(batch)
        per_layer = self.ple_projection(x) * self.ple_scale
        per_layer = self.ple_norm(per_layer.view(x.shape[0], len(self.layers), -1))  # [T, layers, P]
        for i, layer in enumerate(self.layers):
            x = layer(x, plan, per_layer[:, i])
        return self.projection(self.final_norm(x))


def _norm(w: Weights, name: str, eps: float) -> RMSNorm:
    return RMSNorm(w.get(name), eps)


def _layer(w: Weights, i: int, cfg: dict, kind: str, rotary: Rotary) -> PleLayer:
    p, a, m = f"layers.{i}", f"layers.{i}.self_attn", f"layers.{i}.mlp"
    eps = cfg.get("rms_norm_eps", 1e-6)
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // heads)
    bias = bool(cfg.get("attention_bias"))
    size = int(cfg.get("sliding_window") or 0)  # a radius: |i - j| <= size
    if kind == "sliding_attention" and not size:
        raise ValueError("config.json has sliding-attention layers but no `sliding_window`")
    attn = SelfAttention(
        fused_linear(w, [f"{a}.{n}" for n in ("q_proj", "k_proj", "v_proj")], bias=bias),
        linear(w, f"{a}.o_proj", bias=bias), heads, kv_heads, head_dim,
        q_norm=_norm(w, f"{a}.q_norm.weight", eps), k_norm=_norm(w, f"{a}.k_norm.weight", eps),
        v_norm=RMSNorm(torch.ones(head_dim, device=w.device), eps), rotary=rotary,
        window=(size, size) if kind == "sliding_attention" else None, scale=1.0,
    )
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    mlp = GatedMLP(fused_linear(w, [f"{m}.gate_proj", f"{m}.up_proj"], bias=False),
                   linear(w, f"{m}.down_proj", bias=False), act)
    block = SandwichLayer(
        _norm(w, f"{p}.input_layernorm.weight", eps), attn, _norm(w, f"{p}.post_attention_layernorm.weight", eps),
        _norm(w, f"{p}.pre_feedforward_layernorm.weight", eps), mlp,
        _norm(w, f"{p}.post_feedforward_layernorm.weight", eps),
    )
    ple = f"{p}.ple_block"
    return PleLayer(block, linear(w, f"{ple}.per_layer_input_gate", activation=act, bias=False),
                    linear(w, f"{ple}.per_layer_projection", bias=False),
                    _norm(w, f"{ple}.post_per_layer_input_norm.weight", eps), w.get(f"{p}.layer_scalar"))


def encoder(w: Weights, config: dict) -> PleEncoder:
    cfg = text_config(config)
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if cfg.get(key):
            raise ValueError(f"`{key}` is not supported for embedding_gemma2 models")
    types = layer_types(cfg)
    configs = layer_configs(cfg)
    rotaries: dict = {}
    layers = []
    for i, (kind, layer_cfg) in enumerate(zip(types, configs)):
        head_dim = int(layer_cfg.get("head_dim") or layer_cfg["hidden_size"] // layer_cfg["num_attention_heads"])
        params = rope_parameters(cfg, kind, default_theta=1e6 if kind == "full_attention" else 10000.0)
        key = (head_dim, tuple(sorted((k, str(v)) for k, v in params.items())))
        if key not in rotaries:  # one table per head size and rope: every layer of a kind shares it
            rotaries[key] = Rotary(head_dim, params, int(cfg.get("max_position_embeddings", 2048)))
        layers.append(_layer(w, i, layer_cfg, kind, rotaries[key]))
    eps = cfg.get("rms_norm_eps", 1e-6)
    hidden = cfg["hidden_size"]
    return PleEncoder(
        TokenEmbeddings(w.get("embed_tokens.weight"), scale=hidden ** 0.5), layers, hidden,
        final_norm=_norm(w, "norm.weight", eps),
        ple_projection=linear(w, "ple.per_layer_model_projection", bias=False),
        ple_norm=_norm(w, "ple.per_layer_projection_norm.weight", eps),
        projection=linear(w, "embedding_projection", bias=False),
    )
